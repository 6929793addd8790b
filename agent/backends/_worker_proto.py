"""What a model worker and its clients say to each other: one JSON object a line, on a Unix socket.

A client opens a connection per call and writes one request line; the worker answers with lines
until the last one (`Done`, `Failed` or `WorkerInfo`)::

    client                                   worker
    {"op": "complete", ...}          ->
                                     <-      {"kind": "started", "pid": ...}
                                     <-      {"kind": "delta", ...}         (streamed pieces)
                                     <-      {"kind": "done", "response": ..., "generation": ...}
    {"op": "info"}                   ->
                                     <-      {"kind": "info", ...}
    {"op": "stop"}                   ->      (stops listening and removes its socket)
                                     <-      {"kind": "stopped", "pid": ...}

A client that goes away mid-call (Ctrl-C) cancels it: the worker stops at its next token. A
connection that ends before the last line means the worker died (see `local.py`). The worker
also writes one `Ready` or `Failed` line on its standard output once it has loaded, or failed to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agent.backends.base import ModelRequest, ModelResponse
from base.errors import ErrorCode

#: bumped when a message changes shape; part of a worker's key, so old workers are not reused
PROTOCOL = 1
#: seconds a worker stays up with no client, unless told otherwise
DEFAULT_IDLE_SECONDS = 300.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerSettings(_Frozen):
    """What a worker loads: one model file with these settings. Equal settings share a worker."""

    path: Path
    n_ctx: int | None = None
    threads: int | None = None
    #: KV-cache slots: prompts that do not share a prefix (a planner's and an executor's) each
    #: keep their own, instead of evicting each other's
    slots: int = 2
    #: llama.cpp's weight repacking; None: chosen from the CPU (`agent.backends._cpu`)
    repack: bool | None = None
    #: a vision model's multimodal projector (`_vision`): the model then sees pictures
    mmproj: Path | None = None


class GenerateOptions(_Frozen):
    """How one answer is decoded (sent with each call, so they are not part of a worker's key)."""

    max_tokens: int = 1024
    temperature: float = 0.0
    repeat_penalty: float = 1.1
    seed: int = 0
    repair_attempts: int = 1


class ModelInfo(_Frozen):
    """What a GGUF file says about its model."""

    path: Path
    name: str
    architecture: str
    #: what the model was trained to attend to, and what this backend gives it
    trained_context: int | None
    context_window: int
    expert_count: int | None
    expert_used_count: int | None
    size_bytes: int
    #: a projector is loaded: pictures in a request are shown to the model
    vision: bool = False

    @property
    def is_moe(self) -> bool:
        return bool(self.expert_count and self.expert_count > 1)

    def summary(self) -> str:
        moe = (
            f", MoE: {self.expert_count} experts, {self.expert_used_count} per token"
            if self.is_moe
            else ""
        )
        sees = ", sees pictures" if self.vision else ""
        return (
            f"{self.name} ({self.architecture}, {self.size_bytes / 1e6:,.0f} MB, "
            f"context {self.context_window:,} tokens{moe}{sees})"
        )


class Generation(_Frozen):
    """One generation's figures: for benchmarks, tests and the curious."""

    text: str
    #: the prompt's length, and how much of it was already in the KV cache
    prompt_tokens: int
    reused_tokens: int
    output_tokens: int
    #: seconds from the start to the first answer token; and spent producing the answer
    first_token_seconds: float
    decode_seconds: float
    stop: Literal["end", "length"]
    #: steps where the model's first choice broke the grammar and another token was taken
    corrected: int
    #: held to a grammar
    constrained: bool
    #: the KV-cache slot it ran in
    slot: int = 0


class CompleteCall(_Frozen):
    op: Literal["complete"] = "complete"
    request: ModelRequest
    options: GenerateOptions = Field(default_factory=GenerateOptions)


class InfoCall(_Frozen):
    op: Literal["info"] = "info"


class StopCall(_Frozen):
    """Stop listening at once (a new client then starts a new worker), finish, and exit."""

    op: Literal["stop"] = "stop"


Call = Annotated[CompleteCall | InfoCall | StopCall, Field(discriminator="op")]


class Started(_Frozen):
    kind: Literal["started"] = "started"
    pid: int


class DeltaLine(_Frozen):
    kind: Literal["delta"] = "delta"
    type: Literal["text", "tool_call"]
    text: str


class Done(_Frozen):
    kind: Literal["done"] = "done"
    response: ModelResponse
    generation: Generation | None


class Failed(_Frozen):
    """A failure the worker caught: a `BackendError`'s fields, sent on."""

    kind: Literal["failed"] = "failed"
    message: str
    code: ErrorCode
    retryable: bool = False


class WorkerInfo(_Frozen):
    """What a worker runs: its model, its process, and the CPU path it took, and why."""

    kind: Literal["info"] = "info"
    pid: int
    model: ModelInfo
    settings: WorkerSettings
    load_seconds: float
    repack: bool
    path_reason: str
    #: llama.cpp's own account of the CPU features it was built for and uses
    system_info: str
    cpu: str
    #: calls answered since it started (a call cancelled or failed is not counted)
    answered: int = 0


class Stopped(_Frozen):
    kind: Literal["stopped"] = "stopped"
    pid: int


class Ready(_Frozen):
    kind: Literal["ready"] = "ready"
    info: WorkerInfo


Reply = Annotated[
    Started | DeltaLine | Done | Failed | WorkerInfo | Stopped | Ready,
    Field(discriminator="kind"),
]

CALL: TypeAdapter[CompleteCall | InfoCall | StopCall] = TypeAdapter(Call)
REPLY: TypeAdapter[Started | DeltaLine | Done | Failed | WorkerInfo | Stopped | Ready] = (
    TypeAdapter(Reply)
)


def line(message: BaseModel) -> bytes:
    """One message as the line that carries it."""
    return message.model_dump_json().encode() + b"\n"
