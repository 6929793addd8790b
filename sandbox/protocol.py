"""What a task's tools get of its sandbox: the `TaskSandbox` protocol.

`sandbox.container.Sandbox` (a Docker container on this host's daemon) is today's one
implementation; a container on a remote Docker host, and the deploy tool's services, are the next.
Tools and the loop name this protocol, never the Docker class, so another one plugs in without
touching them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

#: where a command's output goes as it comes: ("stdout" | "stderr", text)
OutputSink = Callable[[str, str], None]


@dataclass(frozen=True)
class ExecResult:
    """What a command did."""

    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    #: a limit the command ran into, said plainly ("out of memory: ..."), if any
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.problem is None


class TaskSandbox(Protocol):
    """A task's own isolated machine: commands, and files of its workspace."""

    #: a name people can find it by (a container's name, say)
    name: str
    #: the task's egress proxy as the runner's host reaches it, with the task's credentials:
    #: where a tool running on the host sends the task's HTTP (None: the task has no network)
    host_proxy: str | None

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109 - the command's limit, enforced in the sandbox
        on_output: OutputSink | None = None,
        workdir: str = ...,
        env: dict[str, str] | None = None,
        user: str = ...,
        record: bool = True,
        key: str | None = None,
    ) -> ExecResult:
        """Run a command (a string is given to `sh -c`); what it did. A `key` makes the run
        findable by `recorded` after the runner lost track of it."""
        ...

    async def recorded(self, key: str) -> ExecResult | Literal["not_started", "unknown"]:
        """What the command run with `key` did, read back from the sandbox's own record."""
        ...

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> str:
        """Write a file of the workspace; its full path."""
        ...

    async def read_file(self, path: str, *, max_bytes: int = ...) -> bytes:
        """Read a file of the workspace."""
        ...

    async def get_archive(self, path: str) -> bytes:
        """A tar archive of a file or directory of the workspace."""
        ...

    async def build_egress(self) -> tuple[str, dict[str, str]] | None:
        """The network a build for this task joins and its proxy settings (None: no network)."""
        ...

    def take_restart_note(self) -> str | None:
        """Once, if the sandbox was started again since its last use: what that means."""
        ...
