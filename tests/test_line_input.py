"""Reading an answer from a terminal: a line, the end of input, and Ctrl-C, which stops the wait.

The CLI's approval prompt once hung on a Ctrl-C that landed just before `input()` began its
read (seen 2 times in 8 on a loaded machine); `read_line` waits in short `select`s instead. That
race cannot be forced from outside, so these tests pin the behaviour, not the timing."""

from __future__ import annotations

import io
import os
import pty
import signal
import sys
import time

import pytest

from frontends.line_input import read_line

from .conftest import REPO
from .terminal import read_until

CHILD = """
import sys
from frontends.line_input import read_line
print("ready", flush=True)
try:
    print("got", repr(read_line(sys.stdin)), flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
except EOFError:
    print("end of input", flush=True)
"""


def in_terminal() -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(sys.executable, [sys.executable, "-c", CHILD])
    read_until(fd, b"ready")
    return pid, fd


def test_a_typed_line_is_read_without_its_newline() -> None:
    pid, fd = in_terminal()
    os.write(fd, b"yes please\n")
    # Up to the end of the child's line, not just "got": the rest may come in a later read.
    # The echo of what was typed has no quote, so this stops only after the child's answer.
    assert b"got 'yes please'\r\n" in read_until(fd, b"'\r\n")
    os.waitpid(pid, 0)


def test_ctrl_c_stops_the_wait() -> None:
    pid, fd = in_terminal()
    os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it
    started = time.monotonic()
    assert b"interrupted" in read_until(fd, b"interrupted")
    assert time.monotonic() - started < 3
    os.waitpid(pid, 0)


def test_the_end_of_input_is_an_eof_error() -> None:
    with pytest.raises(EOFError):
        read_line(io.StringIO(""))
    assert read_line(io.StringIO("n no thanks\n")) == "n no thanks"


def test_a_ctrl_c_the_child_ignores_would_leave_it_waiting() -> None:
    # The positive control: the probe above would see a wait that does not stop.
    pid, fd = in_terminal()
    os.kill(pid, signal.SIGSTOP)  # stopped, it cannot answer
    os.write(fd, b"\x03")
    with pytest.raises(AssertionError, match="no b'interrupted'"):
        read_until(fd, b"interrupted", timeout=1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
