"""The task's model lent to a tool that asks it itself (`tools.asking.ToolModel`).

One `TaskModel` serves one call of one tool: it asks the executor's backend, adds up what the
answers took, and gives that back as `Spent`, which the runner records with the call's result.
Its turn numbers follow the task's: a tool's calls take the numbers after the model calls the
task has recorded, and the task's next call the number after them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.backends.base import Message, ModelBackend, ModelRequest, Usage
from agent.events import TaskPaused
from agent.prices import FREE, Price
from agent.state import TaskState
from tools.asking import Allowance, Spent
from tools.tool import ToolError

#: the window assumed of a model that does not say its own
DEFAULT_WINDOW = 8192


@dataclass
class TaskModel:
    """The task's executor model, for one call of a tool (see the module docstring)."""

    backend: ModelBackend
    task_id: str
    #: the task's turns recorded when the call began: the first number this may reserve
    first_turn: int
    #: what the task may still spend, as it was when the call began
    left: Allowance
    prices: dict[str, Price]
    #: takes the secrets' values out of what is sent (None: the task has no secrets)
    redact: Callable[[str], str] | None = None
    _reserved: int = 0
    _calls: int = 0
    _usage: Usage = field(default_factory=Usage)
    _cost: float | None = None
    #: when the call began (`time.perf_counter`, the clock a call's time is recorded by),
    #: what its time left counts from
    _began: float = field(default_factory=time.perf_counter)

    @classmethod
    def of(
        cls,
        backend: ModelBackend,
        state: TaskState,
        prices: dict[str, Price],
        redact: Callable[[str], str] | None = None,
    ) -> TaskModel:
        """The model of `backend` for a tool called by the task `state` folds; `redact` takes
        the secrets' values out of what the tool sends (the model never sees one)."""
        price = price_of(backend, prices)
        lim = state.limits
        used = state.input_tokens + state.output_tokens
        allowance = Allowance(
            tokens=None if lim.max_tokens is None else max(0, lim.max_tokens - used),
            cost_usd=(
                None if lim.max_cost_usd is None else max(0.0, lim.max_cost_usd - state.cost_usd)
            ),
            price_in=None if price is None else price.input,
            price_out=None if price is None else price.output,
            seconds=(
                None if lim.max_seconds is None else max(0.0, lim.max_seconds - state.seconds)
            ),
        )
        return cls(backend, state.task_id, state.turns, allowance, prices, redact)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def context_window(self) -> int:
        return self.backend.context_window or DEFAULT_WINDOW

    def reserve(self, calls: int) -> range:
        start = self.first_turn + self._reserved
        self._reserved += calls
        return range(start, start + calls)

    @property
    def asked(self) -> bool:
        """Whether a turn was reserved or a call made."""
        return bool(self._reserved or self._calls)

    async def ask(self, turn: int, system: str, text: str, max_tokens: int) -> str:
        if not self.first_turn <= turn < self.first_turn + self._reserved:
            raise ValueError(f"turn {turn} was not reserved (see reserve)")
        if (why := self._spent_all()) is not None:
            raise ToolError(
                f"stopped: the task's budget is spent ({why}) after {self._calls} calls of this "
                "tool's; what it finished is kept, and the same call run again after the budget "
                "is raised goes on from there"
            )
        if self.redact is not None:
            system, text = self.redact(system), self.redact(text)
        request = ModelRequest(
            task_id=self.task_id,
            purpose="act",
            turn=turn,
            messages=(Message(role="system", content=system), Message(role="user", content=text)),
            tools=(),
            tool_choice="auto",
            max_output_tokens=max_tokens,
        )
        response = await self.backend.complete(request)
        self._calls += 1
        self._usage = self._usage + response.usage
        price = price_of(self.backend, self.prices, response.model)
        if price is not None:
            self._cost = (self._cost or 0.0) + price.cost(response.usage)
        return response.text

    def _spent_all(self) -> str | None:
        """Which of the task's allowances the calls so far used up, or None."""
        left = self.left
        if left.tokens is not None and self._usage.total >= left.tokens:
            return f"{self._usage.total:,} tokens of the {left.tokens:,} left"
        if left.cost_usd is not None and self._cost is not None and self._cost >= left.cost_usd:
            return f"${self._cost:.4f} of the ${left.cost_usd:.4f} left"
        if left.seconds is not None and (took := time.perf_counter() - self._began) >= left.seconds:
            return f"{took:.1f} s of the {left.seconds:.1f} s left"
        return None

    def spent_with(self, paused: TaskPaused) -> TaskPaused:
        """`paused`, saying what the calls so far took (a pause leaves the call unresolved, and
        the budget counts them all the same)."""
        if not self._calls:
            return paused
        return paused.model_copy(update={"model_usage": self._usage, "model_cost_usd": self._cost})

    def spent(self) -> Spent:
        """What the calls so far took."""
        return Spent(
            turns=self._reserved,
            calls=self._calls,
            input_tokens=self._usage.input_tokens,
            output_tokens=self._usage.output_tokens,
            cost_usd=self._cost,
        )


def price_of(backend: ModelBackend, prices: dict[str, Price], model: str = "") -> Price | None:
    """What `backend`'s answers cost (by its name, else the model an answer names), free for a
    model on this machine the table does not price; None where it is not known."""
    price = prices.get(backend.name) or (prices.get(model) if model else None)
    if price is None and backend.runs_locally:
        price = FREE
    return price
