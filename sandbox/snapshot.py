"""A snapshot of a sandbox's workspace, and putting one into another sandbox.

On the Temporal engine a task's sandbox lives on one host. After each call that may change its
files, the worker keeps a snapshot of /workspace with the task's artifacts (which every worker
reaches); when the host is lost, the sandbox is made again on another host from the last one.
What ran in the sandbox (processes, /tmp) is not in a snapshot. A snapshot can be kept without
the values of the task's secrets: each file's content and name is redacted on its own, so the
archive stays whole.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import tarfile
from typing import Protocol

from sandbox.container import WORKSPACE, Sandbox

#: the artifact a task's last workspace snapshot is kept as
SNAPSHOT = "workspace-snapshot.tar"

_TOP = WORKSPACE.strip("/")


class Redacts(Protocol):
    """Takes values out of what it is given (the task's secrets: `tools.secrets`)."""

    def data(self, data: bytes) -> bytes: ...

    def text(self, text: str) -> str: ...


async def snapshot(box: Sandbox, redact: Redacts | None = None) -> bytes:
    """The files of `box`'s workspace, as a tar archive of paths relative to it (without
    `redact`'s values, given one). The archive is rewritten in a thread."""
    archive = await box.get_archive(".")
    return await asyncio.to_thread(workspace_relative, archive, redact)


async def restore(box: Sandbox, archive: bytes) -> None:
    """Put a snapshot's files into `box`'s workspace. Raises `SandboxError` (a full workspace
    is `WorkspaceError`)."""
    await box.put_archive(".", archive)


def workspace_relative(archive: bytes, redact: Redacts | None = None) -> bytes:
    """`archive` (Docker's, whose names start with "workspace/") with names relative to the
    workspace, and each file's content and name without `redact`'s values; a name that would
    leave the workspace is dropped."""
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
            member.name = redact.text(name) if redact is not None else name
            content = source.extractfile(member) if member.isfile() else None
            if content is not None and redact is not None:
                data = redact.data(content.read())
                member.size = len(data)
                content = io.BytesIO(data)
            copy.addfile(member, content)
    return out.getvalue()


def _inside(name: str) -> str | None:
    """`name` relative to the workspace, or None for the workspace itself or a path out of it."""
    if not name.startswith(_TOP + "/"):
        return None
    relative = posixpath.normpath(name[len(_TOP) + 1 :])
    if relative.startswith(("/", "..")) or relative == ".":
        return None
    return relative
