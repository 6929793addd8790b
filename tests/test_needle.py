"""A needle in about two million tokens: one fact planted in one passage of a corpus far larger
than any model's window (the Python documentation, Debian's python3.11-doc, copied until it
holds 2,000,000 of the embedder's tokens) is found by `search_documents` and cited by a scripted
run, and `agent show` lists the citation. The positive control takes the needle out again
(only that file is read again): the same probe then finds no passage that states it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from agent.store import Store
from documents.embedder import _tokenizer_file
from documents.index import Index
from frontends.cli import main

from .conftest import tool_results, write_script

CORPUS = Path("/usr/share/doc/python3.11/html/_sources")
TOKENS = 2_000_000
NEEDLE = (
    "The lighthouse keeper hides the spare key to the lamp room under the third blue flowerpot."
)
QUESTION = "Where does the keeper of the lighthouse keep a spare key to the lamp room?"


def _corpus(folder: Path) -> tuple[int, Path]:
    """Files of the documentation copied into `folder` until they hold TOKENS tokens; the
    tokens, and the file the needle was planted in (in the middle of it)."""
    tokenizer = Tokenizer.from_file(str(_tokenizer_file()))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    total, copied = 0, []
    for source in sorted(CORPUS.rglob("*.rst.txt")):
        text = source.read_text()
        total += len(tokenizer.encode(text).ids)
        target = folder / source.relative_to(CORPUS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        copied.append(target)
        if total >= TOKENS:
            break
    planted = copied[len(copied) // 2]
    lines = planted.read_text().split("\n")
    middle = len(lines) // 2
    while lines[middle].strip():  # between two paragraphs: a paragraph of its own
        middle += 1
    lines[middle:middle] = ["", NEEDLE, ""]
    planted.write_text("\n".join(lines))
    return total, planted


def test_a_fact_planted_in_two_million_tokens_is_found_and_cited(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert CORPUS.is_dir(), f"no corpus at {CORPUS}: run scripts/ensure-media (make test does)"
    tokens, planted = _corpus(tmp_path / "corpus")
    assert tokens >= TOKENS
    assert main(["index", str(tmp_path / "corpus")]) == 0
    said = " ".join(capsys.readouterr().out.split())
    print(said, file=sys.stderr)  # how many passages, and at what speed, in the test's output
    with Index.open(home / "index") as index:
        hits = index.search(QUESTION, 5)
        passages = index.count()
    assert passages > 5_000
    [needle] = [h for h in hits if NEEDLE in h.text]
    assert needle.path == str(planted)

    script = write_script(
        tmp_path / "turns.json",
        [
            {"tool": "search_documents", "args": {"query": QUESTION}},
            {"answer": f"Under the third blue flowerpot [cite: {needle.cite}]."},
        ],
    )
    assert main(["run", "--json", "--no-plan", "--model", f"scripted:{script}", QUESTION]) == 0
    ran = json.loads(capsys.readouterr().out)
    with Store.open(home / "events.db") as store:
        [searched] = tool_results(store, ran["task_id"])
    assert NEEDLE in searched.content  # the run's own search returned the passage
    assert main(["show", ran["task_id"]]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    listed = shown.split("Citations (the passages the answer cites)")[1].replace(" ", "")
    assert f"[cite:{needle.cite}]{planted}" in listed  # spaces out: the screen wraps long lines

    # The control: without the needle, the same probe finds it nowhere.
    planted.write_text(planted.read_text().replace(NEEDLE, ""))
    with Index.open(home / "index") as index:
        again = index.add([tmp_path / "corpus"])
        assert (again.read, again.removed) == (1, 0)  # only the planted file, read again
        assert not [h for h in index.search(QUESTION, 5) if NEEDLE in h.text]
