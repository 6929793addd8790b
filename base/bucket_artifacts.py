"""Artifacts in an S3-compatible bucket, for workers on many machines (`[artifacts] bucket`).

A task's artifact NAME is the object `PREFIX/TASK/NAME`. A put is whole or not at all, as the
protocol asks. Credentials come from where the AWS SDK finds them (its environment variables,
its shared files, a role); the endpoint of a store that is not AWS's is `endpoint_url`.

Failures are mapped here, once: a bucket that does not exist, or credentials that are missing or
refused, are a `ConfigError` saying which; a store that cannot be reached or answers with a
server error is a retryable `StoreError`. The SDK's own retries (its standard mode) come first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from base.artifacts import Artifacts, check_name
from base.errors import ConfigError, ErrorCode, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: what the bucket's settings name (as `[artifacts]` in agent.toml gives them)
INSTALL = "pip install 'agent-runtime[s3]'"


class BucketArtifacts:
    """One task's artifacts, as objects under `prefix` in `bucket`."""

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def keep(self, name: str, data: bytes) -> str:
        key = self._key(name)
        with self._mapped():
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def read(self, name: str) -> bytes:
        key = self._key(name)
        with self._mapped(missing=name):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            return answer["Body"].read()

    def names(self) -> list[str]:
        found: list[str] = []
        with self._mapped():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                found += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return sorted(n for n in found if n and "/" not in n and not n.startswith("."))

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    @contextlib.contextmanager
    def _mapped(self, *, missing: str | None = None) -> Iterator[None]:
        """The SDK's failures as the program's own (see the module's docstring)."""
        from botocore.exceptions import (  # noqa: PLC0415 - the SDK is an optional extra
            BotoCoreError,
            ClientError,
            NoCredentialsError,
        )

        where = f"the artifact bucket {self.bucket!r}"
        try:
            yield
        except NoCredentialsError:
            raise ConfigError(
                f"no credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) for the runner and its workers"
            ) from None
        except ClientError as exc:
            error: dict[str, Any] = dict(exc.response.get("Error", {}))
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in ("NoSuchKey", "404") and missing is not None:
                raise KeyError(missing) from None
            if code == "NoSuchBucket":
                raise ConfigError(f"{where} does not exist ([artifacts] bucket)") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"{where} refused these credentials ({code})") from None
            raise StoreError(
                f"{where} answered {status} {code}: {error.get('Message', '')}",
                code=ErrorCode.STORE_ERROR,
                retryable=status >= 500 or code in ("SlowDown", "RequestTimeout"),
            ) from None
        except BotoCoreError as exc:  # the endpoint cannot be reached, a read was cut short
            raise StoreError(f"{where} cannot be reached: {exc}", retryable=True) from None


def bucket_artifacts(
    bucket: str, *, prefix: str = "", endpoint_url: str | None = None, region: str | None = None
) -> Artifacts:
    """Each task's artifacts in `bucket` (under `prefix`). Raises `ConfigError` when the AWS
    SDK is not installed. Makes no request until an artifact is kept or read."""
    try:
        import boto3  # noqa: PLC0415 - an optional extra
        from botocore.config import Config  # noqa: PLC0415
    except ImportError:
        raise ConfigError(f"[artifacts] bucket needs the AWS SDK: {INSTALL}") from None
    # A session of its own: credentials are looked for now, not taken from another's cache.
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        config=Config(
            retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10, read_timeout=60
        ),
    )
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return lambda task_id: BucketArtifacts(client, bucket, f"{base}{task_id}/")
