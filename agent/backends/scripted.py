"""A backend that replays a script of model turns: for tests, demos, and replaying runs.

The script is JSON: an object with a `turns` list (or just the list). Turn *n* answers the task's
*n*-th model call (counting from 0, planner and executor calls alike), so a task resumed after a
crash picks up at the right turn. A turn is one of these shapes (fields may be combined where it
makes sense)::

    {"plan": ["step one", "step two"]}         the planner's answer
    {"tool": "name", "args": {...}}            one tool call; "args" may be a raw string,
                                               which is sent as-is (to script malformed output)
    {"done": "what the step achieved"}         complete the current step
    {"replan": "why the plan no longer fits"}  ask for a new plan
    {"answer": "the final answer"}             finish the task
    {"tool_calls": [{"name": ..., "arguments": ..., "id": ...}, ...]}   several calls at once
    {"text": "prose"}                          text (with no call, the loop rejects it)

Every turn may also carry `"usage": {"input_tokens": N, "output_tokens": M}` (otherwise usage is
estimated at four characters a token), `"repeat": N` to stand for N copies of itself, and
`"expect": "text"`: the request must hold the text, or the turn fails with `ScriptError` (a
script that checks what the model was told, such as a user's instruction).
A `plan` turn answers only the planner; every other turn answers only the executor: a script that
diverges from the run fails at once with `ScriptError` naming the turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.backends.base import (
    Delta,
    DeltaSink,
    ModelBackend,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
)
from base.errors import ConfigError, ErrorCode, ScriptError

_ROLE = {"plan": "planner", "act": "executor"}


class _ScriptedCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None


class ScriptedTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: list[str] | None = None
    tool: str | None = None
    args: dict[str, Any] | str = Field(default_factory=dict)
    done: str | None = None
    replan: str | None = None
    answer: str | None = None
    tool_calls: list[_ScriptedCall] = Field(default_factory=list)
    text: str = ""
    usage: Usage | None = None
    repeat: int = Field(1, ge=1)
    #: text the request must hold (in any message): a script that checks what the model is told
    expect: str | None = None

    @model_validator(mode="after")
    def _one_purpose(self) -> ScriptedTurn:
        acts = [self.tool, self.done, self.replan, self.answer]
        if self.plan is not None and (any(a is not None for a in acts) or self.tool_calls):
            raise ValueError("a turn with 'plan' cannot also call tools")
        if sum(a is not None for a in (self.done, self.replan, self.answer)) > 1:
            raise ValueError("a turn can end the step one way: 'done', 'replan' or 'answer'")
        return self

    @property
    def purpose(self) -> str:
        return "plan" if self.plan is not None else "act"

    def calls(self) -> list[_ScriptedCall]:
        calls: list[_ScriptedCall] = []
        if self.plan is not None:
            calls.append(_ScriptedCall(name="submit_plan", arguments={"steps": self.plan}))
        if self.tool is not None:
            calls.append(_ScriptedCall(name=self.tool, arguments=self.args))
        calls.extend(self.tool_calls)
        if self.done is not None:
            calls.append(_ScriptedCall(name="complete_step", arguments={"summary": self.done}))
        if self.replan is not None:
            calls.append(_ScriptedCall(name="replan", arguments={"reason": self.replan}))
        if self.answer is not None:
            calls.append(_ScriptedCall(name="finish", arguments={"answer": self.answer}))
        return calls


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")
    turns: list[ScriptedTurn]


def load_script(path: Path) -> list[ScriptedTurn]:
    """Read a script file. Raises `ConfigError` naming the file and the bad turn."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read script {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    return parse_script(data, source=str(path))


def parse_script(data: Any, *, source: str = "script") -> list[ScriptedTurn]:
    if isinstance(data, list):
        data = {"turns": data}
    try:
        script = Script.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = list(err["loc"])
        if len(loc) >= 2 and loc[0] == "turns" and isinstance(loc[1], int):
            loc[:2] = [f"turn {loc[1] + 1}"]  # counted from 1, as the run's messages count
        where = ".".join(str(p) for p in loc)
        raise ConfigError(f"{source}: {where}: {err['msg']}") from None
    return [turn for turn in script.turns for _ in range(turn.repeat)]


class ScriptedBackend(ModelBackend):
    """Replays turns; records every request it was given in `requests`."""

    def __init__(self, turns: list[ScriptedTurn], *, name: str = "scripted") -> None:
        self.turns = turns
        self.name = name
        self.requests: list[ModelRequest] = []

    @classmethod
    def from_file(cls, path: Path) -> ScriptedBackend:
        return cls(load_script(path), name=f"scripted:{path}")

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        n = request.turn
        if n >= len(self.turns):
            raise ScriptError(
                f"the script has {len(self.turns)} turns and the run asked for "
                f"turn {n + 1} ({request.purpose})",
                turn=n,
            )
        turn = self.turns[n]
        if turn.purpose != request.purpose:
            raise ScriptError(
                f"script turn {n + 1} answers the {_ROLE[turn.purpose]}'s call but the run asked "
                f"the {_ROLE[request.purpose]}: the run diverged from the script",
                code=ErrorCode.SCRIPT_DIVERGED,
                turn=n,
            )
        if turn.expect is not None and not any(turn.expect in m.content for m in request.messages):
            raise ScriptError(
                f"script turn {n + 1} expects the model to be told {turn.expect!r}, and it was not",
                code=ErrorCode.SCRIPT_DIVERGED,
                turn=n,
            )
        calls = tuple(
            ToolCall(
                id=c.id or f"call_{n}_{i}",
                name=c.name,
                arguments=c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments),
            )
            for i, c in enumerate(turn.calls())
        )
        usage = turn.usage or _estimate(request, turn.text, calls)
        if on_delta is not None and turn.text:
            on_delta(Delta("text", turn.text))  # a script has its whole turn at once
        return ModelResponse(text=turn.text, tool_calls=calls, usage=usage, model=self.name)

    def verify(self, turns_used: int) -> None:
        """Raise `ScriptError` if the finished run left turns of the script unused."""
        left = len(self.turns) - turns_used
        if left > 0:
            unused = (
                f"turn {turns_used + 1} was"
                if left == 1
                else f"turns {turns_used + 1}-{len(self.turns)} were"
            )
            raise ScriptError(
                f"the run finished after {turns_used} of the script's "
                f"{len(self.turns)} turns: {unused} never used",
                code=ErrorCode.SCRIPT_UNCONSUMED,
            )


def _estimate(request: ModelRequest, text: str, calls: tuple[ToolCall, ...]) -> Usage:
    sent = sum(
        len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages
    )
    received = len(text) + sum(len(c.arguments) + len(c.name) for c in calls)
    return Usage(input_tokens=sent // 4 + 1, output_tokens=received // 4 + 1)
