"""The files given with a task (`--file PATH`, `@path` in a session): text, Markdown, reST, HTML,
PDF and images (PNG, JPEG, WebP), and folders of them (at any depth), read now into what the
model is given. An image goes to a model that sees as a picture (made smaller first if it is
over what a task's log keeps of one); a model that cannot see is told only what it is.

A file's text is shown to the model whole when all the task's files fit in `SHOWN_AT_MOST`
characters. Past that nothing is cut silently: every file is indexed (`agent index`'s index) and
the model is told which were, how long each is, that `search_documents` searches them, and is
given first the passages most relevant to the task.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import PIL.Image
from rich.console import Console

from agent.events import Attachment
from agent.home import default_home
from base.errors import ConfigError
from base.images import MAX_BYTES, Image, MediaType
from base.words import counted
from documents import media
from documents.extract import kind_of, pages
from documents.index import Index, found_files
from frontends.index_commands import indexing_bar
from frontends.screen import shown
from tools.documents import indexed
from tools.documents import shown as shown_hits

#: the most characters of text a task's documents may hold and still be shown (each one
#: shortened past MAX_FILE_SHOWN, the rest read with read_artifact) rather than indexed
SHOWN_AT_MOST = 64_000
#: the most files one task may be given
MOST_FILES = 2_000
#: the passages most relevant to the task given first, when the files are indexed
FIRST_PASSAGES = 5
#: the most bytes of pictures one task may be given: they are kept in its log (and, on the
#: Temporal engine, travel in payloads that may not pass 2 MB)
MOST_PICTURE_BYTES = 1_200_000
_T = TypeVar("_T")
IMAGE_TYPES: dict[str, MediaType] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


@dataclass(frozen=True)
class _Read:
    path: Path
    name: str
    kind: str
    text: str
    pages: int | None


def attachments(
    paths: Sequence[str],
    *,
    task: str = "",
    library: Path | None = None,
    out: Console | None = None,
    transcriber: str = "local",
    embedder: str = "",
) -> tuple[Attachment, ...]:
    """The files at `paths`, read now (a folder's files recursively, a summary said first).
    When they do not fit, they are indexed into `library`. Raises `ConfigError` for a path
    that cannot be read, two files of one name, or too many files."""
    named = _files(paths, out)

    def kept(read: Callable[[Path, str], _T], kind: Callable[[Path], bool]) -> list[_T]:
        """`read` of each file of `kind`; a folder's file that cannot be read is skipped (said),
        one named outright is the error."""
        done = []
        for path, name, outright in named:
            if not kind(path):
                continue
            try:
                done.append(read(path, name))
            except ConfigError as exc:
                if outright:
                    raise
                if out is not None:
                    out.print(f"[yellow]skipped[/] {shown(str(exc))}")
        return done

    pictures = kept(_picture, lambda p: _kind(p) == "image")
    pictures += kept(
        lambda p, n: _recording(p, n, out, transcriber), lambda p: media.kind_of(p) is not None
    )
    read = kept(_read, lambda p: _kind(p) not in ("image", "audio", "video"))
    files = [r.path for r in read]
    picture_bytes = sum(len(i.data) * 3 // 4 for a in pictures for i in a.images)
    if picture_bytes > MOST_PICTURE_BYTES:
        raise ConfigError(
            f"the pictures given (images, a video's frames) come to {picture_bytes:,} bytes, more "
            f"than the {MOST_PICTURE_BYTES:,} a task keeps in its log: give fewer, or smaller"
        )
    if named and not (read or pictures):
        raise ConfigError("--file: no file given could be read (each is said above)")
    names: set[str] = set()
    for name in [*(r.name for r in read), *(p.name for p in pictures)]:
        if name in names:
            raise ConfigError(
                f"two files named {name!r} given with --file: give the folders that hold them "
                "instead (a folder's files are named by their path in it), or one of them "
                "copied under another name"
            )
        names.add(name)
    total = sum(len(r.text) for r in read)
    if total <= SHOWN_AT_MOST:
        return tuple(
            Attachment(name=r.name, content=r.text, kind=r.kind, pages=r.pages) for r in read
        ) + tuple(pictures)
    if library is None:
        raise ConfigError(
            f"the files given hold {total:,} characters, more than the {SHOWN_AT_MOST:,} shown "
            "whole, and this runner has no index to put them in"
        )
    if out is not None:
        out.print(
            f"the files hold {total:,} characters, more than the {SHOWN_AT_MOST:,} a task is "
            f"shown: indexing them in {shown(str(library))} for search_documents"
        )
    with (
        Index.open(library, None if indexed(library) else embedder or None) as index,
        indexing_bar(out or Console(quiet=True), len(files), quiet=out is None) as step,
    ):
        index.add(files, step)
        first = shown_hits(index.search(task, FIRST_PASSAGES)) if task else ""
    return tuple(
        Attachment(
            name=r.name,
            content=first if n == 0 else "",
            kind=r.kind,
            pages=r.pages,
            indexed=True,
            words=len(r.text.split()),
        )
        for n, r in enumerate(read)
    ) + tuple(pictures)


def _kind(path: Path) -> str | None:
    """What a file found in a folder is read as; None for one left out."""
    if path.suffix.lower() in IMAGE_TYPES:
        return "image"
    return media.kind_of(path) or kind_of(path)


def _files(paths: Sequence[str], out: Console | None) -> list[tuple[Path, str, bool]]:
    """The files at `paths` (a folder's, at any depth), each with the name it is given by
    (a folder's files by their path in it: `docs_a_index.md`) and whether it was named outright
    (not found in a folder); a folder summarised first."""
    files: list[tuple[Path, str, bool]] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found, _ = found_files([path], lambda p: _kind(p) is not None)
            if not found:
                raise ConfigError(f"--file {given}: the folder holds no file of a kind this reads")
            if out is not None:
                kinds = Counter(_kind(f) for f in found)
                size = sum(f.stat().st_size for f in found)
                out.print(
                    f"--file {shown(given)}: {len(found):,} files, {size / 1e6:,.1f} MB ("
                    + ", ".join(f"{n:,} {kind}" for kind, n in kinds.most_common())
                    + ")"
                )
            root = path.resolve()
            files += [(f, _name(Path(root.name, *f.relative_to(root).parts)), False) for f in found]
        elif path.is_file():
            files.append((path, _name(Path(path.name)), True))
        else:
            raise ConfigError(f"--file {given}: no such file or folder")
    if len(files) > MOST_FILES:
        raise ConfigError(
            f"--file gives {len(files):,} files, more than {MOST_FILES:,}: index them with "
            "`agent index PATH` and ask the task to search them"
        )
    return files


def _read(path: Path, name: str) -> _Read:
    """A file's text as the model reads it: a PDF's pages marked [page N]."""
    kind = kind_of(path)
    try:
        if kind is None:  # a file of another name, given outright: read if it is text
            return _Read(path, name, "text", path.read_bytes().decode("utf-8"), None)
        read = pages(path)
    except UnicodeDecodeError:
        raise ConfigError(f"--file {path} is not UTF-8 text, nor a document this reads") from None
    except OSError as exc:
        raise ConfigError(f"--file {path}: {exc.strerror or exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"--file {exc}") from exc
    if kind != "pdf":
        return _Read(path, name, kind, read[0].text, None)
    if not any(p.text.strip() for p in read):
        raise ConfigError(
            f"--file {path}: its {len(read)} pages hold no text (a scan, with no text layer: "
            "this reads no scans)"
        )
    text = "\n\n".join(f"[page {p.number}]\n{p.text}" for p in read)
    return _Read(path, name, kind, text, len(read))


def _picture(path: Path, name: str) -> Attachment:
    """An image as the model is given it: its picture, and what it is in words."""
    try:
        data = path.read_bytes()
        with PIL.Image.open(io.BytesIO(data)) as picture:
            picture.load()
            width, height = picture.size
            made_smaller = len(data) > MAX_BYTES
            if made_smaller:
                data = _smaller(picture)
    except PIL.UnidentifiedImageError:
        raise ConfigError(f"--file {path}: not a PNG, JPEG or WebP picture this reads") from None
    except (OSError, PIL.Image.DecompressionBombError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"--file {path}: not a picture this reads ({why})") from exc
    media = "image/jpeg" if made_smaller else IMAGE_TYPES[path.suffix.lower()]
    said = (
        f"a picture, {width}x{height} pixels, given with the task: shown to a model that can "
        "see pictures, and not a file in the workspace"
        + (" (made smaller to be sent)" if made_smaller else "")
    )
    return Attachment(name=name, content=said, kind="image", images=(Image.of(data, media),))


def _recording(path: Path, name: str, out: Console | None, transcriber: str) -> Attachment:
    """A recording as the model is given it: what is said in it, with times (transcribed on
    this machine); a video's key frames too, as pictures."""
    cache = default_home() / "models"
    started = time.perf_counter()
    where = "on this machine" if transcriber == "local" else f"by {transcriber}"
    if out is not None:  # it takes about half as long as the sound lasts, on 2 cores
        out.print(f"--file {shown(path.name)}: transcribing its sound {where}...")
    transcript: media.Transcript | None
    try:
        if media.kind_of(path) == "audio":
            transcript = media.transcribe(path, cache, transcriber)
            frames: tuple[bytes, ...] = ()
            times: tuple[float, ...] = ()
        else:
            seen = media.video(path, cache, transcriber)
            transcript, frames, times = seen.transcript, seen.frames, seen.times
    except ConfigError as exc:
        raise ConfigError(f"--file {exc}") from exc
    heard = (
        f"its sound ({transcript.duration:.1f} s, {transcript.language}) transcribed {where}:"
        f"\n{transcript.text() or '(no speech)'}"
        if transcript is not None
        else "it has no sound"
    )
    if out is not None:
        rate = f", real-time factor {transcript.real_time_factor:.2f}" if transcript else ""
        out.print(f"--file {shown(path.name)}: read in {time.perf_counter() - started:.1f} s{rate}")
    if media.kind_of(path) == "audio":
        return Attachment(name=name, content=f"a recording; {heard}", kind="audio")
    return Attachment(
        name=name,
        content=f"a video; its {counted(len(frames), 'key frame')} are the pictures given"
        + (f", in order, at {', '.join(f'{t:.1f}' for t in times)} s" if times else "")
        + f"; {heard}",
        kind="video",
        images=tuple(Image.of(f, "image/jpeg") for f in frames),
    )


def _smaller(picture: PIL.Image.Image) -> bytes:
    """`picture` as a JPEG of at most MAX_BYTES: smaller and smaller until it fits."""
    rgb = picture.convert("RGB")
    side = 1600
    while True:
        copy = rgb.copy()
        copy.thumbnail((side, side))
        out = io.BytesIO()
        copy.save(out, "JPEG", quality=80)
        if out.tell() <= MAX_BYTES or side <= 200:
            return out.getvalue()
        side = side * 3 // 4


def _name(path: Path) -> str:
    """The artifact's name: the file's (a folder's file's, its path there, `/` as `_`), never
    hidden (.env is kept as _env)."""
    name = "_".join(path.parts)[-200:]
    return "_" + name.lstrip(".") if name.startswith(".") else name
