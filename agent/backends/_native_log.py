"""What llama.cpp and libmtmd say goes to the model worker's log (its stderr): their warnings
and errors always, and everything they say while `loud` holds (a projector loading: what the log
shows when one fails; libmtmd says ten lines of every picture it encodes otherwise).

llama-cpp-python's own log callback reads ggml's levels by an older numbering (where 4 was
debug), so with it quiet llama.cpp's errors were dropped and its warnings kept. This one reads
them as ggml.h numbers them now.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import llama_cpp
from llama_cpp import mtmd_cpp as mtmd

#: ggml's log levels (ggml.h): a warning, and a line that goes on from the one before
WARN, GOES_ON = 3, 5


class _Log:
    def __init__(self) -> None:
        self.everything = False
        self._level = 0
        # Kept here: llama.cpp calls it for as long as the process lives.
        self.callback = llama_cpp.llama_log_callback(self._said)

    def _said(self, level: int, text: bytes | None, _data: object) -> None:
        self._level = self._level if level == GOES_ON else level
        if text and (self.everything or self._level >= WARN):
            os.write(2, text)


_LOG = _Log()


def install() -> None:
    """Send what llama.cpp and libmtmd say through this module (once a process is enough)."""
    llama_cpp.llama_log_set(_LOG.callback, None)
    mtmd.mtmd_log_set(_LOG.callback, None)
    mtmd.mtmd_helper_log_set(_LOG.callback, None)


@contextlib.contextmanager
def loud() -> Iterator[None]:
    """Everything llama.cpp and libmtmd say while this holds goes to the log."""
    _LOG.everything = True
    try:
        yield
    finally:
        _LOG.everything = False
