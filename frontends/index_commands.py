"""`agent index`: index documents for the `search_documents` tool, list what is indexed, and
try a search from the terminal."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.config import Config
from agent.effects import library_in
from agent.home import default_home
from base.words import counted
from documents.extract import kind_of
from documents.index import Index, found_files
from documents.index import Progress as IndexProgress
from frontends.screen import print_json, shown
from tools.documents import indexed

#: the most of a passage found that --search shows (a window is about 1,400 characters)
SHOWN = 1500


def add_index_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    parser = sub.add_parser(
        "index",
        parents=[common],
        help="index documents (text, Markdown, reST, HTML, PDF; folders recursively) for the "
        "search_documents tool; only what changed is read again",
        description="Index documents for the search_documents tool: each file is cut into "
        "passages, kept with their citation (file, page, section, lines), searchable by "
        "keywords (BM25) and by meaning (an offline embedder), the two fused. Indexing again "
        "reads only files that changed, and forgets files gone from a folder indexed.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to index")
    parser.add_argument("--search", metavar="QUERY", help="show the passages a search finds")
    parser.add_argument("-k", type=int, default=5, help="with --search: how many (default 5)")
    parser.add_argument(
        "--how",
        choices=("fused", "keywords", "vectors"),
        default="fused",
        help="with --search: by keywords, by meaning, or both fused (the default, as the tool)",
    )
    parser.add_argument("--list", action="store_true", help="list the files indexed")
    parser.add_argument(
        "--remove",
        action="store_true",
        help="take the files at PATH out of the index (a folder: every file indexed under "
        "it), whether or not they are still there",
    )
    parser.add_argument(
        "--embedder",
        metavar="URI",
        help="for a new index: 'local' (the bundled offline model, the default), "
        "'openai:MODEL' or 'openai-compatible:URL#MODEL' (an embeddings API); an index keeps "
        "the one it was made with",
    )


def index_command(args: argparse.Namespace, config: Config, out: Console) -> int:
    if (wrong := _wrong_arguments(args)) is not None:
        out.print(wrong)
        return 2
    if not (args.paths or args.search is not None or args.list):
        out.print(
            "nothing to do: give PATH to index, --search QUERY, --list, or --remove PATH "
            "(see --help)"
        )
        return 2
    folder = library_in(default_home())  # no store opened (a database, maybe) for a folder
    if args.paths and not args.remove:
        # The configured embedder makes a new index; only --embedder is held to an old one.
        made = indexed(folder)
        embedder = args.embedder or (None if made else config.documents.embedder or None)
        summary = _index(folder, [Path(p) for p in args.paths], out, embedder, args.json)
        if args.json and not (args.search or args.list):
            print_json(summary)
    if not indexed(folder):
        out.print(f"nothing is indexed in {folder} yet: agent index PATH")
        return 1
    with Index.open(folder) as index:
        if args.remove:
            return _remove(index, [Path(p) for p in args.paths], out, args.json)
        if args.list:
            files = index.files()
            if args.json:
                print_json([{"path": p, "passages": n} for p, n in files])
            for path, n in [] if args.json else files:
                out.print(f"{n:>6,}  {shown(path)}")
        if args.search is not None:
            started = time.perf_counter()
            hits = index.search(args.search, args.k, args.how)
            ms = (time.perf_counter() - started) * 1000
            if args.json:
                print_json([hit.__dict__ | {"cite": hit.cite} for hit in hits])
                return 0
            for n, hit in enumerate(hits, start=1):
                out.print(
                    f"[bold]{n}. {shown(f'[cite: {hit.cite}]')}[/] {shown(hit.path)} — "
                    f"{shown(hit.section)}",
                    highlight=False,
                )
                out.print(shown(hit.text[:SHOWN]), highlight=False)
                if len(hit.text) > SHOWN:
                    more = counted(len(hit.text) - SHOWN, "more character")
                    out.print(f"[dim][... {more}: --json gives the whole][/]")
                out.print()
            out.print(f"[dim]{len(hits)} of {index.count():,} passages, in {ms:.0f} ms[/]")
    return 0


def _wrong_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments given together, or None."""
    if args.search is not None and not args.search.strip():
        return "--search needs a query: words to look for"
    if args.k < 1:
        return f"-k is how many passages to show: at least 1, not {args.k}"
    if args.remove and (args.embedder or args.search is not None or args.list):
        return (
            "--remove takes files out of the index, and does nothing else: give --embedder, "
            "--search or --list without it"
        )
    if args.remove and not args.paths:
        return "nothing to remove: give the PATH of a file or folder indexed"
    return None


