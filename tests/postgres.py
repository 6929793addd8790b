"""A PostgreSQL server of the tests' own (Debian's, made by `scripts/ensure-postgres`), on
loopback, in a temporary folder: a shared store's tests each get a schema of their own in it."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"no PostgreSQL {name}: run scripts/ensure-postgres")
    return found[-1]


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A running server; `stop()` ends it, `start()` starts it again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = _free_port()
        self.url = f"postgresql://agent@127.0.0.1:{self.port}/agent"
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        subprocess.run(
            _as_server_user(
                [_bin("initdb"), "--no-sync", "-D", str(self.data), "-A", "trust", "-U", "agent"]
            ),
            check=True,
            capture_output=True,
        )
        self.start()
        with psycopg.connect(f"postgresql://agent@127.0.0.1:{self.port}/postgres") as pg:
            pg.autocommit = True
            pg.execute("CREATE DATABASE agent")

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_server_user([_bin("pg_ctl"), "-D", str(self.data), "-w", *args]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.folder / "log"), "-o", options, "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def schema(self) -> str:
        """A new, empty schema; the URL of a store in it."""
        name = f"t_{secrets.token_hex(4)}"
        with psycopg.connect(self.url, autocommit=True) as pg:
            pg.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="agent-pg-") as tmp:
        server = Server(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def shared_url(postgres: Server, monkeypatch: pytest.MonkeyPatch, home: Path) -> str:
    """A store of its own for one test, named by AGENT_STORE_URL for everything it opens."""
    url = postgres.schema()
    monkeypatch.setenv("AGENT_STORE_URL", url)
    return url


def rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """What `query` reads from the store at `url`, through a connection of its own."""
    with psycopg.connect(url, autocommit=True) as pg:
        cursor = pg.execute(query, args)
        return cursor.fetchall() if cursor.description is not None else []
