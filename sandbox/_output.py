"""What a command prints, as it prints it: kept (the head of it) for its result, and passed on
to whoever watches it run."""

from __future__ import annotations

import asyncio
import codecs
import threading
from dataclasses import dataclass, field

from sandbox._records import limits_said
from sandbox.protocol import OutputSink

#: what is kept of each of stdout and stderr (the head; the rest is counted, not kept)
MAX_OUTPUT = 256 * 1024


@dataclass
class Output:
    """What a command printed so far; filled by the thread that reads the stream."""

    sink: OutputSink | None
    loop: asyncio.AbstractEventLoop
    parts: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    sizes: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    decoders: dict[str, codecs.IncrementalDecoder] = field(
        default_factory=lambda: {
            s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")
        }
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stream: str, data: bytes, final: bool = False) -> None:
        text = self.decoders[stream].decode(data, final)
        if not text:
            return
        with self.lock:
            kept = self.sizes[stream]
            if kept < MAX_OUTPUT:
                self.parts[stream].append(text[: MAX_OUTPUT - kept])
            self.sizes[stream] = kept + len(text)
        # agent-exec's line about limits is read by `exec`, not shown as the command's.
        shown = limits_said(text)[0] if stream == "stderr" and "\x1e" in text else text
        if self.sink is not None and shown:
            self.loop.call_soon_threadsafe(self.sink, stream, shown)

    def text(self, stream: str) -> str:
        with self.lock:
            text = "".join(self.parts[stream])
            dropped = self.sizes[stream] - len(text)
        return text + (f"\n[... {dropped} more characters not kept]" if dropped > 0 else "")
