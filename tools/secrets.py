"""Named secrets the model never sees: it writes `{{secret:NAME}}` where a value goes, and a
tool puts the value in at its boundary, only for a host the secret is scoped to.

Secrets are declared in one file, `$AGENT_HOME/secrets.toml` (mode 0600; refused otherwise),
which `agent secrets set|list|remove` manages. Each names the hosts it may be sent to (entries
as a task's allowlist has them) and where its value is: in the file, in an environment variable
of the runner, or in the OS keyring::

    [GITHUB_TOKEN]
    hosts = ["api.github.com"]
    env = "GITHUB_TOKEN"           # or: value = "...", or: keyring = true

What a tool returns, prints or keeps passes `redactor()` first (see `tools/_redact.py`): a value
a server echoes back is replaced before the log, an artifact, the screen or the model sees it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from base.errors import ConfigError, ErrorCode
from sandbox._allowlist import ip_or_none, parse_entry
from tools._redact import Redactor

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: `{{secret:NAME}}`, or `{{secret:NAME:base64}}` for its value base64-encoded (a Basic header)
PLACEHOLDER = re.compile(r"\{\{secret:([A-Za-z_][A-Za-z0-9_]{0,63})(?::(base64))?\}\}")
#: shorter values would be found everywhere by the redactor, and hidden nowhere
SHORTEST = 8
KEYRING_SERVICE = "agent-runtime"
FILE_NAME = "secrets.toml"


class SecretRefused(Exception):
    """A placeholder that cannot be filled: no such secret, one with no value here, or a host
    it is not scoped to. The message says which, and what may be done; `code` keys it."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class _Declared(BaseModel):
    """One secret, as the file declares it."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[str] = Field(min_length=1)
    value: str | None = None
    env: str | None = None
    keyring: bool = False

    @field_validator("hosts")
    @classmethod
    def _entries(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            parse_entry(host)
        return hosts

    @model_validator(mode="after")
    def _one_source(self) -> _Declared:
        sources = [self.value is not None, self.env is not None, self.keyring]
        if sum(sources) != 1:
            raise ValueError("give exactly one of value, env or keyring = true")
        if self.value is not None and len(self.value) < SHORTEST:
            raise ValueError(f"a value must be at least {SHORTEST} characters")
        return self


@dataclass(frozen=True)
class Secret:
    name: str
    hosts: tuple[str, ...]
    #: where its value is: "file", "env:VARIABLE" or "keyring"
    source: str
    value: str | None = field(default=None, repr=False)
    #: why it has no value here (a variable that is not set, say); None when it has one
    missing: str | None = None

    def scoped_to(self, host: str, port: int) -> bool:
        """Whether it may be sent to `host`:`port`. An entry that names no port means 443 only
        (HTTPS): a secret goes in clear text only to a port its entry names."""
        host = host.lower().rstrip(".")
        address = ip_or_none(host)
        for entry in map(parse_entry, self.hosts):
            if entry.port is None and port != 443:
                continue
            if entry.matches(host, address, port):
                return True
        return False


class Secrets:
    """The secrets a runner may fill in, by name. Empty by default."""

    def __init__(self, secrets: Mapping[str, Secret] | None = None) -> None:
        self._secrets = dict(secrets or {})
        self._redactor = Redactor(
            {s.name: s.value for s in self._secrets.values() if s.value is not None}
        )

    @classmethod
    def load(cls, path: Path, environ: Mapping[str, str] | None = None) -> Secrets:
        """The secrets of the file at `path` (none if there is no file). Raises `ConfigError`
        for a file others may read, or one that is not as the module docstring says."""
        environ = os.environ if environ is None else environ
        declared = read_file(path)
        found: dict[str, Secret] = {}
        for name, entry in declared.items():
            hosts = tuple(entry.hosts)
            if entry.value is not None:
                found[name] = Secret(name, hosts, "file", entry.value)
            elif entry.env is not None:
                value = environ.get(entry.env)
                missing = None
                if not value:
                    missing = f"its variable ${entry.env} is not set in the runner's environment"
                elif len(value) < SHORTEST:
                    value, missing = None, f"${entry.env} is shorter than {SHORTEST} characters"
                found[name] = Secret(name, hosts, f"env:{entry.env}", value, missing)
            else:
                value, missing = _from_keyring(name)
                found[name] = Secret(name, hosts, "keyring", value, missing)
        return cls(found)

    def __iter__(self) -> Iterator[Secret]:
        return iter(sorted(self._secrets.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._secrets)

    def redactor(self) -> Redactor:
        """Takes every value these secrets have out of text and bytes."""
        return self._redactor

    def fill(
        self, value: Any, host: str, port: int, encode: Callable[[str], str] | None = None
    ) -> Any:
        """`value` (a string, or lists and dicts of them) with each `{{secret:NAME}}` replaced
        by the secret's value (passed through `encode`, if given: a URL's percent-encoding, say).
        Raises `SecretRefused` for a secret that is not there, has no value, or is not scoped
        to `host`:`port`."""
        if isinstance(value, str):

            def put(found: re.Match[str]) -> str:
                filled = self._value(found.group(1), host, port)
                if found.group(2) == "base64":
                    filled = base64.b64encode(filled.encode()).decode()
                return encode(filled) if encode is not None else filled

            return PLACEHOLDER.sub(put, value)
        if isinstance(value, list):
            return [self.fill(item, host, port, encode) for item in value]  # pyright: ignore[reportUnknownVariableType]
        if isinstance(value, dict):
            return {k: self.fill(v, host, port, encode) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
        return value

    def _value(self, name: str, host: str, port: int) -> str:
        secret = self._secrets.get(name)
        if secret is None:
            known = ", ".join(s.name for s in self) or "none are declared"
            raise SecretRefused(
                f"no secret is named {name} (the secrets: {known})", ErrorCode.NOT_FOUND
            )
        if secret.value is None:
            raise SecretRefused(
                f"the secret {name} has no value here: {secret.missing}", ErrorCode.NOT_FOUND
            )
        if not secret.scoped_to(host, port):
            raise SecretRefused(
                f"the secret {name} may be sent only to {', '.join(secret.hosts)}, not to "
                f"{host}:{port}",
                ErrorCode.SECRET_OUT_OF_SCOPE,
            )
        return secret.value


def uses(value: Any) -> set[str]:
    """The names of the secrets `value` (a string, or lists and dicts of them) refers to."""
    if isinstance(value, str):
        return {found.group(1) for found in PLACEHOLDER.finditer(value)}
    if isinstance(value, list | tuple):
        return set().union(*(uses(item) for item in value))  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(value, dict):
        return set().union(*(uses(item) for item in value.values()))  # pyright: ignore[reportUnknownArgumentType]
    return set()


def read_file(path: Path) -> dict[str, _Declared]:
    """The declarations of a secrets file; {} if there is none. Raises `ConfigError`."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigError(
            f"{path}: others may read or write it (mode {stat.S_IMODE(info.st_mode):04o}): run "
            f"`chmod 600 {path}`"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    declared: dict[str, _Declared] = {}
    for name, entry in data.items():
        if not NAME.fullmatch(name):
            raise ConfigError(f"{path}: [{name}] is not a secret's name (letters, digits, _)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {name} must be a table: [{name}] with hosts = [...]")
        try:
            declared[name] = _Declared.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or name}: "
                + str(e["msg"]).removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ConfigError(f"{path}: [{name}]: {problems}") from None
    return declared


