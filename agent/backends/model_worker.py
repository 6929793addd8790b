"""The model worker: a process that holds one local model and answers every runner on the machine.

    python -m agent.backends.model_worker --settings JSON --socket PATH [--idle SECONDS]

`LocalBackend` starts it on first use (see `agent.backends.local`); nobody needs to by hand. It
loads the model (`_engine.Engine`), listens on a Unix socket that only its user may open, says
`Ready` (or `Failed`) on its standard output, and then answers calls, one generation at a time,
in the order they came (`_worker_proto` has the messages). A client that hangs up mid-answer
cancels it. After `--idle` seconds with no client connected, it removes its socket and exits.

llama.cpp runs only here, so a native crash (a segfault, an abort, the OOM killer) ends this
process and the call in flight, not the runners: they see the connection close and start a new
worker for the next call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from agent.backends._engine import Engine
from agent.backends._worker_proto import (
    CALL,
    DEFAULT_IDLE_SECONDS,
    CompleteCall,
    DeltaLine,
    Done,
    Failed,
    Ready,
    Started,
    StopCall,
    Stopped,
    WorkerSettings,
    line,
)
from agent.backends.base import Delta
from base.errors import BackendError, ConfigError, ErrorCode


class WorkerServer:
    """Serves one loaded `Engine` on a Unix socket until it has been idle for `idle` seconds."""

    def __init__(
        self, engine: Engine, *, idle: float, on_stop: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._idle = idle
        #: told when the worker stops listening on request (it removes its socket then)
        self._on_stop = on_stop
        self._connections = 0
        self._answered = 0
        self._busy = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None

    async def run(self, listener: socket.socket) -> None:
        """Serve on `listener`, saying `Ready` on standard output first, until idle or told to
        stop (SIGTERM)."""
        server = self._server = await asyncio.start_unix_server(self._serve, sock=listener)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._stopped.set)
        _say(Ready(info=self._engine.info))
        self._arm()
        try:
            await self._stopped.wait()
        finally:
            server.close()

    async def _stop(self) -> None:
        """Stop listening now; exit once the calls in hand are answered."""
        if self._server is not None:
            self._server.close()
        if self._on_stop is not None:
            self._on_stop()
        async with self._busy:
            self._stopped.set()

    def _arm(self) -> None:
        if self._connections == 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._idle, self._stopped.set)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        self._disarm()
        try:
            raw = await reader.readline()
            try:
                call = CALL.validate_json(raw)
            except ValidationError as error:
                writer.write(
                    line(
                        Failed(
                            message=f"a call the worker cannot read: {error}",
                            code=ErrorCode.BAD_REQUEST,
                        )
                    )
                )
            else:
                if isinstance(call, CompleteCall):
                    await self._complete(call, reader, writer)
                elif isinstance(call, StopCall):
                    await self._stop()
                    writer.write(line(Stopped(pid=os.getpid())))
                else:
                    info = self._engine.info.model_copy(update={"answered": self._answered})
                    writer.write(line(info))
            await writer.drain()
        except ConnectionError:
            pass  # the client went away; its call was cancelled
        finally:
            writer.close()
            self._connections -= 1
            self._arm()

    async def _complete(
        self, call: CompleteCall, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def tell(delta: Delta) -> None:
            # Called on the generating thread; writing belongs to the loop's.
            message = line(DeltaLine(type=delta.kind, text=delta.text))
            loop.call_soon_threadsafe(_write, writer, message)

        hangup = asyncio.create_task(_hung_up(reader, stop))
        try:
            async with self._busy:  # one generation at a time; later calls wait their turn
                if stop.is_set():
                    return
                writer.write(line(Started(pid=os.getpid())))
                try:
                    response, generation = await asyncio.to_thread(
                        self._engine.complete,
                        call.request,
                        call.options,
                        on_delta=tell,
                        cancelled=stop.is_set,
                    )
                except BackendError as error:
                    writer.write(
                        line(Failed(message=str(error), code=error.code, retryable=error.retryable))
                    )
                else:
                    writer.write(line(Done(response=response, generation=generation)))
                    if not stop.is_set():
                        self._answered += 1
        finally:
            hangup.cancel()


async def _hung_up(reader: asyncio.StreamReader, stop: threading.Event) -> None:
    """Set `stop` when the client closes its end (it sends nothing after its call)."""
    with contextlib.suppress(ConnectionError):
        await reader.read()
    stop.set()


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


def _say(message: Ready | Failed) -> None:
    """Tell the process that started this one, on standard output, then stop using it (that
    process stops reading, and a later native print must not find a closed pipe)."""
    sys.stdout.buffer.write(line(message))
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def bind(path: Path) -> socket.socket:
    """A listening socket at `path` that only this user may connect to, replacing what is there
    (the process that started this one holds the start lock, so nothing live is)."""
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # made 0600 from the start, not chmod-ed after
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(64)
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.backends.model_worker")
    parser.add_argument("--settings", required=True, help="WorkerSettings as JSON")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_SECONDS)
    args = parser.parse_args(argv)
    # In its own session, Ctrl-C in a terminal does not reach it; a stray SIGINT is ignored too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        settings = WorkerSettings.model_validate_json(args.settings)
        engine = Engine.load(settings)
    except (ConfigError, ValidationError) as error:
        _say(Failed(message=str(error), code=ErrorCode.MODEL_LOAD_FAILED))
        return 2
    listener = bind(args.socket)
    inode = args.socket.stat().st_ino

    def unbind() -> None:
        # Only our own socket: a newer worker may have taken the path over.
        with contextlib.suppress(OSError):
            if args.socket.stat().st_ino == inode:
                args.socket.unlink()

    try:
        asyncio.run(WorkerServer(engine, idle=args.idle, on_stop=unbind).run(listener))
    finally:
        listener.close()
        unbind()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
