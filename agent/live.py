"""The live stream: one typed subscription for everything a run makes as it makes it.

    runner.subscribe(listener)     # listener(item) for each item, in order

An item is one of:

- `StoredEvent`: an event of the task's log, once it is durable (the same as `Store.tail` gives
  any other process);
- `CommandOutput`: a piece of a sandbox command's output as it comes (never recorded: the
  command's result is);
- `ModelDelta`: a piece of a model's answer as it arrives (never recorded: the whole answer is).

A frontend matches on the item's type; `assert_never` makes a new kind a type error there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent.backends.base import Delta, Purpose
from agent.store import StoredEvent


@dataclass(frozen=True)
class CommandOutput:
    task_id: str
    stream: Literal["stdout", "stderr"]
    text: str
    #: "command": a sandbox command's output (its result repeats it); "print": what a tool
    #: printed (kept apart from its result)
    source: Literal["command", "print"] = "command"


@dataclass(frozen=True)
class ModelDelta:
    task_id: str
    purpose: Purpose
    delta: Delta


Live = StoredEvent | CommandOutput | ModelDelta
Listener = Callable[[Live], None]
