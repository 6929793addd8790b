"""`agent doctor`'s model check makes a real request, on the wire, and fails with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.cli import main

from .test_anthropic_backend import error_body, message
from .wire_server import Reply, WireServer


def model_checks(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    main(["doctor", "--json"])
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)}


@pytest.fixture
def anthropic(home: Path, monkeypatch: pytest.MonkeyPatch) -> WireServer:
    server = WireServer()
    server.start()
    monkeypatch.setenv("AGENT_MODEL", "anthropic:claude-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    return server


def test_a_hosted_model_is_asked_for_real_and_timed(
    anthropic: WireServer, capsys: pytest.CaptureFixture[str]
) -> None:
    anthropic.reply(message([{"type": "text", "text": "OK"}]))
    try:
        checks = model_checks(capsys)
    finally:
        anthropic.stop()
    [sent] = anthropic.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert checks["self-test"]["ok"], checks["self-test"]
    assert "answered in" in str(checks["self-test"]["detail"])


def test_a_key_the_provider_refuses_fails_the_check_naming_why(
    anthropic: WireServer, capsys: pytest.CaptureFixture[str]
) -> None:
    anthropic.reply(Reply(status=401, body=error_body("authentication_error", "bad key")))
    try:
        checks = model_checks(capsys)
    finally:
        anthropic.stop()
    test = checks["self-test"]
    assert not test["ok"]
    assert "401" in str(test["detail"])
    assert "bad key" in str(test["detail"])
    assert "API key" in str(test["fix"])


def test_a_projector_that_is_not_there_fails_the_check_naming_where_to_fix_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "mmproj.gguf"
    home.mkdir(parents=True, exist_ok=True)
    (home / "agent.toml").write_text(f'[model.local]\nmmproj = "{missing}"\n')
    checks = model_checks(capsys)
    model = checks["model"]
    assert not model["ok"]
    assert str(missing) in str(model["detail"])
    assert "[model.local] mmproj" in str(model["detail"])
    assert "the setting the error names" in str(model["fix"])


def test_a_file_that_is_no_projector_fails_the_self_test_naming_where_to_fix_it(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "mmproj.gguf"
    fake.write_bytes(b"GGUF but not really" * 100)
    home.mkdir(parents=True, exist_ok=True)
    (home / "agent.toml").write_text(f'[model.local]\nmmproj = "{fake}"\n')
    checks = model_checks(capsys)
    failed = [c for c in checks.values() if not c["ok"]]
    assert any(str(fake) in str(c["detail"]) for c in failed), checks
    assert any("[model.local] in agent.toml: path" in str(c["fix"]) for c in failed), checks
    assert any("mmproj for its projector" in str(c["fix"]) for c in failed), checks
