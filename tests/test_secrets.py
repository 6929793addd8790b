"""Secrets without Docker: the file and its checks, placeholders filled only for a secret's
hosts, the redactor's forms, `agent secrets`, and the gate's default for the HTTP tool."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import urllib.parse
from pathlib import Path

import keyring
import keyring.backend
import pytest
from jaraco.classes.properties import classproperty

from base.errors import ConfigError
from frontends.cli import main
from policies import Gate
from tools._redact import LiveText, Redactor, forms
from tools.http import http_request
from tools.secrets import KEYRING_SERVICE, Secret, SecretRefused, Secrets, read_file, uses

CANARY = "cAnArY-7f3e9b1d-Secret"


def test_every_form_of_a_value_is_taken_out_and_nothing_else() -> None:
    redact = Redactor({"CANARY": CANARY})
    raw = CANARY.encode()
    basic = base64.b64encode(b"user:" + raw).decode()  # a Basic header: the value mid-string
    echoed = [
        CANARY,
        urllib.parse.quote(f"x={CANARY}&y=1"),
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(b"ab" + raw).decode(),
        basic,
        f'{{"token": "{CANARY}"}}',
    ]
    for text in echoed:
        redacted = redact.text(f"before {text} after")
        assert "[secret:CANARY]" in redacted, text
        assert not any(form in redacted for form in forms(CANARY)), text
        assert redact.data(f"<{text}>".encode()).count(b"[secret:CANARY]") == 1
    # The control: text without the value is left as it is.
    assert redact.text("nothing secret here, user:abc") == "nothing secret here, user:abc"
    assert not Redactor({})
    assert Redactor({}).text(CANARY) == CANARY


def test_a_placeholder_is_filled_only_for_the_secret_s_hosts() -> None:
    secrets = Secrets(
        {
            "CANARY": Secret("CANARY", ("api.example.com", "*.corp.test:8443"), "file", CANARY),
            "UNSET": Secret("UNSET", ("api.example.com",), "env:X", None, "$X is not set"),
        }
    )
    asked = {"headers": {"Authorization": "Bearer {{secret:CANARY}}"}, "n": 3}
    assert uses(asked) == {"CANARY"}
    filled = secrets.fill(asked, "api.example.com", 443)
    assert filled == {"headers": {"Authorization": f"Bearer {CANARY}"}, "n": 3}
    assert secrets.fill("{{secret:CANARY}}", "db.corp.test", 8443) == CANARY
    for host, port, said in [
        ("evil.example", 443, "may be sent only to api.example.com, *.corp.test:8443"),
        ("db.corp.test", 443, "not to db.corp.test:443"),
        ("api.example.com.evil.example", 443, "not to api.example.com.evil.example:443"),
    ]:
        with pytest.raises(SecretRefused, match=re.escape(said)) as refused:
            secrets.fill(asked, host, port)
        assert refused.value.code == "secret_out_of_scope"
    with pytest.raises(SecretRefused, match=r"no secret is named NOPE \(the secrets: CANARY"):
        secrets.fill("{{secret:NOPE}}", "api.example.com", 443)
    with pytest.raises(SecretRefused, match=r"UNSET has no value here: \$X is not set"):
        secrets.fill("{{secret:UNSET}}", "api.example.com", 443)


def _file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_file_is_refused_when_others_may_read_it_or_it_is_wrong(tmp_path: Path) -> None:
    good = '[CANARY]\nhosts = ["api.example.com"]\nvalue = "' + CANARY + '"\n'
    path = _file(tmp_path / "secrets.toml", good, 0o644)
    with pytest.raises(ConfigError, match=r"others may read or write it \(mode 0644\)"):
        Secrets.load(path)
    path.chmod(0o600)
    [secret] = Secrets.load(path)
    assert (secret.name, secret.hosts, secret.source) == ("CANARY", ("api.example.com",), "file")
    assert CANARY not in repr(secret)
    for text, said in [
        ('[A]\nhosts = ["x.test"]\n', "give exactly one of value, env or keyring"),
        ('[A]\nhosts = ["x.test"]\nvalue = "short"\n', "at least 8 characters"),
        ('[A]\nhosts = ["https://x.test/"]\nvalue = "' + CANARY + '"\n', "not a URL"),
        ('[A]\nhosts = ["x.test"]\nenv = "X"\nvalue = "' + CANARY + '"\n', "exactly one"),
        ("[A]\nhosts = [\n", "Invalid value"),
        ("[A]\nhosts = 1 2\n", "line 2"),
        ('[bad-name]\nhosts = ["x.test"]\nenv = "X"\n', "is not a secret's name"),
        ('[A]\nhosts = ["x.test"]\nenv = "X"\ncolour = 1\n', "colour"),
    ]:
        with pytest.raises(ConfigError, match=said):
            Secrets.load(_file(tmp_path / "secrets.toml", text))
    assert read_file(tmp_path / "none.toml") == {}


def test_a_secret_from_the_environment_says_when_it_has_no_value(tmp_path: Path) -> None:
    path = _file(tmp_path / "s.toml", '[GH]\nhosts = ["api.github.test"]\nenv = "GH_TOKEN"\n')
    [unset] = Secrets.load(path, environ={})
    assert unset.missing == "its variable $GH_TOKEN is not set in the runner's environment"
    [found] = Secrets.load(path, environ={"GH_TOKEN": CANARY})
    assert (found.value, found.source, found.missing) == (CANARY, "env:GH_TOKEN", None)


def test_agent_secrets_sets_lists_and_removes_without_showing_a_value(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AGENT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    read, write = os.pipe()
    os.write(write, f"{CANARY}\n".encode())
    os.close(write)
    monkeypatch.setattr("sys.stdin", os.fdopen(read))
    assert main(["secrets", "set", "CANARY", "--host", "api.example.com"]) == 0
    path = tmp_path / "secrets.toml"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert main(["secrets", "set", "GH", "--host", "api.github.test", "--env", "GH_TOKEN"]) == 0
    capsys.readouterr()
    assert main(["secrets", "list"]) == 0
    listed = capsys.readouterr().out
    assert "CANARY  api.example.com  (file)" in listed
    assert "GH  api.github.test  (env:GH_TOKEN)" in listed
    assert CANARY not in listed
    # The doctor names a secret with no value here.
    monkeypatch.delenv("GH_TOKEN", raising=False)
    main(["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert not checks["secrets"]["ok"]
    assert "GH: its variable $GH_TOKEN is not set" in checks["secrets"]["detail"]
    assert main(["secrets", "remove", "GH"]) == 0
    assert main(["secrets", "remove", "GH"]) == 1
    assert "no secret is named GH" in capsys.readouterr().err
    assert main(["secrets", "set", "X", "--host", "https://x.test/"]) == 2
    assert "--host: not an allowlist entry" in capsys.readouterr().err
    assert [s.name for s in Secrets.load(path)] == ["CANARY"]


def test_the_default_policy_lets_http_reads_through_and_asks_for_the_rest() -> None:
    gate = Gate.default()
    for method, decision in [
        ("GET", "Allow"),
        ("HEAD", "Allow"),
        ("POST", "RequireApproval"),
        ("DELETE", "RequireApproval"),
    ]:
        arguments = http_request.parse({"url": "https://api.example.com/x", "method": method})
        assert type(gate.evaluate(http_request, arguments)).__name__ == decision, method
    metadata = http_request.parse({"url": "http://169.254.169.254/latest/meta-data/"})
    assert type(gate.evaluate(http_request, metadata)).__name__ == "Deny"


def test_live_output_finds_a_value_split_between_two_pieces() -> None:
    live = LiveText(Redactor({"CANARY": CANARY}))
    half = len(CANARY) // 2
    shown = live.feed("stdout", f"token: {CANARY[:half]}") + live.feed("stdout", CANARY[half:])
    shown += "".join(text for _, text in live.flush())
    assert shown == "token: [secret:CANARY]"
    assert live.flush() == []
    # With no secrets, nothing is held back.
    assert LiveText(Redactor({})).feed("stdout", "abc") == "abc"


def test_a_value_may_go_base64_encoded_and_in_clear_text_only_to_a_named_port() -> None:
    secret = Secret("CANARY", ("api.example.com", "plain.example:8080"), "file", CANARY)
    secrets = Secrets({"CANARY": secret})
    basic = secrets.fill("Basic {{secret:CANARY:base64}}", "api.example.com", 443)
    assert basic == "Basic " + base64.b64encode(CANARY.encode()).decode()
    assert uses("{{secret:CANARY:base64}}") == {"CANARY"}
    assert secrets.fill("{{secret:CANARY}}", "plain.example", 8080) == CANARY
    with pytest.raises(SecretRefused, match=r"not to api\.example\.com:80"):
        secrets.fill("{{secret:CANARY}}", "api.example.com", 80)  # HTTPS only, without a port


class _MemoryKeyring(keyring.backend.KeyringBackend):
    """An OS keyring held in memory: the seam the keyring package gives for this. Never chosen
    by the package itself (its priority cannot be read): only where a test sets it."""

    @classproperty
    def priority(cls) -> float:
        raise RuntimeError("a keyring for tests only")

    kept: dict[tuple[str, str], str]

    def get_password(self, service: str, username: str) -> str | None:
        return self.kept.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.kept[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.kept.pop((service, username), None)


def test_a_secret_kept_in_the_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENT_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    memory = _MemoryKeyring()  # type: ignore[no-untyped-call]
    memory.kept = {}
    before = keyring.get_keyring()
    keyring.set_keyring(memory)
    try:
        for value, code in ((CANARY, 0), ("short", 2)):
            monkeypatch.setattr("sys.stdin", io.StringIO(f"{value}\n"))
            assert main(["secrets", "set", "K", "--host", "x.test", "--keyring"]) == code
        assert "at least 8 characters" in capsys.readouterr().err
        assert memory.kept == {(KEYRING_SERVICE, "K"): CANARY}
        assert CANARY not in (tmp_path / "secrets.toml").read_text()
        [found] = Secrets.load(tmp_path / "secrets.toml")
        assert (found.source, found.value) == ("keyring", CANARY)
        memory.kept[(KEYRING_SERVICE, "K")] = "short"  # put there by another program
        [short] = Secrets.load(tmp_path / "secrets.toml")
        assert short.value is None
        assert "shorter than 8 characters" in str(short.missing)
        assert main(["secrets", "remove", "K"]) == 0
        assert memory.kept == {}
    finally:
        keyring.set_keyring(before)