def _remove(index: Index, paths: list[Path], out: Console, as_json: bool) -> int:
    """Take `paths` out of `index`, saying what went."""
    files, went = index.remove(paths)  # a path with nothing indexed: the command's error
    total = index.count()
    if as_json:
        print_json({"removed": files, "passages": went, "total": total})
        return 0
    for path in files:
        out.print(f"removed {shown(path)}", highlight=False)
    out.print(
        f"{counted(len(files), 'file')} and {counted(went, 'passage')} removed; "
        f"{counted(total, 'passage')} left"
    )
    return 0


def _index(
    folder: Path, paths: list[Path], out: Console, embedder: str | None, quiet: bool
) -> dict[str, object]:
    """Index `paths` into `folder`, saying first what there is and then how it goes."""
    files, _ = found_files(paths)
    size = sum(f.stat().st_size for f in files)
    kinds = Counter(kind_of(f) or "other" for f in files)
    readable = set(files)
    others = Counter(
        f.suffix.lower() or "no extension"
        for f in found_files(paths, readable=lambda _: True)[0]
        if f not in readable
    )
    if not quiet:
        out.print(
            f"indexing {counted(len(files), 'file')} ({size / 1e6:,.1f} MB"
            + "".join(f", {n:,} {kind}" for kind, n in kinds.most_common())
            + f") into {folder}; files unchanged since the last time are skipped"
        )
        if others:
            out.print(
                f"[yellow]left out[/] {counted(others.total(), 'file')} of kinds the index does "
                "not read (it reads text, Markdown, reST, HTML and PDF): "
                + ", ".join(f"{n:,} {shown(kind)}" for kind, n in others.most_common(8))
            )
        if not files:
            out.print("[yellow]no file here is one the index reads[/]")
    with Index.open(folder, embedder) as index, indexing_bar(out, len(files), quiet) as step:
        done = index.add(paths, step)
        total = index.count()
    rate = done.passages / done.seconds if done.seconds and done.passages else 0.0
    for skipped in [] if quiet else done.skipped:
        out.print(f"[yellow]skipped[/] {shown(skipped)}")
    for empty in [] if quiet else done.empty:
        out.print(f"[yellow]no text[/] in {shown(empty)} (a scan? its pictures are not read)")
    unchanged = done.files - done.read - len(done.skipped)
    if not quiet:
        out.print(
            f"indexed {counted(done.files, 'file')} in {done.seconds:,.1f} s: {done.read:,} "
            f"read ({counted(done.passages, 'passage')}, {rate:,.1f} a second), "
            f"{unchanged:,} unchanged, {len(done.skipped):,} skipped, {done.removed:,} gone; "
            f"{counted(total, 'passage')} in all"
        )
    return {
        "files": done.files,
        "read": done.read,
        "passages": done.passages,
        "removed": done.removed,
        "skipped": list(done.skipped),
        "no_text": list(done.empty),
        "seconds": round(done.seconds, 3),
        "total": total,
    }


@contextlib.contextmanager
def indexing_bar(out: Console, files: int, quiet: bool = False) -> Iterator[IndexProgress]:
    """A bar of the files indexed so far, gone when indexing is (none when `quiet`): what
    `Index.add` is given to tell its progress."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        disable=quiet,
        transient=True,
    ) as progress:
        bar = progress.add_task("files", total=files)

        def step(path: str, n: int, total: int) -> None:
            progress.update(bar, completed=n - 1, description=shown(Path(path).name)[:40])

        yield step
