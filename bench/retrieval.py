"""Retrieval over the Python 3.11 documentation (Debian's python3.11-doc: 497 reST files, about
1.4 million words), with the questions of `retrieval_questions.json` (written for this project,
each with its gold place: a file and a line quoted from it).

- Recall@5 and MRR (over the first 10) of keywords alone (BM25), vectors alone and the fusion
  that `search_documents` uses. What a search returns is a window (a few neighbouring passages,
  about 210 words: see `documents/windows.py`); one is right when it is of the gold file and
  holds the gold line. Goals: the fusion's recall@5 at least 0.9, and above each ranking alone.
  For context, recall@50: how often the gold is among the first 50 at all, the most that any
  reordering of them (a reranker) could bring into the first 5.
- Indexing: passages a second, the whole corpus indexed from nothing (for context: it is the
  embedder's speed on this machine's cores).
- Query latency at 100,000 passages: the corpus's passages, copied until there are 100,000 (their
  vectors moved a little, so that no two are one), each question searched as the tool does, the
  index warm. Goal: median at most 100 ms.

`--index FOLDER` keeps the corpus's index there: a second run reads only what changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _goals import Goals, machine

from documents import windows
from documents.index import DEPTH, Hit, Index, bumped

CORPUS = Path("/usr/share/doc/python3.11/html/_sources")
QUESTIONS = Path(__file__).resolve().parent / "retrieval_questions.json"
LARGE = 100_000
HOWS = ("keywords", "vectors", "fused")


def gold_line(item: dict[str, str]) -> int:
    """The line (from 1) of the item's file that its quote is on."""
    lines = (CORPUS / item["file"]).read_text().split("\n")
    return next(n for n, line in enumerate(lines, start=1) if item["quote"] in line)


def rank(hits: list[Hit], item: dict[str, str], line: int) -> int | None:
    """Where (from 1) the first right passage is among `hits`; None if none is."""
    for n, hit in enumerate(hits, start=1):
        if hit.path == str(CORPUS / item["file"]) and hit.line_start <= line <= hit.line_end:
            return n
    return None


def evaluate(index: Index, items: list[dict[str, str]]) -> dict[str, tuple[float, float, float]]:
    """(recall@5, MRR@10, recall@DEPTH) of each way of searching."""
    lines = [gold_line(item) for item in items]
    found: dict[str, tuple[float, float, float]] = {}
    for how in HOWS:
        ranks = [
            rank(index.search(item["question"], DEPTH, how), item, line)
            for item, line in zip(items, lines, strict=True)
        ]
        recall = sum(1 for r in ranks if r is not None and r <= 5) / len(items)
        mrr = sum(1 / r for r in ranks if r is not None and r <= 10) / len(items)
        deep = sum(1 for r in ranks if r is not None) / len(items)
        found[how] = (recall, mrr, deep)
    return found


def grown(source: Path, folder: Path, size: int) -> Path:
    """A copy of the index at `source` whose passages are copied until there are `size`."""
    folder.mkdir(parents=True)
    shutil.copy(source / "index.db", folder / "index.db")
    db = sqlite3.connect(folder / "index.db", isolation_level=None)
    rows = db.execute(
        "SELECT path, page, title, section, line_start, line_end, text, vector FROM passages "
        "ORDER BY id"
    )
    original = rows.fetchall()
    rng = np.random.default_rng(7)
    db.execute("BEGIN")
    have = len(original)
    copy = 0
    copied: set[str] = set()
    while have < size:
        copy += 1
        for path, page, title, section, start, end, text, vector in original[: size - have]:
            moved = np.frombuffer(vector, dtype=np.float16).astype(np.float32)
            moved = moved + rng.normal(0, 0.02, moved.shape).astype(np.float32)
            moved /= np.linalg.norm(moved)
            db.execute(
                "INSERT INTO passages (path, page, title, section, line_start, line_end, text, "
                "vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f"{path}#copy{copy}",
                    page,
                    title,
                    section,
                    start,
                    end,
                    text,
                    moved.astype(np.float16).tobytes(),
                ),
            )
            copied.add(f"{path}#copy{copy}")
        have = min(size, have + len(original))
    for path in sorted(copied):
        windows.make(db, path)
    bumped(db)
    db.execute("COMMIT")
    db.close()
    return folder


def latencies(index: Index, items: list[dict[str, str]]) -> list[float]:
    index.search(items[0]["question"])  # warm: the vectors read, the model loaded
    timed = []
    for item in items:
        started = time.perf_counter()
        index.search(item["question"], 5)
        timed.append((time.perf_counter() - started) * 1000)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="keep the corpus's index in this folder")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"no corpus at {CORPUS}: run scripts/ensure-media (Debian's python3.11-doc)")
    items: list[dict[str, str]] = json.loads(QUESTIONS.read_text())
    print(machine())
    goals = Goals()
    with tempfile.TemporaryDirectory(prefix="agent-retrieval-") as tmp:
        folder = args.index or Path(tmp) / "corpus"
        with Index.open(folder) as index:
            done = index.add([CORPUS])
            total = index.count()
            if done.read:
                print(
                    f"indexed {done.read} files, {done.passages:,} passages in "
                    f"{done.seconds:.0f} s: "
                    f"{done.passages / done.seconds:.1f} passages/s"
                )
            else:
                print(f"the index in {folder} was up to date ({total:,} passages)")
            scores = evaluate(index, items)
        for how, (recall, mrr, deep) in scores.items():
            print(
                f"{how}: recall@5 {recall:.3f}, MRR@10 {mrr:.3f}, recall@{DEPTH} {deep:.3f} "
                f"over {len(items)} questions"
            )
        print(
            f"(recall@{DEPTH} of the fusion is the most any reordering of what it finds, a "
            "reranker's, could reach at 5)"
        )
        with Index.open(grown(folder, Path(tmp) / "large", LARGE)) as large:
            timed = latencies(large, items)
            assert large.count() == LARGE
        median = statistics.median(timed)
        print(
            f"query at {LARGE:,} passages: median {median:.1f} ms, max {max(timed):.1f} ms "
            f"over {len(items)} queries (the corpus has {total:,} passages)"
        )
        if done.read:
            print(f"indexing_passages_per_s: {done.passages / done.seconds:.1f} (for context)")
        fused, best = scores["fused"][0], max(scores["keywords"][0], scores["vectors"][0])
        print(goals.add("fused_recall_at_5", fused, ">= 0.9x"))
        print(goals.add("fused_recall_over_best_alone", fused / best, ">= 1.01x"))
        print(goals.add("query_at_100k_of_100ms", median / 100, "<= 1.0x"))
    goals.finish()


if __name__ == "__main__":
    main()
