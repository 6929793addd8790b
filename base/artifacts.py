"""What a task keeps beside its log (the files given with it, screenshots, the whole of a long
output): the `ArtifactStore` protocol, and `FolderArtifacts`, which keeps them in a folder.

Tools and the loop name the protocol; `base.bucket_artifacts` keeps them in an S3-compatible
bucket, for workers on many machines. `Artifacts` gives a task's store, by task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class ArtifactStore(Protocol):
    """A task's kept files, by name (a name has no folders)."""

    def keep(self, name: str, data: bytes) -> str:
        """Keep `data` as `name`, in place of any of that name, whole or not at all; where it
        is, as a person would find it."""
        ...

    def read(self, name: str) -> bytes:
        """The artifact `name`. Raises `KeyError` if the task has none of that name."""
        ...

    def names(self) -> list[str]:
        """The names of the task's artifacts, sorted."""
        ...


class FolderArtifacts:
    """Artifacts as the files of one folder, made by whoever keeps something first."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, name: str, data: bytes) -> str:
        path = self._path(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Whole or not at all: a crash leaves a hidden partial file, never a cut artifact.
        partial = self.folder / f".{name}.partial"
        partial.write_bytes(data)
        partial.replace(path)
        return str(path)

    def read(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(name) from None

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if not p.name.startswith("."))

    def _path(self, name: str) -> Path:
        return self.folder / check_name(name)


#: a task's artifacts, given its id
Artifacts = Callable[[str], ArtifactStore]


def folder_artifacts(root: Path) -> Artifacts:
    """Each task's artifacts in a folder of its own under `root`."""
    return lambda task_id: FolderArtifacts(root / task_id)


def check_name(name: str) -> str:
    """`name`, if it names an artifact. Raises `ValueError` for one with folders or hidden."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not an artifact name (names have no folders)")
    return name
