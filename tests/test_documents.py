"""Documents and their index: the text of each kind with its pages and sections, passages that
cite their lines, the offline embedder, indexing again only what changed, the two rankings and
their fusion, the search tool offered only where there is an index, and an answer's citations
listed by `agent show`."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
from rich.console import Console

from agent.store import Store
from base.errors import ConfigError, StoreError
from documents import windows
from documents.api_embedder import ApiEmbedder
from documents.citing import cite_names
from documents.embedder import Embedder, _checked
from documents.extract import html_text, pages
from documents.index import Index
from documents.passages import WORDS, passages
from frontends.cli import main
from frontends.inputs import attachments
from tools.documents import search_documents
from tools.registry import Registry

from .conftest import make_runner, write_script
from .pdf import write_pdf

RST = """\
:mod:`tides` --- Tables of the tides
====================================

The :mod:`tides` module reads tide tables.

.. function:: high_water(port, day)

   Return the time of the first high water at *port* on *day*.

Harbour notes
-------------

Boats leave the harbour two hours before high water.
"""


def test_each_kind_gives_its_text_with_pages_and_headings(tmp_path: Path) -> None:
    pdf = write_pdf(
        tmp_path / "lease.pdf",
        ["Lease (draft)\nRent is paid monthly.", "Deposit\nThe deposit is two months."],
    )
    assert [(p.number, p.text) for p in pages(pdf)] == [
        (1, "Lease (draft)\nRent is paid monthly."),
        (2, "Deposit\nThe deposit is two months."),
    ]
    page = (
        "<html><head><title>t</title><script>var x = 1;</script></head><body><h2>Ferries</h2>"
        "<p>The first ferry leaves at&nbsp;six.</p><style>p {}</style>"
        "<ul><li>one</li><li>two</li></ul></body></html>"
    )
    text = html_text(page)  # blocks apart, as paragraphs are; what is not shown left out
    assert text == "## Ferries\n\nThe first ferry leaves at six.\n\none\n\ntwo\n"
    notes = tmp_path / "notes.md"
    notes.write_text("# Ferries\r\nThe first ferry leaves at six.\r\n")
    assert pages(notes)[0].text == "# Ferries\nThe first ferry leaves at six.\n"


def test_passages_name_their_section_and_the_lines_they_are(tmp_path: Path) -> None:
    lines = RST.split("\n")
    found = list(passages(pages(_write(tmp_path / "tides.rst", RST))[0], title="tides.rst"))
    assert [p.section for p in found] == [
        "tides — Tables of the tides",
        "high_water(port, day)",
        "Harbour notes",
    ]
    for passage in found:  # what a passage says is exactly its lines
        assert passage.text == "\n".join(lines[passage.line_start - 1 : passage.line_end])
    # A paragraph past a passage's size is cut; a line past it, at its words.
    long = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(60)) for p in range(5))
    cut = list(passages(pages(_write(tmp_path / "long.txt", long + "\n" + "x " * 400))[0]))
    assert all(len(p.text.split()) <= WORDS * 1.3 for p in cut)
    assert (
        " ".join(" ".join(p.text.split()) for p in cut).split() == (long + " " + "x " * 400).split()
    )


def test_a_search_finds_windows_of_neighbouring_passages_across_headings(
    tmp_path: Path,
) -> None:
    # A window closes past LEAST_WORDS when the next would pass MOST_WORDS, at MOST_PASSAGES,
    # and at a new page.
    assert windows.grouped([(1, None, 10), (2, None, 10)]) == [(1, 2)]
    assert windows.grouped([(1, None, 200), (2, None, 200)]) == [(1, 1), (2, 2)]
    assert windows.grouped([(1, None, 100), (2, None, 100)]) == [(1, 2)]  # not yet LEAST
    assert windows.grouped([(i, None, 5) for i in range(1, 7)]) == [(1, 4), (5, 6)]
    assert windows.grouped([(1, 1, 5), (2, 1, 5), (3, 2, 5)]) == [(1, 2), (3, 3)]
    docs = tmp_path / "docs"
    _write(docs / "tides.rst", RST)
    with Index.open(tmp_path / "index") as index:
        index.add([docs])
        [hit] = index.search("when do boats leave the harbour", k=5, how="keywords")
    # The three short passages (a title, a function, a note) are one window: its lines, all
    # of them, its section the first's.
    assert (hit.line_start, hit.line_end, hit.section) == (1, 13, "tides — Tables of the tides")
    assert "Boats leave the harbour" in hit.text
    assert "Return the time" in hit.text


def test_a_window_scores_as_the_best_of_its_passages(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for n in range(4):  # files of many short sections: windows of several passages each
        body = "\n\n".join(
            f"Topic {n}.{i}\n{'-' * 12}\n\nNote {i} on boats and tides {n}." for i in range(9)
        )
        _write(docs / f"f{n}.rst", f"File {n}\n======\n\n{body}\n")
    query = "when do the boats sail with the tide"
    with Index.open(tmp_path / "index") as index:
        index.add([docs])
        found = index.vectors(query, depth=100)
        db = sqlite3.connect(tmp_path / "index" / "index.db")
        spans = db.execute("SELECT first, last FROM windows ORDER BY first").fetchall()
        rows = db.execute("SELECT id, vector FROM passages ORDER BY id").fetchall()
        db.close()
        asked = index.embedder.embed([query])[0]
    cosine = {
        i: float(np.frombuffer(v, dtype=np.float16).astype(np.float32) @ asked) for i, v in rows
    }
    assert sum(last - first + 1 for first, last in spans) == len(rows)  # every passage, once
    assert any(last > first for first, last in spans)  # windows of several passages
    best = {first: max(cosine[i] for i in range(first, last + 1)) for first, last in spans}
    assert found == sorted(best, key=lambda first: -best[first])


def test_an_index_made_before_windows_is_given_them_without_embedding_again(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    _write(docs / "tides.rst", RST)
    with Index.open(tmp_path / "index") as index:
        index.add([docs])
        before = index.search("boats leave the harbour", k=1)
    db = sqlite3.connect(tmp_path / "index" / "index.db")
    db.executescript(  # as the index was made then: no windows, the passages' own words
        "DELETE FROM windows; DELETE FROM window_words;"
        "CREATE VIRTUAL TABLE words USING fts5(title, section, text);"
    )
    db.execute("UPDATE passages SET vector = zeroblob(length(vector))")  # a probe: not re-made
    db.commit()
    db.close()
    with Index.open(tmp_path / "index") as index:
        [after] = index.search("boats leave the harbour", k=1, how="keywords")
        assert (after.path, after.line_start, after.line_end) == (
            before[0].path,
            before[0].line_start,
            before[0].line_end,
        )
        assert index.vectors("boats leave the harbour") != []
    db = sqlite3.connect(tmp_path / "index" / "index.db")
    assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'words'").fetchone() is None
    zero = db.execute("SELECT COUNT(*) FROM passages WHERE vector = zeroblob(length(vector))")
    assert zero.fetchone()[0] == 3  # the vectors were not embedded again
    db.close()


def test_what_cannot_be_read_says_why(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match="not UTF-8"):
        pages(tmp_path / "bad.txt")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 no more")
    with pytest.raises(ConfigError, match="cannot be read as a PDF"):
        pages(tmp_path / "bad.pdf")
    (tmp_path / "x.bin").write_bytes(b"\x00\xff\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        pages(tmp_path / "x.bin")
    assert pages(_write(tmp_path / "server.log", "\ufeffstarted\n"))[0].text == "started\n"
    with (tmp_path / "huge.txt").open("wb") as huge:
        huge.truncate(60_000_000)  # sparse: nothing written
    with pytest.raises(ConfigError, match="more than the 50 MB of text"):
        pages(tmp_path / "huge.txt")
    with Index.open(tmp_path / "index") as index, pytest.raises(ConfigError, match="no such"):
        index.add([tmp_path / "missing"])


def test_the_embedder_puts_meaning_close_and_refuses_a_changed_file(tmp_path: Path) -> None:
    cat, kitten, market = Embedder().embed(
        ["a cat sleeps on the sofa", "a kitten naps on the couch", "the stock market fell"]
    )
    assert float(cat @ kitten) > 0.6
    assert float(cat @ market) < 0.2
    assert abs(float(cat @ cat) - 1.0) < 1e-5
    changed = _write(tmp_path / "model.onnx", "not the model")
    with pytest.raises(ConfigError, match="not the one this version pins"):
        _checked(changed, "0" * 64)


def test_indexing_again_reads_what_changed_and_forgets_what_went(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write(docs / "tides.rst", RST)
    _write(docs / "ferries.md", "# Ferries\n\nThe first ferry leaves at six.\n")
    _write(docs / ".hidden.md", "# Hidden\n\nnever indexed\n")
    write_pdf(
        docs / "lease.pdf", ["Lease\nRent is paid monthly.", "Deposit\nThe deposit is two months."]
    )
    with Index.open(tmp_path / "index") as index:
        first = index.add([docs])
        assert (first.files, first.read, first.removed) == (3, 3, 0)
        again = index.add([docs])
        assert (again.read, again.passages) == (0, 0)  # nothing changed: nothing read
        _write(docs / "ferries.md", "# Ferries\n\nThe last ferry leaves at ten.\n")
        (docs / "tides.rst").unlink()
        changed = index.add([docs])
        assert (changed.read, changed.removed) == (1, 1)
        assert [Path(p).name for p, _ in index.files()] == ["ferries.md", "lease.pdf"]
        [hit] = index.search("when does the last boat go", k=1)
        assert (Path(hit.path).name, hit.section) == ("ferries.md", "Ferries")
        assert hit.text == "# Ferries\n\nThe last ferry leaves at ten."
        assert index.search("high water at a port", k=5, how="keywords") == []  # tides went
        [deposit] = index.search("deposit", k=1, how="keywords")
        assert (deposit.page, deposit.cite) == (2, "lease.pdf:p.2:1-2")


def test_files_are_taken_out_of_the_index_on_request_and_nothing_on_a_wrong_path(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    _write(docs / "tides.rst", RST)
    _write(docs / "ferries.md", "# Ferries\n\nThe first ferry leaves at six.\n")
    _write(docs / "old" / "a.md", "# Old A\n\nThe old pier was closed in spring.\n")
    _write(docs / "old" / "b.md", "# Old B\n\nThe old lighthouse is a museum now.\n")
    tips = _write(tmp_path / "elsewhere" / "tips.md", "# Tips\n\nTie the dinghy twice.\n")
    (docs / "tips-link.md").symlink_to(tips)
    assert main(["index", str(docs)]) == 0
    capsys.readouterr()

    # A path with nothing indexed under it: an error naming it, and nothing taken out.
    assert main(["index", "--remove", str(docs / "old"), str(docs / "nowhere")]) == 2
    assert "nowhere: nothing indexed there" in " ".join(capsys.readouterr().err.split())
    with Index.open(home / "index") as index:
        assert len(index.files()) == 5

    # A link in a folder indexed is indexed as the link: it is taken out by its name.
    assert main(["index", "--remove", str(docs / "tips-link.md")]) == 0
    assert "1 file and 1 passage removed" in _said(capsys)

    # A file (gone from the disk already) and a folder: their passages and windows go too.
    (docs / "ferries.md").unlink()
    assert main(["index", "--json", "--remove", str(docs / "ferries.md"), str(docs / "old")]) == 0
    said = json.loads(capsys.readouterr().out)
    assert [Path(p).name for p in said["removed"]] == ["ferries.md", "a.md", "b.md"]
    assert said["passages"] == 3
    with Index.open(home / "index") as index:
        assert [Path(p).name for p, _ in index.files()] == ["tides.rst"]
        assert said["total"] == index.count() > 0
        assert index.search("ferry", 5, "keywords") == []
        assert index.search("lighthouse museum", 5, "keywords") == []
        assert all(Path(h.path).name == "tides.rst" for h in index.search("old pier", 5))
        assert _first(index, "harbour boats", "keywords") == "tides.rst"  # the probe


def test_keywords_meaning_and_their_fusion_each_find_what_the_other_misses(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    _write(docs / "codes.md", "# Codes\n\nError XK-47 means the gasket is worn.\n")
    _write(docs / "pets.md", "# Pets\n\nA kitten should sleep somewhere warm and quiet.\n")
    _write(docs / "ships.md", "# Ships\n\nThe hull is painted every spring.\n")
    with Index.open(tmp_path / "index") as index:
        index.add([docs])
        # Words the passage shares with the query, and none of its meaning: keywords find it.
        assert _first(index, "XK-47", "keywords") == "codes.md"
        # Meaning with no word in common: only the vectors find it.
        assert index.search("resting place for a young cat", 3, "keywords") == []
        assert _first(index, "resting place for a young cat", "vectors") == "pets.md"
        # The fusion finds both.
        assert _first(index, "XK-47", "fused") == "codes.md"
        assert _first(index, "resting place for a young cat", "fused") == "pets.md"
    db = sqlite3.connect(tmp_path / "index" / "index.db")
    db.execute("UPDATE meta SET value = 'another-embedder' WHERE key = 'embedder'")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="made with the embedder another-embedder, not all-Mini"):
        Index.open(tmp_path / "index", "local")
    with pytest.raises(ConfigError, match="unknown embedder 'another-embedder'"):
        Index.open(tmp_path / "index")


def test_the_search_is_offered_once_there_is_an_index_and_its_answer_is_cited(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner, _ = make_runner(store, [], registry=Registry([search_documents]))
    task_id = runner.create("t")
    assert "search_documents" not in {t.name for t in runner.offered(runner.load(task_id))}
    docs = tmp_path / "docs"
    _write(docs / "tides.rst", RST)
    assert main(["index", str(docs)]) == 0
    assert "indexed 1 file in" in _said(capsys)
    assert "search_documents" in {t.name for t in runner.offered(runner.load(task_id))}

    cite = "tides.rst:1-13"  # a window: the file's three short passages joined
    script = write_script(
        tmp_path / "turns.json",
        [
            {"tool": "search_documents", "args": {"query": "when do boats leave the harbour"}},
            {"answer": f"Two hours before high water [cite: {cite}]; also [cite: made-up:1-2]."},
        ],
    )
    code = main(["run", "--json", "--no-plan", "--model", f"scripted:{script}", "boats?"])
    ran = json.loads(capsys.readouterr().out)
    assert code == 0, ran
    assert main(["show", ran["task_id"]]) == 0
    said = _said(capsys)
    listed = said.split("Citations")[1].replace(" ", "")  # spaces out: the screen wraps lines
    assert f"[cite:{cite}]{docs / 'tides.rst'},sectiontides—Tablesofthetides,lines1-13" in listed
    assert "made-up" not in listed  # cited, but never found: not listed


def test_files_of_one_name_are_cited_by_as_much_of_their_path_as_tells_them_apart(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    _write(docs / "api" / "index.md", "# API\n\nThe ferry API answers in JSON.\n")
    _write(docs / "guide" / "index.md", "# Guide\n\nThe ferry guide is for travellers.\n")
    _write(docs / "ferries.md", "# Ferries\n\nThe first ferry leaves at six.\n")
    with Index.open(tmp_path / "index") as index:
        index.add([docs])
        cites = {
            Path(hit.path).parent.name + "/" + Path(hit.path).name: hit.cite
            for hit in index.search("ferry", k=5, how="keywords")
        }
        assert cites == {
            "api/index.md": "api/index.md:1-3",
            "guide/index.md": "guide/index.md:1-3",
            "docs/ferries.md": "ferries.md:1-3",  # the only one of its name: its name alone
        }
        (docs / "guide" / "index.md").unlink()
        index.add([docs])  # one index.md is left: its name is enough again
        [hit] = index.search("ferry API", k=1, how="keywords")
        assert hit.cite == "index.md:1-3"
    assert cite_names(["/a/x.md", "/b/a/x.md", "/c/a/x.md"]) == {
        "/a/x.md": "/a/x.md",
        "/b/a/x.md": "b/a/x.md",
        "/c/a/x.md": "c/a/x.md",
    }


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    """What was printed since the last look, its lines and spaces as one (the screen wraps)."""
    return " ".join(capsys.readouterr().out.split())


def _first(index: Index, query: str, how: str) -> str:
    hits = index.search(query, 1, how)
    return Path(hits[0].path).name if hits else ""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_a_pdf_given_with_a_task_reaches_the_model_with_its_pages(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lease = write_pdf(
        tmp_path / "lease.pdf", ["Lease\nRent is paid monthly.", "Deposit\nTwo months."]
    )
    files = attachments([str(lease)], task="what is the deposit?")
    assert [(f.name, f.kind, f.pages, f.indexed) for f in files] == [("lease.pdf", "pdf", 2, False)]
    runner, backend = make_runner(store, [{"plan": ["Answer"]}, {"answer": "two months"}])
    task_id = runner.create("what is the deposit?", files=files)
    assert (await runner.run(task_id)).status == "done"
    prompt = "\n".join(m.content for m in backend.requests[0].messages)
    assert '<file name="lease.pdf" kind="pdf" pages="2">\n[page 1]\nLease\n' in prompt
    assert "[page 2]\nDeposit\nTwo months.\n</file>" in prompt
    assert runner.artifacts(task_id).read("lease.pdf").decode().startswith("[page 1]")
    # Its history says what the task was given, and where it is kept.
    assert main(["show", task_id]) == 0
    said = _said(capsys)
    assert "with lease.pdf (pdf, 2 pages, " in said
    assert " characters; artifact lease.pdf)" in said


async def test_files_too_long_to_show_are_indexed_and_the_model_told(
    store: Store, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "minutes"
    for n in range(40):  # 40 meetings of about 2,000 characters: more than is shown whole
        body = "\n\n".join(
            f"Item {i} of meeting {n}: the budget was discussed again." for i in range(30)
        )
        _write(folder / f"meeting-{n:02}.md", f"# Meeting {n}\n\n{body}\n")
    _write(folder / "meeting-17.md", "# Meeting 17\n\nThe board chose Lisbon for the retreat.\n")
    files = attachments([str(folder)], task="Where will the retreat be?", library=home / "index")
    assert len(files) == 40
    assert all(f.indexed for f in files)
    assert "Lisbon" in files[0].content  # the passage most relevant to the task, first
    runner, backend = make_runner(
        store, [{"plan": ["Answer"]}, {"answer": "Lisbon"}], registry=Registry([search_documents])
    )
    task_id = runner.create("Where will the retreat be?", files=files)
    assert "search_documents" in {t.name for t in runner.offered(runner.load(task_id))}
    assert (await runner.run(task_id)).status == "done"
    prompt = "\n".join(m.content for m in backend.requests[0].messages)
    assert "These 40 files are too long to show here, so they are indexed" in prompt
    assert "- minutes_meeting-00.md (text, " in prompt
    assert "The board chose Lisbon for the retreat." in prompt
    assert runner.artifacts(task_id).names() == []  # their text is the index's, not copied
    assert main(["show", task_id]) == 0
    said = _said(capsys)
    assert "with minutes_meeting-00.md (text, " in said
    assert " words, indexed for search_documents)" in said


def test_indexing_a_folder_says_what_it_left_out_skipped_and_found_no_text_in(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    _write(docs / "good.md", "# Good\n\nThe tide turns at noon.\n")
    (docs / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    write_pdf(docs / "scan.pdf", ["", ""])
    (docs / "notes.docx").write_bytes(b"PK\x03\x04 a word document")
    (docs / "blob.bin").write_bytes(b"\x00\x01")

    assert main(["index", str(docs)]) == 0
    said = _said(capsys)
    assert "indexing 3 files" in said
    assert "left out 2 files of kinds the index does not read" in said
    assert "1 .docx" in said
    assert "1 .bin" in said
    assert "latin.txt is not UTF-8 text" in said
    assert f"no text in {docs / 'scan.pdf'}" in said
    assert "2 read (1 passage, " in said
    assert "0 unchanged, 1 skipped, 0 gone" in said

    assert main(["index", str(docs)]) == 0  # again: the file skipped is not "unchanged"
    assert "0 read (0 passages, 0.0 a second), 2 unchanged, 1 skipped" in " ".join(
        capsys.readouterr().out.split()
    )


def test_index_arguments_that_do_not_go_together_are_refused_and_a_long_passage_is_marked_cut(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    long = " ".join(f"filler{n}" for n in range(230)) + " The penalty is nine thousand dollars."
    _write(docs / "terms.md", f"# Terms\n\n{long}\n")
    assert main(["index", str(docs)]) == 0
    capsys.readouterr()
    for wrong, says in [
        (["--search", " "], "--search needs a query"),
        (["--search", "penalty", "-k", "0"], "at least 1, not 0"),
        (["--remove"], "nothing to remove"),
        (["--remove", str(docs), "--list"], "--remove takes files out of the index, and does"),
        (["--remove", str(docs), "--embedder", "local"], "give --embedder, --search or --list"),
    ]:
        assert main(["index", *wrong]) == 2, wrong
        assert says in _said(capsys), wrong
    with Index.open(home / "index") as index:
        assert len(index.files()) == 1  # nothing was removed

    assert main(["index", "--search", "penalty dollars", "--how", "keywords", "-k", "1"]) == 0
    said = _said(capsys)
    assert "more characters: --json gives the whole]" in said
    assert "nine thousand" not in said  # past what is shown, and said to be
    assert main(["index", "--json", "--search", "penalty dollars", "--how", "keywords"]) == 0
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["text"].endswith("The penalty is nine thousand dollars.")


def test_a_folder_given_with_a_task_skips_what_cannot_be_read_saying_so(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write(docs / "good.md", "# Good\n\nThe tide turns at noon.\n")
    (docs / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (docs / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    screen = Console(file=io.StringIO(), width=200)
    given = attachments([str(docs)], out=screen)
    assert [a.name for a in given] == ["docs_good.md"]
    said = screen.file.getvalue()  # type: ignore[attr-defined]
    assert f"skipped --file {docs / 'latin.txt'} is not UTF-8 text" in said
    assert f"skipped --file {docs / 'fake.png'}: not a PNG, JPEG or WebP picture" in said
    # Named outright, a file that cannot be read is the error: nothing is run without it.
    with pytest.raises(ConfigError, match=r"latin\.txt is not UTF-8 text"):
        attachments([str(docs / "good.md"), str(docs / "latin.txt")])
    # A folder with nothing that can be read is the error too.
    (docs / "good.md").unlink()
    with pytest.raises(ConfigError, match="no file given could be read"):
        attachments([str(docs)], out=screen)


def test_a_scan_or_a_file_of_no_text_given_with_a_task_says_why(tmp_path: Path) -> None:
    scan = write_pdf(tmp_path / "scan.pdf", ["", ""])
    with pytest.raises(ConfigError, match="its 2 pages hold no text"):
        attachments([str(scan)])
    (tmp_path / "photo.raw").write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(ConfigError, match="not UTF-8 text, nor a document"):
        attachments([str(tmp_path / "photo.raw")])


def _embeddings_api(seen: list[dict[str, object]], status: int = 200) -> httpx.MockTransport:
    """An embeddings API (OpenAI's wire format) whose vectors count a few words."""
    vocabulary = ["ferry", "boat", "harbour", "rent", "deposit", "cat", "kitten", "water"]

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(
            {"path": request.url.path, "auth": request.headers.get("authorization"), **body}
        )
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "no"}})
        data = [
            {"index": i, "embedding": [text.lower().count(w) + 0.01 for w in vocabulary]}
            for i, text in enumerate(body["input"])
        ]
        return httpx.Response(200, json={"data": list(reversed(data)), "model": body["model"]})

    return httpx.MockTransport(answer)


