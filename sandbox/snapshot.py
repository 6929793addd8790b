"""A snapshot of a sandbox's workspace, and putting one into another sandbox.

On the Temporal engine a task's sandbox lives on one host. After each call that may change its
files, the worker keeps a snapshot of /workspace with the task's artifacts (which every worker
reaches); when the host is lost, the sandbox is made again on another host from the last one.
What ran in the sandbox (processes, /tmp) is not in a snapshot.
"""

from __future__ import annotations

import io
import posixpath
import tarfile

from sandbox.container import WORKSPACE, Sandbox

#: the artifact a task's last workspace snapshot is kept as
SNAPSHOT = "workspace-snapshot.tar"

_TOP = WORKSPACE.strip("/")


async def snapshot(box: Sandbox) -> bytes:
    """The files of `box`'s workspace, as a tar archive of paths relative to it."""
    return workspace_relative(await box.get_archive("."))


async def restore(box: Sandbox, archive: bytes) -> None:
    """Put a snapshot's files into `box`'s workspace. Raises `SandboxError` (a full workspace
    is `WorkspaceError`)."""
    await box.put_archive(".", archive)


def workspace_relative(archive: bytes) -> bytes:
    """`archive` (Docker's, whose names start with "workspace/") with names relative to the
    workspace; a name that would leave it is dropped."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as source,
        tarfile.open(fileobj=out, mode="w") as copy,
    ):
        for member in source:
            name = _inside(member.name)
            if name is None:
                continue
            if member.islnk():  # a hard link names another member of the archive
                target = _inside(member.linkname)
                if target is None:
                    continue
                member.linkname = target
            member.name = name
            copy.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def _inside(name: str) -> str | None:
    """`name` relative to the workspace, or None for the workspace itself or a path out of it."""
    if not name.startswith(_TOP + "/"):
        return None
    relative = posixpath.normpath(name[len(_TOP) + 1 :])
    if relative.startswith(("/", "..")) or relative == ".":
        return None
    return relative
