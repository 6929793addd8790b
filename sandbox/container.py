"""One task's sandbox: a hardened container, its commands and its files.

Get one from `Sandboxes.for_task`; it lives as long as the task. Every method is async: the
Docker SDK blocks, so its calls run in threads.

    result = await sandbox.exec("pytest -q", timeout=60, on_output=print_chunk)
    await sandbox.write_file("notes.txt", b"...")
"""

from __future__ import annotations

import asyncio
import io
import json
import posixpath
import secrets
import tarfile
import time
from collections.abc import Callable, Sequence
from typing import Literal, cast

import docker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from base.errors import ErrorCode, SandboxError
from sandbox._docker import mapped
from sandbox._output import Output
from sandbox._problems import (
    COUNTERS,
    FORK_REFUSED,
    disk_full,
    limit_counted,
    out_of_memory,
    parse_counters,
    past_timeout,
    process_limit,
)
from sandbox._records import READ_RECORD, limits_said, tag
from sandbox.limits import SandboxLimits
from sandbox.protocol import ExecResult, OutputSink

WORKSPACE = "/workspace"
#: a volume agent-init watches (the archive API cannot write a container's tmpfs mounts)
CONTROL = "/run/agent"
REAP_DIR = CONTROL + "/reap"
REAPED_DIR = CONTROL + "/reaped"
#: how long agent-init may take to end a command (a fork bomb on a loaded machine takes longest)
REAP_LIMIT = 15.0
#: who commands run as; the browser runs as BROWSER_USER, agent-init as root
USER = "1000:1000"
BROWSER_USER = "browser"
#: a command gets this long after SIGKILL for its output stream to close
KILL_GRACE = 1.5


class _NotYet(Exception):
    """agent-init has not said it is done yet."""


class WorkspaceError(SandboxError):
    """A file of the workspace cannot be read or written as asked (missing, too large, outside
    the workspace): the caller's mistake, not the sandbox's. `code` says which."""


