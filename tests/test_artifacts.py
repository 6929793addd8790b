"""The artifact store a task keeps beside its log: whole or nothing, by name, never outside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.artifacts import FolderArtifacts


def test_kept_artifacts_read_back_and_list_by_name(tmp_path: Path) -> None:
    store = FolderArtifacts(tmp_path / "task")
    assert store.names() == []  # the folder is made by the first keep
    where = store.keep("b.txt", b"two")
    store.keep("a.png", b"\x89PNG")
    store.keep("b.txt", b"three")  # in place of the first
    assert where == str(tmp_path / "task" / "b.txt")
    assert store.read("b.txt") == b"three"
    assert store.names() == ["a.png", "b.txt"]  # no partial file left behind


def test_a_missing_artifact_is_a_key_error_and_a_path_is_refused(tmp_path: Path) -> None:
    store = FolderArtifacts(tmp_path)
    (tmp_path.parent / "secret.txt").write_text("not the task's")
    with pytest.raises(KeyError):
        store.read("nothing.txt")
    for name in ("../secret.txt", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="not an artifact name"):
            store.read(name)
        with pytest.raises(ValueError, match="not an artifact name"):
            store.keep(name, b"x")