def test_an_index_can_embed_through_an_api_and_keeps_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_DOCUMENTS_API_KEY", "k-test")
    seen: list[dict[str, object]] = []
    uri = "openai-compatible:http://embeddings.test/v1#tiny-embed"
    docs = tmp_path / "docs"
    _write(docs / "ferries.md", "# Ferries\n\nThe ferry leaves the harbour at six.\n")
    _write(docs / "lease.md", "# Lease\n\nThe deposit is two months of rent.\n")
    embedder = ApiEmbedder(uri, transport=_embeddings_api(seen))
    with Index.open(tmp_path / "index", embedder) as index:
        index.add([docs])
        [hit] = index.search("boat harbour", 1, "vectors")
        assert Path(hit.path).name == "ferries.md"
    assert seen[0]["path"] == "/v1/embeddings"
    assert (seen[0]["model"], seen[0]["auth"]) == ("tiny-embed", "Bearer k-test")
    with pytest.raises(ConfigError, match="made with the embedder openai-compatible"):
        Index.open(tmp_path / "index", "local")
    refused = ApiEmbedder(uri, transport=_embeddings_api([], status=401))
    with pytest.raises(ConfigError, match="refused the key"):
        refused.embed(["x"])
    failing = ApiEmbedder(uri, transport=_embeddings_api([], status=503))
    with pytest.raises(StoreError) as failed:
        failing.embed(["x"])
    assert failed.value.retryable
    with pytest.raises(ConfigError, match="unknown embedder"):
        ApiEmbedder("cohere:embed")


def test_a_folder_given_with_a_task_names_its_files_by_their_place_in_it(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write(docs / "a" / "index.md", "# A\n\nfirst\n")
    _write(docs / "b" / "index.md", "# B\n\nsecond\n")
    _write(docs / ".git" / "config.md", "never read\n")
    _png_file = docs / "b" / "shot.png"
    PIL.Image.new("RGB", (8, 8)).save(_png_file, "PNG")
    files = attachments([str(docs)])
    assert [(f.name, f.kind) for f in files] == [
        ("docs_a_index.md", "text"),
        ("docs_b_index.md", "text"),
        ("docs_b_shot.png", "image"),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no file of a kind this reads"):
        attachments([str(tmp_path / "empty")])
