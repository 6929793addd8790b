"""The part of Python's DB-API that the store and what it keeps beside its log use: SQLite's
connection has it, and so does the PostgreSQL one (`agent._postgres`) that many hosts share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol


class Rows(Protocol):
    """What a statement gives back: its rows, and how many it changed."""

    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A connection, in autocommit: a transaction is begun and ended by `BEGIN`, `BEGIN
    IMMEDIATE` (one writer at a time), `COMMIT` and `ROLLBACK` statements. Statements are
    written in SQLite's dialect, with `?` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Rows: ...

    def executescript(self, script: str, /) -> object: ...

    def close(self) -> None: ...
