"""The one seam between the loop and a model: `ModelBackend.complete(request) -> response`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from base.images import Image
from base.toolspec import ToolSpec

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
    #: pictures a tool result carries (a screenshot): sent by backends whose model can see
    images: tuple[Image, ...] = ()


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
    #: the most tokens the answer may take (None: the backend's own limit); a tool that asks
    #: the model many times (map_documents) bounds each answer, so its budget can be known
    max_output_tokens: int | None = Field(None, ge=1)


class ModelResponse(_Frozen):
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Field(default_factory=Usage)
    model: str = ""


@dataclass(frozen=True)
class Delta:
    """A piece of a response as it arrives: prose (`text`) or a tool call being written
    (`tool_call`, the raw text of its arguments, or of the whole call for a backend that writes
    calls as JSON). Deltas are for showing progress; the `ModelResponse` is what counts."""

    kind: Literal["text", "tool_call"]
    text: str


#: Told of each `Delta` as it arrives. Called on the event loop's thread, never concurrently.
DeltaSink = Callable[[Delta], None]


@dataclass(frozen=True)
class Capabilities:
    """What a backend found its model can do (see `ModelBackend.probe`).

    `native_tools`: the model takes tool definitions and answers with structured tool calls.
    Where it does not, the backend asks for JSON matching a tool-call schema instead and turns
    that into `ToolCall`s, so the loop sees the same thing either way.
    """

    native_tools: bool
    streaming: bool
    #: tokens the model attends to, prompt and answer together; None when not known
    context_window: int | None = None
    #: with `native_tools` False, how an HTTP server is asked for the JSON: "json_schema",
    #: "json_object" (with the schema) or "prompt" (the prompt alone); None when not asked so
    json_mode: str | None = None
    #: what the backend found the server cannot do and how it asks instead, one line each
    notes: tuple[str, ...] = ()


class ModelBackend(ABC):
    """A model. Implementations map their transport's failures to `BackendError` once, here."""

    #: A short name shown to people and used to look prices up, e.g. ``openai:gpt-5.5``.
    name: str = "model"
    #: tokens the model attends to, when known; the loop keeps prompts inside it
    context_window: int | None = None
    #: runs on this machine, so its calls cost no money (unless the price table says otherwise)
    runs_locally: bool = False
    #: its model sees pictures: a tool result's images are sent to it (else only the text)
    vision: bool = False

    @abstractmethod
    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        """Answer one request. Raises `base.errors.BackendError` (with `retryable`).

        A backend that streams tells `on_delta` of each piece as it arrives; one that does not
        may ignore it. The response is the same either way.
        """

    async def probe(self) -> Capabilities:
        """Find out what the model can do. The default claims native tool calls and no streaming;
        backends that can tell better override it. May make a small request."""
        return Capabilities(native_tools=True, streaming=False, context_window=self.context_window)

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. Safe to call more than once."""