def write_file(path: Path, declared: Mapping[str, _Declared]) -> None:
    """Write the declarations, readable by the owner alone from the first byte."""
    lines: list[str] = ["# secrets for agent-runtime: `agent secrets` manages this file"]
    for name in sorted(declared):
        entry = declared[name]
        lines += ["", f"[{name}]", f"hosts = {json.dumps(entry.hosts)}"]
        if entry.value is not None:
            lines.append(f"value = {json.dumps(entry.value)}")
        elif entry.env is not None:
            lines.append(f"env = {json.dumps(entry.env)}")
        else:
            lines.append("keyring = true")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)  # one left by a crash: made afresh, never reused
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    descriptor = os.open(partial, flags, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # whatever the umask said
        out.write("\n".join(lines) + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename, on disk
    finally:
        os.close(folder)


def declaration(
    hosts: list[str], *, value: str | None = None, env: str | None = None, keyring: bool = False
) -> _Declared:
    """One secret's declaration. Raises `ValueError` saying what is wrong."""
    try:
        return _Declared(hosts=hosts, value=value, env=env, keyring=keyring)
    except ValidationError as exc:
        raise ValueError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None


def _from_keyring(name: str) -> tuple[str | None, str | None]:
    import keyring  # noqa: PLC0415 - only where a secret is kept there
    import keyring.errors  # noqa: PLC0415

    try:
        value = keyring.get_password(KEYRING_SERVICE, name)
    except keyring.errors.KeyringError as exc:
        return None, f"the OS keyring cannot be read here ({exc})"
    if value is None:
        return None, f"the OS keyring has no {name} (service {KEYRING_SERVICE})"
    if len(value) < SHORTEST:
        return None, f"its value in the OS keyring is shorter than {SHORTEST} characters"
    return value, None
