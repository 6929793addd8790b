"""Artifacts in an S3-compatible bucket ([artifacts] bucket), against a real S3-compatible
server on loopback: the artifact store's contract, a task whose file and long output are kept
in the bucket and read back by the model, and the clear errors of a bucket that cannot be used."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.config import load_config
from agent.store import Store
from base.bucket_artifacts import bucket_artifacts
from base.errors import ConfigError, StoreError
from frontends.cli import main

from .bucket import SDK_ENV, Bucket, make_bucket, sdk_s3_server
from .conftest import REPO, tool_results, write_script

ENGINE_TOOLS = str(REPO / "tests" / "engine_tools.py")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with sdk_s3_server() as url:
        yield url


@pytest.fixture
def bucket(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Bucket:
    for name, value in SDK_ENV.items():
        monkeypatch.setenv(name, value)
    return make_bucket(
        endpoint, f"kept-{hashlib.sha256(request.node.name.encode()).hexdigest()[:10]}"
    )


def test_a_bucket_keeps_each_task_s_artifacts_apart_whole_and_by_name(bucket: Bucket) -> None:
    tasks = bucket_artifacts(bucket.name, prefix="/team/", endpoint_url=bucket.endpoint)
    first, second = tasks("t1"), tasks("t2")
    where = first.keep("notes.txt", b"first")
    assert where == f"s3://{bucket.name}/team/t1/notes.txt"
    first.keep("notes.txt", b"first, again")  # in place of the one of that name
    first.keep("output-1.txt", b"x" * 300_000)
    second.keep("notes.txt", b"second")
    assert first.read("notes.txt") == b"first, again"
    assert first.names() == ["notes.txt", "output-1.txt"]
    assert second.names() == ["notes.txt"]
    assert len(first.read("output-1.txt")) == 300_000
    with pytest.raises(KeyError):
        second.read("output-1.txt")
    for bad in ("../t2/notes.txt", ".hidden", ""):
        with pytest.raises(ValueError, match="is not an artifact name"):
            first.keep(bad, b"no")
    assert sorted(bucket.objects()) == [
        "team/t1/notes.txt",
        "team/t1/output-1.txt",
        "team/t2/notes.txt",
    ]


def test_a_task_s_file_and_long_output_are_kept_in_the_bucket_and_read_back(
    home: Path, tmp_path: Path, bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 50_000
    line = "0123456789abcdef" * 4 + "\n"
    output = (line * (size // len(line) + 1))[:size]
    kept_as = f"output-{hashlib.sha256(output.encode()).hexdigest()[:12]}.txt"
    script = write_script(
        tmp_path / "turns.json",
        [
            {"plan": ["produce it, then read its end"]},
            {"tool": "produce", "args": {"size": size}},
            {"tool": "read_artifact", "args": {"name": kept_as, "offset": size - 65, "length": 65}},
            {"done": "read it"},
        ],
    )
    config = tmp_path / "agent.toml"
    config.write_text(bucket.toml(prefix="runs"))
    brief = tmp_path / "brief.txt"
    brief.write_text("produce 50,000 characters")
    argv = ["run", "--json", "--config", str(config), "--tools", ENGINE_TOOLS]
    argv += ["--model", f"scripted:{script}", "--file", str(brief), "do as the brief says"]
    assert main(argv) == 0, capsys.readouterr().err
    task_id = json.loads(capsys.readouterr().out)["task_id"]

    objects = bucket.objects()
    assert objects[f"runs/{task_id}/brief.txt"] == b"produce 50,000 characters"
    assert objects[f"runs/{task_id}/{kept_as}"] == output.encode()
    assert not (home / "artifacts").exists()  # nothing beside the store
    with Store.open(home / "events.db") as store:
        produced, read = tool_results(store, task_id)
    assert produced.artifact == kept_as
    assert len(produced.content) < size
    assert read.ok
    # The end of the output, read back from the bucket.
    assert f"[{kept_as}, characters 49,935-50,000 of 50,000]" in read.content
    assert output[-65:] in read.content


def test_a_bucket_that_cannot_be_used_is_said_plainly(
    home: Path, tmp_path: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SDK_ENV.items():
        monkeypatch.setenv(name, value)
    missing = bucket_artifacts("no-such-bucket", endpoint_url=endpoint)("t1")
    with pytest.raises(ConfigError, match="the artifact bucket 'no-such-bucket' does not exist"):
        missing.keep("notes.txt", b"lost?")

    # No credentials anywhere the SDK looks (and it looks nowhere off this machine).
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    nobody = bucket_artifacts("any-bucket", endpoint_url=endpoint)("t1")
    with pytest.raises(ConfigError, match="no credentials for the artifact bucket 'any-bucket'"):
        nobody.names()

    # A store that does not answer: retryable, and saying where.
    with _closed_port() as port:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        gone = bucket_artifacts("any-bucket", endpoint_url=f"http://127.0.0.1:{port}")("t1")
        with pytest.raises(StoreError, match="cannot be reached") as unreachable:
            gone.read("notes.txt")
    assert unreachable.value.retryable


def test_a_bad_artifacts_section_is_refused_at_load(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[artifacts]\nbucket = "Not A Bucket"\n')
    with pytest.raises(ConfigError, match="bucket"):
        load_config(config)
    config.write_text('[artifacts]\nbucket = "kept"\nendpoint_url = "minio:9000"\n')
    with pytest.raises(ConfigError, match="endpoint_url"):
        load_config(config)


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port held, with nothing listening on it: a connection there is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_doctor_says_whether_the_bucket_answers(
    home: Path, tmp_path: Path, bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(bucket.toml())
    main(["doctor", "--json", "--config", str(config)])
    [check] = [c for c in json.loads(capsys.readouterr().out) if c["name"] == "artifacts"]
    assert check["ok"], check
    assert check["detail"] == f"bucket {bucket.name} at {bucket.endpoint} answers"
    config.write_text(bucket.toml().replace(bucket.name, "not-made-yet"))
    main(["doctor", "--json", "--config", str(config)])
    [check] = [c for c in json.loads(capsys.readouterr().out) if c["name"] == "artifacts"]
    assert not check["ok"]
    assert "the artifact bucket 'not-made-yet' does not exist" in check["detail"]
