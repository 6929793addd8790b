"""A local S3-compatible server for the artifact bucket's tests: moto's, on a loopback port,
with a bucket made in it and the AWS SDK's settings pointed at it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

#: the settings the AWS SDK reads, for a server that takes any credentials (none of them real);
#: with the metadata service off, the SDK never looks for credentials off this machine
SDK_ENV = {
    "AWS_ACCESS_KEY_ID": "local-test-key",
    "AWS_SECRET_ACCESS_KEY": "local-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    name: str

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, by key."""
        client = boto3.client("s3", endpoint_url=self.endpoint)
        listed = client.list_objects_v2(Bucket=self.name).get("Contents", [])
        return {
            item["Key"]: client.get_object(Bucket=self.name, Key=item["Key"])["Body"].read()
            for item in listed
        }

    def toml(self, prefix: str = "") -> str:
        """The agent.toml section that keeps artifacts here."""
        return (
            f'[artifacts]\nbucket = "{self.name}"\nprefix = "{prefix}"\n'
            f'endpoint_url = "{self.endpoint}"\n'
        )


@contextmanager
def sdk_s3_server() -> Iterator[str]:
    """`s3_server`, with the AWS SDK's settings (SDK_ENV) in this process's environment."""
    with pytest.MonkeyPatch.context() as sdk:
        for name, value in SDK_ENV.items():
            sdk.setenv(name, value)
        with s3_server() as url:
            yield url


@contextmanager
def s3_server() -> Iterator[str]:
    """An S3-compatible server on a free loopback port; its endpoint URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def make_bucket(endpoint: str, name: str) -> Bucket:
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return Bucket(endpoint, name)
