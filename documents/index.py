"""The documents index (`agent index PATH...`, the `search_documents` tool): passages with their
citations, searched by keywords (SQLite FTS5's BM25) and by meaning (the embedder's vectors),
the two rankings fused.

One SQLite file in a folder of its own. Indexing is incremental: a file whose size and time are
unchanged is not read again, one whose content is unchanged is not cut or embedded again, and
the passages of a file gone from a folder indexed go with it. Each file is one transaction, so
an index stopped half way keeps what it finished.

Fusion is reciprocal rank fusion: a passage scores 1/(K + rank) in each ranking it is in, and
the sums order the result, so neither ranking's scale can drown the other's.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from base.errors import ConfigError, StoreError
from documents import windows
from documents.api_embedder import ApiEmbedder
from documents.citing import cite_names
from documents.embedder import NAME, Embedder, TextEmbedder
from documents.extract import kind_of, pages
from documents.passages import Passage, passages

#: how deep each ranking is read before they are fused
DEPTH = 50
#: reciprocal rank fusion's constant (60, as its authors found best)
K = 60
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL, digest TEXT NOT NULL,
    passages INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, page INTEGER, title TEXT NOT NULL,
    section TEXT NOT NULL, line_start INTEGER NOT NULL, line_end INTEGER NOT NULL,
    text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS passages_of ON passages (path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_WORD = re.compile(r"\w+", re.UNICODE)
#: words too common to say what a passage is about: a keyword query leaves them out
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
Ranking = Sequence[int]
Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Hit:
    """A passage found, with its citation: `cite` is what an answer quotes to cite it."""

    id: int
    path: str
    page: int | None
    section: str
    line_start: int
    line_end: int
    text: str
    score: float
    #: what the citation calls its file (`documents.citing`): its name, unless another file
    #: indexed has that name too
    name: str = ""

    @property
    def cite(self) -> str:
        where = f"p.{self.page}:" if self.page is not None else ""
        return f"{self.name or Path(self.path).name}:{where}{self.line_start}-{self.line_end}"


@dataclass(frozen=True)
class Indexed:
    """What one `add` did."""

    files: int
    read: int
    passages: int
    removed: int
    seconds: float
    #: a folder's files that could not be read, and why (the others were indexed)
    skipped: tuple[str, ...] = ()
    #: files read that held no text (a scanned PDF, say): indexed, with no passage
    empty: tuple[str, ...] = ()


Progress = Callable[[str, int, int], None]


class Index:
    """The index in `folder` (made on first use). Open with `Index.open(folder)`."""

    def __init__(self, db: sqlite3.Connection, folder: Path, embedder: TextEmbedder) -> None:
        self._db = db
        self.folder = folder
        self.embedder = embedder
        self._lock = threading.Lock()
        self._matrix: tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64], Matrix] | None = None
        self._names: tuple[int, dict[str, str]] | None = None

    @classmethod
    def open(cls, folder: Path, embedder: TextEmbedder | str | None = None) -> Index:
        """The index in `folder`, made if need be with `embedder` (a URI: "local", the
        default, "openai:MODEL", "openai-compatible:URL#MODEL"). An index made already is
        opened with the embedder it was made with; another one given is refused."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                folder / "index.db", isolation_level=None, check_same_thread=False, timeout=60.0
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA + windows.SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the documents index in {folder}: {exc}") from exc
        columns = [r[1] for r in db.execute("PRAGMA table_info(passages)").fetchall()]
        if "title" not in columns:
            raise ConfigError(
                f"the index in {folder} was made by an earlier version: remove the folder and "
                "index again"
            )
        try:
            _windowed(db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the documents index in {folder}: {exc}") from exc
        row = db.execute("SELECT value FROM meta WHERE key = 'embedder'").fetchone()
        wanted = embedder if isinstance(embedder, str) or embedder is None else embedder.name
        if wanted == "local":
            wanted = NAME
        if row is not None and wanted is not None and row[0] != wanted:
            raise ConfigError(
                f"the index in {folder} was made with the embedder {row[0]}, not {wanted}: "
                "index again into another folder, or remove this one"
            )
        if row is None:
            db.execute("INSERT INTO meta VALUES ('embedder', ?)", (wanted or NAME,))
        if embedder is None or isinstance(embedder, str):
            embedder = embedder_named(row[0] if row is not None else wanted or NAME)
        return cls(db, folder, embedder)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- indexing --------------------------------------------------------------------------

    def add(self, paths: Iterable[Path], progress: Progress | None = None) -> Indexed:
        """Index the files at `paths` (a folder: every file in it this can read, at any depth,
        hidden ones left out). Raises `ConfigError` for a path that is not there."""
        started = time.perf_counter()
        files, folders = found_files(paths)
        named = {p.expanduser().resolve() for p in paths}
        read = made = 0
        skipped: list[str] = []
        empty: list[str] = []
        for n, path in enumerate(files, start=1):
            if progress is not None:
                progress(str(path), n, len(files))
            try:
                count = self._add_file(path)
            except ConfigError as exc:
                if path in named:  # a file named outright that cannot be read: said so
                    raise
                skipped.append(str(exc))  # one of a folder's: the others go on
                continue
            except sqlite3.Error as exc:
                raise StoreError(f"the documents index in {self.folder}: {exc}") from exc
            if count is not None:
                read, made = read + 1, made + count
                if not count:
                    empty.append(str(path))
        removed = self._forget_gone(folders, {str(p) for p in files})
        seconds = time.perf_counter() - started
        return Indexed(len(files), read, made, removed, seconds, tuple(skipped), tuple(empty))

    def _add_file(self, path: Path) -> int | None:
        """Index one file; the passages made (None: it had not changed)."""
        key = str(path)
        row = self._db.execute("SELECT size, mtime, digest FROM files WHERE path = ?", (key,))
        known = row.fetchone()
        try:
            stat = path.stat()
            if known is not None and (known[0], known[1]) == (stat.st_size, stat.st_mtime):
                return None
            digest = _digest(path)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
        if known is not None and known[2] == digest:
            self._db.execute(
                "UPDATE files SET size = ?, mtime = ? WHERE path = ?",
                (stat.st_size, stat.st_mtime, key),
            )
            return None
        cut = [p for page in pages(path) for p in passages(page, title=path.name)]
        title = cut[0].section if cut else path.name  # the document's first heading
        vectors = self.embedder.embed([embedded_text(p, title) for p in cut])
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._remove(key)
            for passage, vector in zip(cut, vectors, strict=True):
                self._db.execute(
                    "INSERT INTO passages (path, page, title, section, line_start, line_end, "
                    "text, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        passage.page,
                        title,
                        passage.section,
                        passage.line_start,
                        passage.line_end,
                        passage.text,
                        vector.astype(np.float16).tobytes(),
                    ),
                )
            windows.make(self._db, key)
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                (key, stat.st_size, stat.st_mtime, digest, len(cut)),
            )
            bumped(self._db)  # in the same transaction: a reader's vectors never lag its words
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return len(cut)

    def remove(self, paths: Iterable[Path]) -> tuple[list[str], int]:
        """Take the files at `paths` out of the index, whether or not they are still there (a
        folder: every file indexed under it; a link: as it was indexed, or what it points to):
        the files taken out, and how many passages went with them. Raises `ConfigError`, having
        taken out nothing, for a path under which nothing is indexed."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                keys = self._indexed_at(paths)
                went = 0
                for key in keys:
                    row = self._db.execute("SELECT passages FROM files WHERE path = ?", (key,))
                    went += int(row.fetchone()[0])
                    self._remove(key)
                bumped(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"the documents index in {self.folder}: {exc}") from exc
        return keys, went

    def _indexed_at(self, paths: Iterable[Path]) -> list[str]:
        """The files indexed at or under each of `paths`. Raises `ConfigError` for a path with
        none."""
        keys: dict[str, None] = {}
        for given in paths:
            named = given.expanduser()
            found = []
            for path in dict.fromkeys([Path(os.path.abspath(named)), named.resolve()]):
                prefix = str(path).rstrip("/") + "/"
                found += self._db.execute(
                    "SELECT path FROM files WHERE path = ? OR substr(path, 1, ?) = ? ORDER BY path",
                    (str(path), len(prefix), prefix),
                ).fetchall()
            if not found:
                raise ConfigError(
                    f"{given}: nothing indexed there (`agent index --list` lists what is)"
                )
            keys.update((str(r[0]), None) for r in found)
        return list(keys)

    def _remove(self, key: str) -> None:
        windows.drop(self._db, key)
        self._db.execute("DELETE FROM passages WHERE path = ?", (key,))
        self._db.execute("DELETE FROM files WHERE path = ?", (key,))

    def _forget_gone(self, folders: list[Path], present: set[str]) -> int:
        """Remove the files that were indexed under `folders` and are there no more."""
        gone = 0
        for folder in folders:
            prefix = str(folder).rstrip("/") + "/"
            rows = self._db.execute(
                "SELECT path FROM files WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
            for (key,) in rows:
                if key not in present:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._remove(key)
                    bumped(self._db)
                    self._db.execute("COMMIT")
                    gone += 1
        return gone

    # --- searching -------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def files(self) -> list[tuple[str, int]]:
        """The files indexed, with how many passages each gave."""
        rows = self._db.execute("SELECT path, passages FROM files ORDER BY path").fetchall()
        return [(str(p), int(n)) for p, n in rows]

    def passages(self, contains: str = "") -> list[Hit]:
        """Every passage of the files whose path holds `contains` (all files for ""), in order:
        by file, then as they come in it."""
        rows = self._db.execute(
            "SELECT id, path, page, section, line_start, line_end, text FROM passages "
            "WHERE instr(path, ?) > 0 ORDER BY path, id",
            (contains,),
        ).fetchall()
        names = self._cite_names()
        return [
            Hit(i, path, page, section, start, end, text, 0.0, names.get(path, ""))
            for i, path, page, section, start, end, text in rows
        ]

    def keywords(self, query: str, depth: int = DEPTH) -> list[int]:
        """Windows (by their first passage's id) by BM25 over their words: a word of their
        document's title counts three times a word of their text, one of their sections'
        titles twice."""
        words = [w for w in _WORD.findall(query.lower()) if w not in _STOPWORDS]
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in dict.fromkeys(words))
        rows = self._db.execute(
            "SELECT rowid FROM window_words WHERE window_words MATCH ? "
            "ORDER BY bm25(window_words, 3.0, 2.0, 1.0) LIMIT ?",
            (match, depth),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def vectors(self, query: str, depth: int = DEPTH) -> list[int]:
        """Windows (by their first passage's id) by the best cosine of their passages' vectors
        to the query's."""
        firsts, starts, matrix = self._vectors()
        if not len(firsts):
            return []
        scores = np.maximum.reduceat(matrix @ self.embedder.embed([query])[0], starts)
        depth = min(depth, len(firsts))
        top = np.argpartition(-scores, depth - 1)[:depth]
        return [int(firsts[i]) for i in top[np.argsort(-scores[top])]]

    def _vectors(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Matrix]:
        """Every window's first passage, where its passages begin in the matrix of every
        passage's vector, and the matrix: read once, and again when the index changed."""
        with self._lock:
            # One read transaction: the generation, the vectors and the windows as one writer
            # left them all (another process may index at the same time).
            self._db.execute("BEGIN")
            try:
                generation = generation_of(self._db)
                if self._matrix is None or self._matrix[0] != generation:
                    cursor = self._db.execute("SELECT id, vector FROM passages ORDER BY id")
                    rows = cursor.fetchall()
                    heads = self._db.execute("SELECT first FROM windows ORDER BY first")
                    firsts = np.array([r[0] for r in heads.fetchall()], dtype=np.int64)
            finally:
                self._db.execute("COMMIT")
            if self._matrix is None or self._matrix[0] != generation:
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
                dims = len(rows[0][1]) // 2 if rows else 1  # float16: two bytes a dimension
                # A file's passages have consecutive ids and its windows cover them all, in
                # order: each window's passages are the rows from its first to the next's.
                starts = np.searchsorted(ids, firsts).astype(np.int64)
                vectors = matrix.reshape(-1, dims).astype(np.float32)
                self._matrix = (generation, firsts, starts, vectors)
            return self._matrix[1], self._matrix[2], self._matrix[3]

    def search(self, query: str, k: int = 5, how: str = "fused") -> list[Hit]:
        """The `k` windows best for `query`: by `how`, "fused", "keywords" or "vectors"."""
        if how == "keywords":
            ranked = [(i, 1.0 / (K + r)) for r, i in enumerate(self.keywords(query), start=1)]
        elif how == "vectors":
            ranked = [(i, 1.0 / (K + r)) for r, i in enumerate(self.vectors(query), start=1)]
        else:
            ranked = fused([self.keywords(query), self.vectors(query)])
        return self._hits(ranked[:k])

    def _hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        """The windows `ranked` names (by their first passage's id), each as one hit: where its
        first passage is, to the end of its last, with their texts joined."""
        hits = []
        names = self._cite_names()
        for first, score in ranked:
            rows = self._db.execute(
                "SELECT p.path, p.page, p.section, p.line_start, p.line_end, p.text "
                "FROM windows w JOIN passages p ON p.id BETWEEN w.first AND w.last "
                "WHERE w.first = ? ORDER BY p.id",
                (first,),
            ).fetchall()
            if rows:
                path, page, section, start = rows[0][:4]
                text = "\n\n".join(str(r[5]) for r in rows)
                end = int(rows[-1][4])
                name = names.get(str(path), "")
                hits.append(
                    Hit(first, str(path), page, str(section), int(start), end, text, score, name)
                )
        return hits

    def _cite_names(self) -> dict[str, str]:
        """What citations call each file indexed (`cite_names`): worked out again when the
        index changed."""
        with self._lock:
            generation = generation_of(self._db)
            if self._names is None or self._names[0] != generation:
                paths = [str(r[0]) for r in self._db.execute("SELECT path FROM files")]
                self._names = (generation, cite_names(paths))
            return self._names[1]


def generation_of(db: sqlite3.Connection) -> int:
    """How many changes the index has counted (`bumped`): what a reader's copies are keyed by."""
    row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    return int(row[0]) if row is not None else 0


def bumped(db: sqlite3.Connection) -> None:
    """Count one more change to the index (in the caller's transaction): a reader's vectors
    are read again when the count it read them at is not the index's."""
    db.execute(
        "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE SET "
        "value = CAST(value AS INTEGER) + 1"
    )


def _windowed(db: sqlite3.Connection) -> None:
    """Give an index made before windows its windows (from its passages: nothing is embedded
    again), and drop the passages' own keyword table it kept then."""
    paths = windows.missing(db)
    old = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'words'").fetchone()
    if not paths and old is None:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for path in windows.missing(db):  # again, now that no one else writes
            windows.make(db, path)
        db.execute("DROP TABLE IF EXISTS words")
        bumped(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def fused(rankings: Sequence[Ranking]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of `rankings` (best first): (passage, score), best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, passage in enumerate(ranking, start=1):
            scores[passage] = scores.get(passage, 0.0) + 1.0 / (K + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def embedded_text(passage: Passage, title: str) -> str:
    """What is embedded of a passage: its document's title and its section's, then its text."""
    heading = passage.section if passage.section == title else f"{title} — {passage.section}"
    return f"{heading}\n{passage.text}"


def found_files(
    paths: Iterable[Path], readable: Callable[[Path], bool] = lambda p: kind_of(p) is not None
) -> tuple[list[Path], list[Path]]:
    """The files at `paths` (a folder's that are `readable`, at any depth, hidden ones and
    hidden folders left out), in order, and the folders among `paths`. A file named outright
    is taken whatever its kind (a text is read as text). Raises `ConfigError` for a path that
    is not there."""
    files: dict[Path, None] = {}
    folders: list[Path] = []
    for given in paths:
        path = given.expanduser().resolve()
        if path.is_dir():
            folders.append(path)
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    found = Path(root) / name
                    if not name.startswith(".") and found.is_file() and readable(found):
                        files[found] = None
        elif path.is_file():
            files[path] = None
        else:
            raise ConfigError(f"{given}: no such file or folder")
    return list(files), folders


def _digest(path: Path) -> str:
    """The sha256 of a file, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as read:
        while chunk := read.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def embedder_named(name: str) -> TextEmbedder:
    """The embedder an index names: the bundled one, or one behind an API."""
    return shared_embedder() if name in (NAME, "local") else ApiEmbedder(name)


_SHARED: list[Embedder] = []


def shared_embedder() -> Embedder:
    """One embedder a process shares (its model is loaded once)."""
    if not _SHARED:
        _SHARED.append(Embedder())
    return _SHARED[0]