class Sandbox:
    """A task's container. Constructed by `Sandboxes`; does no I/O until a method is awaited."""

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        name: str,
        limits: SandboxLimits,
        *,
        fresh: bool,
        restarted: bool = False,
    ) -> None:
        self._client = client
        self.id = container_id
        self.name = name
        self.limits = limits
        #: environment every command gets (the egress proxy's address, for a proxied sandbox)
        self.env: dict[str, str] = {}
        #: where the host reaches a browser running in this sandbox (proxied sandboxes only)
        self.devtools: str | None = None
        #: the task's egress proxy as this host reaches it, with the task's credentials: where
        #: a tool that runs on the host sends the task's requests (proxied sandboxes only)
        self.host_proxy: str | None = None
        # Counters of limit hits (OOM kills, refused forks) are compared with what they were
        # before; a fresh container starts at zero, one found after a restart is read first.
        self._counters: dict[str, int] | None = {} if fresh else None
        #: said once to the task (see `take_restart_note`) when the container had stopped
        self._restart_note = (
            "the sandbox had stopped (Docker or the machine restarted) and was started again: "
            f"its {WORKSPACE} and /tmp are empty (they are size-capped memory, and went with it), "
            "and nothing it was running is left"
            if restarted
            else None
        )

    async def build_egress(self) -> tuple[str, dict[str, str]] | None:
        """For a build made for this task (a deploy's): the network to build on, the sandbox's
        own, where the only way out is the task's egress proxy, and the proxy settings that take
        a download there. None for a sandbox with no network: the build gets none either."""
        if self.limits.network != "proxy" or not self.env:
            return None

        def network() -> str:
            attrs = self._client.api.inspect_container(self.id)
            return str(next(iter(attrs["NetworkSettings"]["Networks"])))

        with mapped(f"reading the network of sandbox {self.name}"):
            name = await asyncio.to_thread(network)
        proxy = {k: v for k, v in self.env.items() if k.lower() in ("http_proxy", "https_proxy")}
        return name, proxy

    def take_restart_note(self) -> str | None:
        """What the task must be told about its sandbox having been started again, the first
        time it is asked; None after that, and for a sandbox that never stopped."""
        note, self._restart_note = self._restart_note, None
        return note

    def note_made_again(self, note: str) -> None:
        """Have the task told `note` (how its sandbox was made again, and what was lost) at
        its next call, which is not run, as after a restart."""
        self._restart_note = note

    def __repr__(self) -> str:
        return f"<Sandbox {self.name} {self.id[:12]}>"

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        timeout: float,  # noqa: ASYNC109 - the command's limit, enforced in the container
        on_output: OutputSink | None = None,
        workdir: str = WORKSPACE,
        env: dict[str, str] | None = None,
        user: str = USER,
        record: bool = True,
        key: str | None = None,
    ) -> ExecResult:
        """Run a command (a string is given to `sh -c`) as the sandbox's user; return what it
        printed and its exit code. A command past `timeout` is killed with everything it started,
        and the result says so. `user` is the sandbox's user but for the runtime's own commands
        (the browser's). A recorded command (the default) leaves in the sandbox what it printed
        and how it ended, which `recorded(key)` reads back after a crash of the runner. Raises
        `SandboxError` if the container cannot be used."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        if self._counters is None:
            self._counters = await self._read_counters()
        # Named by when it started (records are kept in that order) and by the call's key.
        token = f"{time.time_ns():020d}-{tag(key) if key is not None else secrets.token_hex(8)}"
        extra = {"AGENT_EXEC": token}
        if record:
            argv = ["agent-exec", *argv]
            extra["AGENT_DEADLINE"] = f"{time.time() + timeout:.3f}"
        output = Output(on_output, asyncio.get_running_loop())
        started = time.perf_counter()
        stream = asyncio.ensure_future(
            asyncio.to_thread(
                self._stream,
                argv,
                {**self.env, **(env or {}), **extra},
                workdir,
                output,
                user,
            )
        )
        timed_out = False
        try:
            exec_id = await asyncio.wait_for(asyncio.shield(stream), timeout)
        except TimeoutError:
            timed_out = True
            exec_id = await self._end_overdue(stream, token)
        exit_code = await asyncio.to_thread(self._exit_code, exec_id)
        seconds = time.perf_counter() - started
        stderr, said = limits_said(output.text("stderr"))
        problem = await self._problem(
            token, exit_code, stderr, said, timed_out=timed_out, limit=timeout
        )
        return ExecResult(exit_code, output.text("stdout"), stderr, seconds, timed_out, problem)

    async def _end_overdue(self, stream: asyncio.Future[str], token: str) -> str:
        """Kill a command past its timeout; return its exec id once its stream has closed.
        Raises `SandboxError` if it cannot be killed."""
        reaped = await self._kill(token)
        try:
            # Once agent-init says it is done, the stream closes at once; if it never says
            # so, the grace is all the stream gets.
            exec_id = await asyncio.wait_for(
                asyncio.shield(stream), KILL_GRACE if not reaped else REAP_LIMIT
            )
        except TimeoutError:
            # agent-init did not say it was done in time: kill from a new process as well, if
            # one can still start.
            await asyncio.to_thread(
                self._run_quick, f"agent-init reap {token}", "stopping a command", "0:0"
            )
            try:
                exec_id = await asyncio.wait_for(asyncio.shield(stream), KILL_GRACE)
            except TimeoutError:
                raise SandboxError(
                    f"sandbox {self.name}: a command outlived its timeout and could not be "
                    f"killed (`agent sandbox prune` after the task ends removes it)",
                    code=ErrorCode.SANDBOX_UNRESPONSIVE,
                ) from None
        return exec_id

    async def _problem(
        self,
        token: str,
        exit_code: int | None,
        stderr: str,
        said: tuple[int, int] | None,
        *,
        timed_out: bool,
        limit: float,
    ) -> str | None:
        """The limit a command ran into, or its timeout, said plainly; None if neither."""
        problem = None
        hit_pids = any(sign in stderr for sign in FORK_REFUSED) or (said is not None and said[0])
        if hit_pids and not timed_out:
            # What it left running (a fork bomb's children) would hold the limit for every later
            # command: end it all.
            await self._kill(token)
        if said is not None and not timed_out:
            # agent-exec saw a limit hit (however quietly the command ended): say which.
            self._counters = await self._read_counters()
            problem = out_of_memory(self.limits) if said[1] else process_limit(self.limits)
        elif timed_out or hit_pids or exit_code not in (0, 1, 2):
            problem = await self._diagnose()
            if problem is None and hit_pids:
                # The counters could not be read (the limit still held), but the refusal shows.
                problem = process_limit(self.limits)
        if problem is None and "No space left on device" in stderr:
            problem = disk_full(self.limits)
        return past_timeout(problem, limit) if timed_out else problem

    def _stream(
        self, argv: list[str], env: dict[str, str], workdir: str, output: Output, user: str
    ) -> str:
        api = self._client.api
        with mapped(f"running a command in sandbox {self.name}"):
            exec_id: str = api.exec_create(
                self.id, argv, stdout=True, stderr=True, environment=env, workdir=workdir, user=user
            )["Id"]
            for out, err in api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    output.add("stdout", out)
                if err:
                    output.add("stderr", err)
        output.add("stdout", b"", final=True)
        output.add("stderr", b"", final=True)
        return exec_id

    def _exit_code(self, exec_id: str) -> int | None:
        with mapped(f"reading a command's exit code in sandbox {self.name}"):
            code = self._client.api.exec_inspect(exec_id)["ExitCode"]
        return int(code) if code is not None else None

    async def _kill(self, token: str) -> bool:
        """Have agent-init (started before the command, so able to act even when no process can
        be started) kill every process the command started; return whether it said it had done
        so within `REAP_LIMIT` seconds (a later command then starts with the slots freed)."""
        api = self._client.api

        def kill() -> None:
            api.put_archive(self.id, REAP_DIR, _tar({token: b""}))
            api.kill(self.id, signal="SIGUSR1")

        def reaped() -> None:
            try:
                api.get_archive(self.id, f"{REAPED_DIR}/{token}")
            except docker.errors.NotFound:
                raise _NotYet from None

        with mapped(f"stopping a command in sandbox {self.name}"):
            await asyncio.to_thread(kill)
            # agent-init puts the token in REAPED_DIR when it is done: a file Docker reads from
            # outside the container, which needs no process in it (a fork bomb leaves none).
            waiting = AsyncRetrying(
                stop=stop_after_delay(REAP_LIMIT),
                wait=wait_fixed(0.05),
                retry=retry_if_exception_type(_NotYet),
                reraise=True,
            )
            try:
                async for attempt in waiting:
                    with attempt:
                        await asyncio.to_thread(reaped)
            except _NotYet:
                return False
        return True

    async def _read_counters(self) -> dict[str, int]:
        """The container's count of OOM kills and refused forks."""
        result = await asyncio.to_thread(self._run_quick, COUNTERS, "reading the limits")
        return parse_counters(result)

    def _run_quick(self, command: str, what: str, user: str = USER) -> str:
        return self._run_quick_argv(["sh", "-c", command], what, user)

    def _run_quick_argv(self, argv: list[str], what: str, user: str = USER) -> str:
        """Run an unrecorded command of the runtime's, with no limit; return its stdout."""
        api = self._client.api
        with mapped(f"{what} in sandbox {self.name}"):
            exec_id = api.exec_create(self.id, argv, user=user, stderr=False)["Id"]
            output = api.exec_start(exec_id)
        return output.decode(errors="replace") if isinstance(output, bytes) else ""

    async def _diagnose(self) -> str | None:
        """Which of the memory and process limits a command that was killed or timed out ran
        into, if any (by the container's counters)."""
        before = self._counters or {}
        after = await self._read_counters()
        self._counters = after
        return limit_counted(before, after, self.limits)

    async def recorded(self, key: str) -> ExecResult | Literal["not_started", "unknown"]:
        """What the last command run with `key` did, read back from its record in the sandbox
        (after a crash of the runner that ran it). A command still running is waited for until
        its timeout, then killed. "not_started" if no command with that key started here;
        "unknown" if the sandbox keeps no records (it was started again since: they went with
        its /tmp). Raises `SandboxError` if the container cannot be used."""
        answer = await asyncio.to_thread(
            self._run_quick_argv,
            ["python3", "-c", READ_RECORD, tag(key)],
            "reading a command's record",
        )
        try:
            found = json.loads(answer)
        except ValueError:
            raise SandboxError(
                f"sandbox {self.name}: a command's record could not be read: {answer[-500:]!r}",
                code=ErrorCode.SANDBOX_UNRESPONSIVE,
            ) from None
        if found["state"] in ("not_started", "unknown"):
            return cast(Literal["not_started", "unknown"], found["state"])
        timed_out = found["state"] == "running"
        if timed_out:
            await self._kill(found["token"])
        stdout, stderr = found["stdout"], found["stderr"]
        code = found["status"]
        problem = None
        if timed_out:
            problem = "it was still running at its timeout, and was killed"
        elif code is None:
            problem = "it ended before it finished (killed, or the sandbox restarted)"
        return ExecResult(code, stdout, stderr, found["seconds"], timed_out, problem)

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> str:
        """Write a file in the workspace (parent directories are made); return its full path.
        Raises `WorkspaceError` for a path outside the workspace, a parent that is not a
        directory, or a full workspace."""
        full = workspace_path(path)
        folder, name = posixpath.split(full)
        await self._make_folder(folder)

        def put() -> None:
            self._client.api.put_archive(self.id, folder, _tar({name: data}, mode=mode))

        try:
            await self._put(put, full)
        except WorkspaceError as exc:
            if exc.code == ErrorCode.DISK_FULL:
                # Docker leaves an empty file behind, owned by root: leave nothing instead.
                await self.exec(["rm", "-f", "--", full], timeout=30, record=False)
            raise
        return full

    async def _make_folder(self, folder: str) -> None:
        """Make `folder`, and check that it is in the workspace once symlinks are followed (a
        link in the workspace may point anywhere in the container)."""
        made = await self.exec(
            ["sh", "-c", 'mkdir -p -- "$1" && realpath -- "$1"', "sh", folder],
            timeout=30,
            record=False,
        )
        if made.exit_code != 0:
            raise WorkspaceError(
                made.stderr.strip().removeprefix("mkdir: ") or f"cannot make {folder}",
                code=ErrorCode.NOT_A_DIRECTORY,
            )
        real = made.stdout.strip()
        if real != WORKSPACE and not real.startswith(WORKSPACE + "/"):
            raise WorkspaceError(
                f"{folder} leads to {real} (through a symbolic link): files are written in "
                f"{WORKSPACE} only",
                code=ErrorCode.OUTSIDE_WORKSPACE,
            )

    async def _put(self, put: Callable[[], object], full: str) -> None:
        """Run a put_archive call; what it refuses because of the path or space is the caller's
        to correct."""
        with mapped(f"writing {full} in sandbox {self.name}"):
            try:
                await asyncio.to_thread(put)
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc).lower()
                if "no space left" in text:
                    raise WorkspaceError(disk_full(self.limits), code=ErrorCode.DISK_FULL) from None
                if "read-only" in text:  # a link swapped in after the check above
                    raise WorkspaceError(
                        f"{full}: leads outside the workspace, where nothing can be written",
                        code=ErrorCode.OUTSIDE_WORKSPACE,
                    ) from None
                if "not a directory" in text or "is a directory" in text:
                    raise WorkspaceError(
                        f"{full}: a file is in the way of a directory, or the other way round",
                        code=ErrorCode.NOT_A_DIRECTORY,
                    ) from None
                raise

    async def read_file(self, path: str, *, max_bytes: int = 10 * 1024 * 1024) -> bytes:
        """A file's bytes. Raises `WorkspaceError` (code `not_found`, `not_a_file`, `too_large`)."""
        full = workspace_path(path)

        def get() -> bytes:
            try:
                chunks, stat = self._client.api.get_archive(self.id, full)
            except docker.errors.NotFound:
                raise WorkspaceError(f"no such file: {full}", code=ErrorCode.NOT_FOUND) from None
            size = int((stat or {}).get("size", 0))
            if size > max_bytes:
                raise WorkspaceError(
                    f"{full} is {size} bytes; at most {max_bytes} are read",
                    code=ErrorCode.TOO_LARGE,
                )
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
                member = archive.next()
                if member is None or not member.isfile():
                    raise WorkspaceError(f"{full} is not a file", code=ErrorCode.NOT_A_FILE)
                extracted = archive.extractfile(member)
                assert extracted is not None
                return extracted.read()

        with mapped(f"reading {full} in sandbox {self.name}"):
            return await asyncio.to_thread(get)

    async def put_archive(self, folder: str, archive: bytes) -> None:
        """Unpack a tar archive into a folder of the workspace (to put a whole directory in)."""
        full = workspace_path(folder)
        await self._make_folder(full)
        await self._put(lambda: self._client.api.put_archive(self.id, full, archive), full)

    async def get_archive(self, path: str) -> bytes:
        """A tar archive of a file or directory of the workspace (to take a directory out).
        Raises `WorkspaceError` (code `not_found`)."""
        full = workspace_path(path)

        def get() -> bytes:
            try:
                chunks, _ = self._client.api.get_archive(self.id, full)
            except docker.errors.NotFound:
                raise WorkspaceError(
                    f"no such file or folder: {full}", code=ErrorCode.NOT_FOUND
                ) from None
            return b"".join(chunks)

        with mapped(f"copying {full} out of sandbox {self.name}"):
            return await asyncio.to_thread(get)


def workspace_path(path: str) -> str:
    """The absolute path of `path` in the workspace (relative paths start there). Raises
    `SandboxError` (code `outside_workspace`) for a path that leaves it."""
    full = posixpath.normpath(posixpath.join(WORKSPACE, path))
    if full != WORKSPACE and not full.startswith(WORKSPACE + "/"):
        raise WorkspaceError(
            f"{path}: files are read and written in {WORKSPACE} only",
            code=ErrorCode.OUTSIDE_WORKSPACE,
        )
    return full


def _tar(files: dict[str, bytes], *, mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            info.uid = info.gid = 1000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
