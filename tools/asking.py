"""A tool that asks its task's model itself (`map_documents`): the seam it asks through.

The runner gives such a tool a `ToolModel` in its context (`ToolContext.model`). Every answer is
counted: what the calls took (`Spent`) goes with the call's result into the task's log, and
counts against the task's budget as the loop's own calls do. Before a tool starts many calls it
reads `ToolModel.left` (what the task may still spend, and the model's price) and says what
its work will take, so it refuses work the budget cannot pay for before the first call.

A failure to reach the model is the program's, not the model's: `ask` raises the backend's
error, and the task pauses as it does when the loop's own call fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Spent:
    """What a tool's own model calls took: `turns` numbers reserved (see `ToolModel.reserve`),
    `calls` made, the tokens read and written, and their cost (None: its price is unknown)."""

    turns: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


@dataclass(frozen=True)
class Allowance:
    """What the task may still spend on model calls (None: no limit), and the model's price in
    US dollars per million tokens read and written (None: not known); `seconds`: the time the
    task has left when the tool's call begins (None: no limit)."""

    tokens: int | None
    cost_usd: float | None
    price_in: float | None
    price_out: float | None
    seconds: float | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """What so many tokens cost at the model's price (None where it is not known)."""
        if self.price_in is None or self.price_out is None:
            return None
        return (input_tokens * self.price_in + output_tokens * self.price_out) / 1e6


class ToolModel(Protocol):
    """The task's model, as a tool asks it."""

    @property
    def name(self) -> str:
        """The model's name, as the task's log gives it (a tool keys what it keeps on it)."""
        ...

    @property
    def context_window(self) -> int:
        """Tokens the model attends to, prompt and answer together (a default when unknown)."""
        ...

    @property
    def left(self) -> Allowance:
        """What the task may still spend, as it was when the tool's call began."""
        ...

    def reserve(self, calls: int) -> range:
        """Turn numbers for `calls` calls, each passed to one `ask`: the same work reserves the
        same numbers on every run, so a scripted model (or a cache) answers each the same."""
        ...

    async def ask(self, turn: int, system: str, text: str, max_tokens: int) -> str:
        """The model's answer to `text` under the instructions `system`, at most `max_tokens`
        tokens long. Raises `BackendError` when the model cannot be reached."""
        ...
