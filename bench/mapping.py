"""`map_documents` with the bundled local model, over one file of the Python documentation.

- Overhead: the tool's wall time (reading the index, packing the parts, keeping each part's
  notes, combining) against the same model calls sent straight to the backend, one after the
  other as the tool sends them with `parallel=1`. The backend keeps one KV slot, so neither run
  finds the other's prompts cached; each round asks a new instruction, so no round finds an
  earlier one's. Goal: at most 1.1x (median of the rounds).
- The budget check's estimate against what the calls took: the tokens the calls read over the
  tokens the tool said, before its first call, they would at most read (the model's tokenizer
  against the tool's count of two characters a token). Goal: at most 1.0x (an estimate that
  says less than the work takes lets a budget be overrun). What they wrote is capped per call,
  so cannot pass its estimate; it is printed for context.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _goals import Goals, machine

from agent.asking import TaskModel
from agent.backends.base import DeltaSink, ModelBackend, ModelRequest, ModelResponse
from agent.backends.local import LocalBackend, bundled_model
from base.artifacts import FolderArtifacts
from documents.index import Index
from tools.asking import Allowance
from tools.mapping import map_documents
from tools.tool import ToolContext

CORPUS = Path("/usr/share/doc/python3.11/html/_sources/library/functools.rst.txt")
ROUNDS = 3
ANSWER_TOKENS = 48


class Recorded(ModelBackend):
    """The backend, with every request the tool sent kept to be sent again."""

    def __init__(self, real: LocalBackend) -> None:
        self.real, self.name, self.runs_locally = real, real.name, True
        self.context_window = real.context_window
        self.requests: list[ModelRequest] = []

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaSink | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        return await self.real.complete(request, on_delta=on_delta)


async def one_round(n: int, library: Path, real: LocalBackend, home: Path) -> tuple[float, ...]:
    """(tool seconds, straight seconds, tokens read, estimated, tokens written, estimated) of
    round `n`."""
    instruction = f"Name each function described, in one line each (pass {n})."
    recorded = Recorded(real)
    model = TaskModel(recorded, f"bench-{n}", 0, Allowance(None, None, 0.0, 0.0), {})
    ctx = ToolContext(
        f"bench-{n}",
        "call",
        "key",
        artifacts=FolderArtifacts(home / f"artifacts-{n}"),
        library=library,
        model=model,
    )
    args = {"instruction": instruction, "parallel": 1}
    estimated = await map_documents.run({**args, "estimate_only": True}, ctx, None)
    said = re.search(r"\(([\d,]+) read, ([\d,]+) written\)", estimated.result.content)
    assert said is not None, estimated.result.content
    started = time.perf_counter()
    ran = await map_documents.run(args, ctx, None)
    tool_seconds = time.perf_counter() - started
    assert ran.result.ok, ran.result.content
    spent = model.spent()
    started = time.perf_counter()
    for request in recorded.requests:  # the same calls, straight to the backend
        await real.complete(request)
    straight = time.perf_counter() - started
    read, written = (float(said[i].replace(",", "")) for i in (1, 2))
    return tool_seconds, straight, spent.input_tokens, read, spent.output_tokens, written


async def measured(library: Path, home: Path) -> list[tuple[float, ...]]:
    real = LocalBackend(bundled_model(), slots=1, max_tokens=ANSWER_TOKENS)
    try:
        await real.load()
        return [await one_round(n, library, real, home) for n in range(ROUNDS)]
    finally:
        await real.aclose()


def main() -> None:
    if not CORPUS.is_file():
        sys.exit(f"no corpus at {CORPUS}: run scripts/ensure-media (Debian's python3.11-doc)")
    print(machine())
    goals = Goals()
    with tempfile.TemporaryDirectory(prefix="agent-mapping-") as tmp:
        home = Path(tmp)
        with Index.open(home / "index") as index:
            index.add([CORPUS])
            passages = index.count()
        rounds = asyncio.run(measured(home / "index", home))
    for n, (tool, straight, read, most, wrote, most_out) in enumerate(rounds):
        print(
            f"round {n}: map_documents {tool:.1f} s, the same calls straight {straight:.1f} s; "
            f"read {read:,.0f} tokens of {most:,.0f} estimated, wrote {wrote:,.0f} of "
            f"{most_out:,.0f}"
        )
    print(f"{passages} passages of {CORPUS.name}; answers capped at {ANSWER_TOKENS} tokens")
    overhead = statistics.median(r[0] / r[1] for r in rounds)
    print(goals.add("map_documents_over_straight_calls", overhead, "<= 1.1x"))
    print(goals.add("tokens_read_over_estimate", max(r[2] / r[3] for r in rounds), "<= 1.0x"))
    goals.finish()


if __name__ == "__main__":
    main()
