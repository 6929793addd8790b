"""Tools that act inside the task's sandbox: commands, Python, and the files of its workspace.

Each runs in the task's own container (see `sandbox/`): no network unless the task was given
allowed domains, no host files, memory, processes and disk capped. A command's output streams to
the terminal as it runs. Paths are in /workspace (relative ones start there); a path that leaves
it is refused.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from pydantic import Field

from base.errors import ErrorCode
from sandbox.container import WorkspaceError, workspace_path
from sandbox.protocol import ExecResult, TaskSandbox
from tools.registry import Registry
from tools.tool import CannotTell, ToolContext, ToolError, ToolResult, tool

#: what the model is shown of each of stdout and stderr: the head and the tail
SHOWN = 8000
MAX_TIMEOUT = 600.0
#: the tool's own limit: the longest command, its kill, and the Docker calls around it
_TOOL_TIMEOUT = MAX_TIMEOUT + 30

Seconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]


async def task_sandbox(ctx: ToolContext, *, for_a_call: bool = True) -> TaskSandbox:
    """The task's sandbox. The first call after Docker started it again (its files went with
    it) is not run: the model is told instead, once."""
    if ctx.sandbox is None:
        raise ToolError(
            "this runner has no sandbox: sandbox tools cannot run here", code=ErrorCode.NO_SANDBOX
        )
    box = await ctx.sandbox()
    if for_a_call and (restarted := box.take_restart_note()) is not None:
        raise ToolError(f"not run: {restarted}; call again", code=ErrorCode.SANDBOX_RESTARTED)
    return box


def _shown(text: str) -> str:
    if len(text) <= 2 * SHOWN:
        return text
    cut = len(text) - 2 * SHOWN
    return f"{text[:SHOWN]}\n[... {cut} characters not shown ...]\n{text[-SHOWN:]}"


def _report(result: ExecResult) -> str:
    """What a command did, as the model reads it. Raises `ToolError` if it failed."""
    parts = [f"exit code {result.exit_code} ({result.seconds:.2f} s)"]
    if result.stdout:
        parts.append("stdout:\n" + _shown(result.stdout))
    if result.stderr:
        parts.append("stderr:\n" + _shown(result.stderr))
    if not result.stdout and not result.stderr:
        parts.append("(no output)")
    text = "\n".join(parts)
    if result.problem:
        # Not "timeout": that says a call may still take effect, and this one was killed.
        code = ErrorCode.COMMAND_TIMEOUT if result.timed_out else "resource_limit"
        raise ToolError(f"{result.problem}\n{text}", code=code)
    if result.exit_code != 0:
        raise ToolError(text, code=ErrorCode.EXIT_STATUS)
    return text


async def _command_outcome(ctx: ToolContext) -> ToolResult | None:
    """After a crash of the runner: what the command it lost track of did, read back from the
    sandbox's record of it (waited for, if it still runs); None if it never started."""
    box = await task_sandbox(ctx, for_a_call=False)
    found = await box.recorded(ctx.idempotency_key)
    if found == "unknown":
        raise CannotTell("the sandbox was started again since, and kept no record of it")
    if found == "not_started":
        return None
    note = "(The runner stopped while this ran; what it did was read back from the sandbox.)\n"
    try:
        return ToolResult(True, note + _report(found))
    except ToolError as exc:
        return ToolResult(False, note + str(exc), exc.code)


@tool(touches="write", timeout=_TOOL_TIMEOUT, reconcile=_command_outcome)
async def shell(command: str, ctx: ToolContext, timeout: Seconds = 120) -> str:  # noqa: ASYNC109
    """Run a shell command in the task's sandbox (Debian with python3, git, curl; the working
    directory is /workspace, which keeps its files for the whole task).

    Args:
        command: the command line, run by `sh -c`.
        timeout: seconds before the command and everything it started are killed (at most 600).
    """
    box = await task_sandbox(ctx)
    run = box.exec(command, timeout=timeout, on_output=ctx.output, key=ctx.idempotency_key)
    return _report(await run)


