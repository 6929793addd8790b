"""The one seam between the loop and a model: `ModelBackend.complete(request) -> response`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Purpose = Literal["plan", "act"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """A tool call as the model wrote it. `arguments` is the raw JSON text, unvalidated."""

    id: str
    name: str
    arguments: str


class Usage(_Frozen):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class Message(_Frozen):
    """One chat message in the provider-neutral shape every backend translates from."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


class ToolSpec(_Frozen):
    """What a model is told about a tool: its name, description and JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelRequest(_Frozen):
    """One call to a model.

    `turn` is the number of model responses the task has already recorded, so a backend that
    replays a script (or a cache) knows where it is even after the runner restarted.
    """

    task_id: str
    purpose: Purpose
    turn: int
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    tool_choice: Literal["auto", "required"] = "required"


class ModelResponse(_Frozen):
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


class ModelBackend(ABC):
    """A model. Implementations map their transport's failures to `BackendError` once, here."""

    #: A short name shown to people and used to look prices up, e.g. ``openai:gpt-5.5``.
    name: str = "model"

    @abstractmethod
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request. Raises `agent.errors.BackendError` (with `retryable`)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Safe to call more than once."""
