"""Keeping what the model is sent inside its context window.

Two rules keep a long task's prompts bounded, whatever its length:

- A tool output longer than `observation_chars` is kept whole as a task artifact, and the model
  is shown its beginning and end with a note saying how to read the rest (`read_artifact`).
- The executor sees its instructions, the plan, and the exchanges of the current step only, and
  of those only the newest that fit (`fit_window`); a new step starts afresh.

Token counts here are estimates (`CHARS_PER_TOKEN`), used only to decide what to leave out; the
backend counts the real ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.backends.base import Message
from base.toolspec import ToolSpec

#: a cautious estimate: English and JSON run at about 4 characters a token, code a little less
CHARS_PER_TOKEN = 3.5
#: the share of the context one tool output may take, and the bounds on it in characters
OBSERVATION_SHARE = 0.125
MIN_OBSERVATION = 1_500
MAX_OBSERVATION = 16_000
#: the share of the context the prompt may take; the rest is left for the answer
PROMPT_SHARE = 0.75


def observation_chars(context_window: int | None) -> int:
    """How long a tool output may be before the model is shown only part of it."""
    if context_window is None:
        return MAX_OBSERVATION
    share = int(context_window * OBSERVATION_SHARE * CHARS_PER_TOKEN)
    return max(MIN_OBSERVATION, min(MAX_OBSERVATION, share))


def shortened(content: str, limit: int, artifact: str) -> str:
    """`content`'s beginning and end within about `limit` characters, with a note naming the
    artifact that holds all of it and how to read what is left out."""
    head = limit * 3 // 4
    tail = limit - head
    left_out = len(content) - head - tail
    return (
        f"{content[:head]}\n[... {left_out:,} characters left out; all {len(content):,} are kept "
        f"as {artifact}: read_artifact(name={artifact!r}, offset={head}) reads on from here "
        f"...]\n{content[-tail:]}"
    )


def estimate_tokens(messages: Iterable[Message], tools: Sequence[ToolSpec] = ()) -> int:
    chars = sum(
        len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls) for m in messages
    )
    chars += sum(len(t.name) + len(t.description) + len(str(t.parameters)) for t in tools)
    return int(chars / CHARS_PER_TOKEN) + 1


def fit_window(
    header: Sequence[Message],
    exchanges: Sequence[tuple[Message, ...]],
    tools: Sequence[ToolSpec],
    context_window: int | None,
) -> tuple[list[tuple[Message, ...]], int]:
    """The newest exchanges that fit in the prompt's share of the context with `header` and
    `tools`, oldest first, and how many older ones were left out. The newest is always kept."""
    if context_window is None or not exchanges:
        return list(exchanges), 0
    budget = int(context_window * PROMPT_SHARE) - estimate_tokens(header, tools)
    kept: list[tuple[Message, ...]] = []
    for exchange in reversed(exchanges):
        cost = estimate_tokens(exchange)
        if kept and cost > budget:
            break
        kept.append(exchange)
        budget -= cost
    kept.reverse()
    return kept, len(exchanges) - len(kept)