@tool(touches="write", timeout=_TOOL_TIMEOUT, reconcile=_command_outcome)
async def python(
    ctx: ToolContext,
    code: str | None = None,
    file: str | None = None,
    args: list[str] | None = None,
    timeout: Seconds = 120,  # noqa: ASYNC109 - the command's limit, enforced in the sandbox
) -> str:
    """Run Python 3 in the task's sandbox: a snippet or a file of the workspace.

    Args:
        code: Python source to run (give this or `file`).
        file: a .py file in /workspace to run (give this or `code`).
        args: command-line arguments for the program (sys.argv[1:]).
        timeout: seconds before it and everything it started are killed (at most 600).
    """
    if (code is None) == (file is None):
        raise ToolError("give exactly one of `code` and `file`", code=ErrorCode.BAD_ARGUMENTS)
    box = await task_sandbox(ctx)
    target = ["-c", code] if code is not None else [_path(file or "")]
    argv = ["python3", *target, *(args or [])]
    return _report(
        await box.exec(argv, timeout=timeout, on_output=ctx.output, key=ctx.idempotency_key)
    )


@tool(touches="read")
async def read_file(path: str, ctx: ToolContext) -> str:
    """Read a text file of the task's workspace.

    Args:
        path: the file, relative to /workspace (or an absolute path inside it).
    """
    box = await task_sandbox(ctx)
    data = await _file(box.read_file(path, max_bytes=2 * 1024 * 1024))
    return _shown(data.decode(errors="replace"))


@tool(touches="write")
async def write_file(path: str, content: str, ctx: ToolContext) -> str:
    """Write a text file in the task's workspace, replacing it if it exists (folders are made).

    Args:
        path: the file, relative to /workspace (or an absolute path inside it).
        content: the whole new content of the file.
    """
    box = await task_sandbox(ctx)
    full = await _file(box.write_file(path, content.encode()))
    return f"wrote {len(content.encode())} bytes to {full}"


@tool(touches="write")
async def patch_file(
    path: str, old: str, new: str, ctx: ToolContext, replace_all: bool = False
) -> str:
    """Replace exact text in a file of the task's workspace.

    Args:
        path: the file, relative to /workspace (or an absolute path inside it).
        old: the text to replace, exactly as it is in the file (include enough lines around it
            to make it unique).
        new: the text to put in its place.
        replace_all: replace every occurrence; otherwise `old` must occur exactly once.
    """
    if not old:
        raise ToolError("`old` is empty: give the text to replace", code=ErrorCode.BAD_ARGUMENTS)
    box = await task_sandbox(ctx)
    data = await _file(box.read_file(path, max_bytes=2 * 1024 * 1024))
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ToolError(
            f"{path} is not UTF-8 text; edit it with shell", code=ErrorCode.NOT_TEXT
        ) from None
    count = text.count(old)
    if count == 0:
        raise ToolError(f"{path}: the text to replace was not found", code=ErrorCode.NOT_FOUND)
    if count > 1 and not replace_all:
        raise ToolError(
            f"{path}: the text to replace occurs {count} times; give more of the text around it, "
            "or set replace_all",
            code=ErrorCode.AMBIGUOUS,
        )
    await _file(box.write_file(path, text.replace(old, new).encode()))
    return f"replaced {count} occurrence{'s' if count > 1 else ''} in {path}"


@tool(touches="read")
async def list_files(
    ctx: ToolContext, path: str = ".", depth: Annotated[int, Field(ge=1, le=6)] = 2
) -> str:
    """List files and folders of the task's workspace with their sizes.

    Args:
        path: the folder, relative to /workspace (or an absolute path inside it).
        depth: how many levels down to list (1 to 6).
    """
    box = await task_sandbox(ctx)
    folder = _path(path)
    quoted = shlex.quote(folder)
    command = (
        f"[ -d {quoted} ] || {{ echo 'no such folder' >&2; exit 2; }}; "
        f"find {quoted} -mindepth 1 -maxdepth {depth} "
        "\\( -type d -printf '%P/\\n' \\) -o -printf '%P %s\\n' | sort | head -n 1000"
    )
    result = await box.exec(command, timeout=30, record=False)
    if result.exit_code != 0:
        raise ToolError(
            f"{folder}: {result.stderr.strip() or 'cannot be listed'}", code=ErrorCode.NOT_FOUND
        )
    return result.stdout or f"{folder} is empty"


def _path(path: str) -> str:
    """The path inside the workspace, for a command; a path that leaves it is the model's error
    to correct. (The file methods of `Sandbox` check their paths themselves.)"""
    try:
        return workspace_path(path)
    except WorkspaceError as exc:
        raise ToolError(str(exc), code=exc.code) from None


T = TypeVar("T")


async def _file(op: Awaitable[T]) -> T:
    """A file operation; a missing file or the like is the model's error to correct."""
    try:
        return await op
    except WorkspaceError as exc:
        raise ToolError(str(exc), code=exc.code) from None


registry = Registry([shell, python, read_file, write_file, patch_file, list_files])
