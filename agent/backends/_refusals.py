"""Refusals of a capability by an OpenAI-compatible server, and the request shapes they step
down to (see `agent.backends.openai_compat` for what counts as a refusal, and the order of the
steps)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.backends._http import located_parameters, named_parameters
from agent.backends._json_tools import JSON_MODES, JsonMode
from base.errors import BackendError, ErrorCode

#: plain chat; tools offered natively; tool calls asked for as JSON
Mode = Literal["plain", "native", "json"]

# The statuses servers refuse an unsupported parameter with: 400 and 422 (OpenAI, vLLM, FastAPI's
# validation), 500 (llama.cpp's server wraps its validation errors in one), 501.
_REFUSAL_STATUSES = frozenset({400, 422, 500, 501})

# What a stepped-down request's refusal that names nothing is taken to refuse, by mode. With
# native tools nothing: the server's tool calls are broken, and JSON mode is next.
_UNNAMED: dict[Mode, tuple[str, ...]] = {
    "plain": (),
    "native": (),
    "json": ("response_format",),
}


@dataclass(frozen=True)
class Shape:
    """The form a request is sent in. Stepping down changes one field at a time."""

    mode: Mode
    stream: bool
    tool_choice: Literal["auto", "required"] = "required"  # native only
    json_mode: JsonMode = "json_schema"  # json only
    temperature: float | None = None


class Refused(BackendError):
    """A server's answer that it cannot take a request of this shape: not retried.

    `parameters` are the ones it named, in the order of `_capability_words`; none when a
    tentative request failed without naming any (see `_UNNAMED`), and then `code` is the
    failure's own. `broke` when the sign was a stream that never began.
    """

    def __init__(
        self,
        message: str,
        *,
        parameters: tuple[str, ...],
        broke: bool = False,
        status: int | None = None,
        code: ErrorCode = ErrorCode.CAPABILITY_REFUSED,
        url: str,
    ) -> None:
        super().__init__(message, code=code, retryable=False, status=status, url=url)
        self.parameters = parameters
        self.broke = broke


def refusal(
    error: BackendError, body: dict[str, Any], url: str, *, tentative: bool
) -> Refused | None:
    """`error`, from sending `body` to `url`, as a refusal of a capability, if it is one (see
    `agent.backends.openai_compat`)."""
    if error.status not in _REFUSAL_STATUSES:
        return None
    words = _capability_words(body)
    detail = str(error.context.get("detail", ""))
    named = named_parameters(detail, words)
    param = error.context.get("param")
    if isinstance(param, str):  # OpenAI names the parameter it refuses in `error.param`
        field = param.split(".")[0].split("[")[0]  # "response_format.json_schema", ...
        named = tuple(name for name, names in words.items() if field in names)
    blames_another = isinstance(param, str) or bool(located_parameters(detail))
    if not named and (not tentative or blames_another):
        return None
    return Refused(
        str(error),
        parameters=named,
        status=error.status,
        # Named, it is a refusal; unnamed, it stays what it was (only not tried again).
        code=ErrorCode.CAPABILITY_REFUSED if named else error.code,
        url=url,
    )


def broken(url: str, body: dict[str, Any]) -> Refused:
    """The refusal a stream of `body` that ended before its first event stands for."""
    # llama.cpp's server starts the stream, then fails on what it cannot stream (a
    # tool_choice other than "auto", or any with chatml-function-calling) and ends it bare.
    return Refused(
        f"{url} ended a streamed answer before its first event "
        f"(it cannot stream this request: {_features(body)})",
        parameters=("stream",),
        broke=True,
        url=url,
    )


def lower(shape: Shape, parameters: tuple[str, ...]) -> Shape | None:
    """The shape one step below `shape` that leaves out what `parameters` name (see `_UNNAMED`
    when they name nothing); None if nothing named can be stepped down."""
    for parameter in parameters or _UNNAMED[shape.mode]:
        if parameter == "stream" and shape.stream:
            return replace(shape, stream=False)
        if parameter == "tool_choice" and shape.mode == "native" and shape.tool_choice != "auto":
            return replace(shape, tool_choice="auto")
        if parameter == "response_format" and shape.mode == "json" and shape.json_mode != "prompt":
            return replace(shape, json_mode=JSON_MODES[JSON_MODES.index(shape.json_mode) + 1])
        if parameter == "temperature" and shape.temperature is not None:
            return replace(shape, temperature=None)
    return None


def refused_what(refused: Refused, what: str) -> str:
    """E.g. "refused response_format json_schema (500)", "broke off streamed tool calls"."""
    if refused.broke:
        return f"broke off {what}"
    status = f" ({refused.status})" if refused.status else ""
    if not refused.parameters:
        return f"failed {what} without saying why{status}"
    return f"refused {what}{status}"


def asks_more_than_chat(body: dict[str, Any]) -> bool:
    return "tools" in body or "response_format" in body


def _capability_words(body: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The capability parameters `body` carries, each with the words a refusal names it by, in
    the order they are given up: the live view of an answer first, the server's own tool calls
    last."""
    words: dict[str, tuple[str, ...]] = {}
    if body.get("stream"):
        words["stream"] = ("stream", "stream_options")
    if "tool_choice" in body:
        words["tool_choice"] = ("tool_choice", "tool choice")
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        words["response_format"] = (
            "response_format",
            "response format",
            str(response_format.get("type", "response_format")),
        )
    if "temperature" in body:
        words["temperature"] = ("temperature",)
    if "tools" in body:
        words["tools"] = ("tools",)
    return words


def _features(body: dict[str, Any]) -> str:
    parts = []
    if "tool_choice" in body:
        parts.append(f"tool_choice {body['tool_choice']!r}")
    if isinstance(body.get("response_format"), dict):
        parts.append(f"response_format {body['response_format'].get('type')!r}")
    return ", ".join(parts) or "tools"
