"""Local models: the runtime's decoding against llama-cpp-python's own, what holding an answer to a
tool call's schema costs, what the KV cache saves on a task's later steps, and what the CPU path
for AMX machines (no weight repacking) costs here.

Everything runs on the bundled SmolLM2-135M-Instruct (no network), through the model worker
process, as the runtime runs it. Each goal is the median over rounds of a per-round ratio, both
sides measured in the same round (in alternating order where order is free), so that a busy
machine slows both.

- local_runtime_vs_direct: decoding speed of `LocalBackend.complete` without tools (the worker
  decodes, the pieces cross its socket), against `Llama.create_completion(stream=True)` in this
  process given the same prompt tokens (the model's chat template rendered the same way), greedy,
  repeat penalty 1.1, the same context, batch, threads (half the CPUs to generate, all of them
  for prompts, as the worker), weight repacking and max_tokens. Only one side runs at a time.
  Speed, on both sides: the pieces after the first over the seconds from the first piece to the
  last, stamped as each arrives in this process (`on_delta`; the stream), so evaluating the
  prompt is left out of both.
- constrained_vs_unconstrained: the same speed for a tool call (tool_choice "required", so held
  to the call's grammar) against a free answer to the same messages and tools (tool_choice
  "auto"), through one backend. llama-cpp-python's own grammar against its own free decoding is
  printed beside it, for context. This is the decoder's best case: the model's own choice of
  token mostly fits the grammar, and the grammar is asked about that one token only.
- constrained_worst_vs_unconstrained: its worst case. A story is asked for and the one tool is
  `set_alarm` (hours, minutes, weekdays, a label): the model's free choice breaks the call's
  grammar from its first token, and each token it breaks is corrected against the whole
  vocabulary. The same speed against a free answer to the same request; how many tokens were
  corrected is printed.
- ttft_step2plus_vs_step1: time to first token (`backend.last.first_token_seconds`, measured in
  the worker) of steps 2-4 of an executor's task (its system prompt, every tool the project
  registers, a task header; each step adds a tool call and its result) against step 1 on a
  freshly started worker.
- ttft_after_planner_vs_cold: the same for an executor's step 2 asked right after a planner call
  on the same worker (a replan between two steps), against the executor's step 1 (cold: nothing of
  its prompt cached). With one KV slot the planner's prompt would evict the executor's; the same
  figure with `slots=1` is printed for context.

Before the goals, for context: prompt evaluation and generation speed with llama.cpp's weight
repacking on and off (off is what a CPU with AMX gets), on the bundled model (Q4_1), a Q4_0 copy
of it made here with llama.cpp's quantizer (Q4_0 is what llama.cpp repacks for AVX2), and the
tiny random-weight MoE model the tests write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import llama_cpp
from _goals import Goals, machine
from llama_cpp import Llama
from llama_cpp._utils import suppress_stdout_stderr
from llama_cpp.llama_grammar import LlamaGrammar
from pydantic import BaseModel, Field

from agent.backends._chat import chat_messages, describe_tools, tool_call_schema
from agent.backends._decode import chat_template, tokenize
from agent.backends.base import Delta, Message, ModelRequest, ToolCall
from agent.backends.local import LocalBackend, bundled_model
from agent.loop_tools import EXECUTOR
from agent.prompts import EXECUTOR_SYSTEM, PLANNER_SYSTEM
from base.toolspec import ToolSpec
from tools.registry import Registry
from tools.sandboxed import registry as sandboxed

# The tiny MoE model is written by the tests' helper, which lives beside the package, not in it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.tiny_moe import smollm2_gguf, write_tiny_moe

MAX_TOKENS = 128
REPEAT_PENALTY = 1.1

STORY = (Message(role="user", content="Write a long story about a lighthouse keeper and a storm."),)
POEM = (
    Message(role="system", content=EXECUTOR_SYSTEM),
    Message(
        role="user",
        content="Task: Write a poem of eight lines about the sea to poem.txt\n\nPlan:\n"
        "→ 1. Write the poem to poem.txt\n\nCurrent step (1 of 1): Write the poem to poem.txt",
    ),
)


@dataclass(frozen=True)
class Run:
    """One generation as it streamed: its pieces' count and text, first piece to last."""

    pieces: int
    seconds: float
    text: str

    @property
    def rate(self) -> float:
        return (self.pieces - 1) / self.seconds


class Stamps:
    """Stamps each piece as it arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.texts: list[str] = []

    def __call__(self, delta: Delta) -> None:
        self.add(delta.text)

    def add(self, text: str) -> None:
        self.times.append(time.perf_counter())
        self.texts.append(text)

    def run(self) -> Run:
        assert len(self.times) > 1, "too short to time"
        return Run(len(self.times), self.times[-1] - self.times[0], "".join(self.texts))


def request(
    messages: Sequence[Message],
    tools: Sequence[ToolSpec] = (),
    *,
    turn: int = 0,
    tool_choice: Literal["auto", "required"] = "required",
) -> ModelRequest:
    return ModelRequest(
        task_id="bench",
        purpose="act",
        turn=turn,
        messages=tuple(messages),
        tools=tuple(tools),
        tool_choice=tool_choice,
    )


async def runtime(backend: LocalBackend, req: ModelRequest) -> Run:
    stamps = Stamps()
    await backend.complete(req, on_delta=stamps)
    return stamps.run()


def direct(llm: Llama, tokens: list[int], grammar: LlamaGrammar | None = None) -> Run:
    stream = llm.create_completion(
        tokens,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        repeat_penalty=REPEAT_PENALTY,
        grammar=grammar,
        stream=True,
    )
    assert isinstance(stream, Iterator)
    stamps = Stamps()
    for chunk in stream:
        text = chunk["choices"][0]["text"]
        if text:
            stamps.add(text)
    return stamps.run()


def prompt_tokens(llm: Llama, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[int]:
    """The prompt as `LocalBackend` writes it, with the same functions: the model's own chat
    template, tokenized with special tokens read only in the template's own text."""
    note = describe_tools(tools, constrained=True) if tools else None
    model = llm._model
    return tokenize(model, chat_template(model).render_parts(chat_messages(messages, note)))


GOALS = Goals()


def ratio_line(name: str, ratios: list[float], goal: str) -> str:
    return GOALS.add(name, statistics.median(ratios), goal)


# --- the goals -------------------------------------------------------------------------------


async def versus_direct(backend: LocalBackend, llm: Llama, rounds: int) -> str:
    req = request(STORY)
    tokens = prompt_tokens(llm, STORY, ())
    await runtime(backend, req)  # warm both: the prompt in each one's cache, buffers allocated
    assert backend.last is not None
    assert backend.last.prompt_tokens == len(tokens), "the two sides' prompts differ"
    direct(llm, tokens)
    ratios, ours, theirs = [], [], []
    for i in range(rounds):
        if i % 2:
            theirs_run = direct(llm, tokens)
            ours_run = await runtime(backend, req)
        else:
            ours_run = await runtime(backend, req)
            theirs_run = direct(llm, tokens)
        ours.append(ours_run)
        theirs.append(theirs_run)
        ratios.append(ours_run.rate / theirs_run.rate)
    print("-- decoding, no tools: LocalBackend.complete vs Llama.create_completion")
    print(f"prompt: {len(tokens)} tokens; max_tokens {MAX_TOKENS}; greedy; repeat penalty 1.1")
    assert backend.last is not None
    print(f"runtime: {_speed(ours)}, {backend.last.output_tokens} tokens in its last run")
    print(f"direct:  {_speed(theirs)}")
    # They may write different text: llama-cpp-python's repeat penalty counts only the tokens
    # generated, LocalBackend's the last 64 of the context, the prompt's included.
    same = sum(a.text == b.text for a, b in zip(ours, theirs, strict=True))
    print(f"same text from both sides in {same} of {rounds} rounds")
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in sorted(ratios))}")
    return ratio_line("local_runtime_vs_direct", ratios, ">= 0.9x")


async def constrained(backend: LocalBackend, llm: Llama, rounds: int) -> str:
    # One tool that takes prose, so the call is long enough to time.
    tools = _write_file()
    held = request(POEM, tools, tool_choice="required")
    free = request(POEM, tools, tool_choice="auto")
    tokens = prompt_tokens(llm, POEM, tools)
    grammar = LlamaGrammar.from_json_schema(json.dumps(tool_call_schema(tools)), verbose=False)
    await runtime(backend, held)
    await runtime(backend, free)
    ratios, held_runs, free_runs, theirs, their_held, their_free = [], [], [], [], [], []
    for i in range(rounds):
        if i % 2:
            free_run = await runtime(backend, free)
            held_run = await runtime(backend, held)
            # llama-cpp-python's own grammar sampler against its free decoding, for context.
            their_free_run = direct(llm, tokens)
            their_held_run = direct(llm, tokens, grammar)
        else:
            held_run = await runtime(backend, held)
            free_run = await runtime(backend, free)
            their_held_run = direct(llm, tokens, grammar)
            their_free_run = direct(llm, tokens)
        held_runs.append(held_run)
        free_runs.append(free_run)
        ratios.append(held_run.rate / free_run.rate)
        their_held.append(their_held_run)
        their_free.append(their_free_run)
        theirs.append(their_held_run.rate / their_free_run.rate)
    print("-- a tool call held to its grammar vs a free answer, one LocalBackend")
    print(f"{len(tokens)} prompt tokens; the call: write_file, whose content is prose")
    print(f"runtime held: {_speed(held_runs)}; free: {_speed(free_runs)}")
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in sorted(ratios))}")
    print(
        f"for context, llama-cpp-python held: {_speed(their_held)}; free: {_speed(their_free)}; "
        f"{statistics.median(theirs):.2f}x"
    )
    return ratio_line("constrained_vs_unconstrained", ratios, ">= 0.8x")


class Alarm(BaseModel):
    """Set an alarm."""

    hour: int = Field(ge=0, le=23)
    minute: int = Field(ge=0, le=59)
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]]
    label: str


#: The worst case for a decoder that asks the grammar about the model's own choice first: a story
#: asked for, and the only tool one whose call is nothing like a story, so that the model's free
#: choice breaks the grammar from the first token on.
ALARM = ToolSpec(
    name="set_alarm", description="Set an alarm.", parameters=Alarm.model_json_schema()
)


async def constrained_worst(backend: LocalBackend, rounds: int) -> str:
    held = request(STORY, (ALARM,), tool_choice="required")
    free = request(STORY, (ALARM,), tool_choice="auto")
    await runtime(backend, held)
    await runtime(backend, free)
    ratios, held_runs, free_runs, corrected = [], [], [], []
    for i in range(rounds):
        order = (held, free) if i % 2 == 0 else (free, held)
        runs = {}
        for req in order:
            runs[req.tool_choice] = await runtime(backend, req)
            assert backend.last is not None
            if req is held:
                corrected.append((backend.last.corrected, backend.last.output_tokens))
        held_runs.append(runs["required"])
        free_runs.append(runs["auto"])
        ratios.append(runs["required"].rate / runs["auto"].rate)
    fixed, total = corrected[-1]
    print("-- the worst case: a story asked for, held to a call of set_alarm, vs a free answer")
    print(f"runtime held: {_speed(held_runs)}; free: {_speed(free_runs)}")
    print(
        f"tokens where the model's first choice broke the grammar: {fixed} of {total} "
        f"(per round: {', '.join(f'{a}/{b}' for a, b in corrected)})"
    )
    print(f"held call: {held_runs[-1].text[:120]!r}")
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in sorted(ratios))}")
    return ratio_line("constrained_worst_vs_unconstrained", ratios, ">= 0.7x")


def _speed(runs: Sequence[Run]) -> str:
    return (
        f"{statistics.median(r.rate for r in runs):5.1f} tokens/s "
        f"({statistics.median(r.pieces for r in runs)} pieces)"
    )


def _write_file() -> tuple[ToolSpec, ...]:
    tool = sandboxed.get("write_file")
    assert tool is not None
    return (tool.spec,)


#: what the executor is told in steps 2-4: one call and its result each, as the loop records them
EXCHANGES = [
    ("read_file", {"path": "notes.txt"}, "meeting at 10\nbuy milk\ncall Ana about the report\n"),
    ("calculate", {"expression": "3 * 7"}, "21"),
    ("list_files", {"path": "."}, "notes.txt\nreport.md\ndata/\n"),
]


def executor_steps() -> list[ModelRequest]:
    """A task's first four executor requests, with the tools the runner gives the executor."""
    registry = Registry()
    registry.load_entry_points()
    tools = registry.specs() + EXECUTOR.specs()
    header = (
        "Task: Summarise notes.txt and say how many tasks it lists\n\nPlan:\n"
        "→ 1. Read notes.txt\n  2. Count the tasks\n\nCurrent step (1 of 2): Read notes.txt"
    )
    messages = [
        Message(role="system", content=EXECUTOR_SYSTEM),
        Message(role="user", content=header),
    ]
    steps = [request(messages, tools)]
    for turn, (name, arguments, result) in enumerate(EXCHANGES, 1):
        call = ToolCall(id=f"call_{turn}", name=name, arguments=json.dumps(arguments))
        messages += [
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", tool_call_id=call.id, content=result),
        ]
        steps.append(request(messages, tools, turn=turn))
    return steps


async def time_to_first_token(path: Path, threads: int | None, rounds: int) -> str:
    # No second attempt at an invalid call: `last` is then always the step's one generation.
    backend = LocalBackend(path, threads=threads, max_tokens=32, repair_attempts=0)
    steps = executor_steps()
    firsts, laters, ratios = [], [], []
    prompts: list[tuple[int, int]] = []
    try:
        for _ in range(rounds):
            await backend.stop_worker()  # a fresh worker: nothing cached
            await backend.load()
            seconds = []
            prompts = []
            for req in steps:
                await backend.complete(req)
                assert backend.last is not None
                seconds.append(backend.last.first_token_seconds)
                prompts.append((backend.last.prompt_tokens, backend.last.reused_tokens))
            later = statistics.median(seconds[1:])
            firsts.append(seconds[0])
            laters.append(later)
            ratios.append(later / seconds[0])
    finally:
        await backend.stop_worker()
    print("-- time to first token: an executor's steps 2-4 vs step 1 on a fresh worker")
    print(
        "prompt tokens (reused from the cache) per step: "
        + ", ".join(f"{n:,} ({reused:,})" for n, reused in prompts)
    )
    print(
        f"step 1: {statistics.median(firsts) * 1e3:7.1f} ms; "
        f"steps 2-4: {statistics.median(laters) * 1e3:7.1f} ms"
    )
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in sorted(ratios))}")
    return ratio_line("ttft_step2plus_vs_step1", ratios, "<= 0.25x")


def planner_request(turn: int) -> ModelRequest:
    """A planner's call on the task `executor_steps` carries out."""
    task = "Task: Summarise notes.txt and say how many tasks it lists"
    messages = [
        Message(role="system", content=PLANNER_SYSTEM),
        Message(role="user", content=task),
    ]
    return request(messages, turn=turn, tool_choice="auto")


async def after_planner(path: Path, threads: int | None, rounds: int, slots: int) -> list[float]:
    """Per round: TTFT of an executor's step 2 asked right after a planner call, over its cold
    step 1 (both on one fresh worker with `slots` KV slots)."""
    backend = LocalBackend(path, threads=threads, max_tokens=32, repair_attempts=0, slots=slots)
    steps = executor_steps()
    ratios = []
    try:
        for _ in range(rounds):
            await backend.stop_worker()
            await backend.load()
            await backend.complete(planner_request(0))
            await backend.complete(steps[0])
            assert backend.last is not None
            cold = backend.last.first_token_seconds
            await backend.complete(planner_request(2))  # a replan between two steps
            await backend.complete(steps[1])
            assert backend.last is not None
            ratios.append(backend.last.first_token_seconds / cold)
    finally:
        await backend.stop_worker()
    return ratios


async def kv_slots(path: Path, threads: int | None, rounds: int) -> str:
    ratios = await after_planner(path, threads, rounds, slots=2)
    one = await after_planner(path, threads, rounds, slots=1)
    print("-- time to first token: an executor's step right after a planner call vs a cold step")
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in sorted(ratios))}")
    print(f"for context, with one KV slot: {statistics.median(one):.2f}x")
    return ratio_line("ttft_after_planner_vs_cold", ratios, "<= 0.25x")


async def repacking(threads: int | None, rounds: int, folder: Path) -> None:
    """For context: speed with weight repacking on and off (off: what AMX machines get)."""
    bundled = bundled_model()
    q4_0 = folder / "smollm2-q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    with suppress_stdout_stderr(disable=False):  # it prints every tensor
        made = llama_cpp.llama_model_quantize(str(bundled).encode(), str(q4_0).encode(), params)
    if made != 0:
        raise RuntimeError("llama.cpp could not quantize the bundled model to Q4_0")
    moe = write_tiny_moe(folder / "tiny-moe.gguf", tokenizer_from=smollm2_gguf())
    print("-- llama.cpp weight repacking on (this CPU's default) vs off (the AMX path)")
    print("model         repack  prompt tokens/s  generation tokens/s")
    for name, path in (("smollm2 q4_1", bundled), ("smollm2 q4_0", q4_0), ("tiny moe", moe)):
        speeds: dict[bool, tuple[float, float]] = {}
        for repack in (True, False):
            backend = LocalBackend(path, threads=threads, max_tokens=64, repack=repack, slots=1)
            prompt, generate = [], []
            try:
                await backend.load()
                for turn in range(rounds):
                    # A new prompt each time, from its first token: nothing of it is cached.
                    story = f"Story {turn}. {STORY[0].content} " * 8
                    await backend.complete(request([Message(role="user", content=story)]))
                    assert backend.last is not None
                    last = backend.last
                    prompt.append(last.prompt_tokens / last.first_token_seconds)
                    generate.append(max(last.output_tokens - 1, 1) / last.decode_seconds)
            finally:
                await backend.stop_worker()
            speeds[repack] = (statistics.median(prompt), statistics.median(generate))
            print(
                f"{name:13} {'on' if repack else 'off':6} {speeds[repack][0]:15.0f} "
                f"{speeds[repack][1]:20.1f}"
            )
        on, off = speeds[True], speeds[False]
        print(
            f"for context, {name} without repacking: prompt {off[0] / on[0]:.2f}x, "
            f"generation {off[1] / on[1]:.2f}x"
        )


async def bench(rounds: int, threads: int | None) -> list[str]:
    path = bundled_model()
    with tempfile.TemporaryDirectory() as folder:
        await repacking(threads, rounds, Path(folder))
    backend = LocalBackend(path, threads=threads, max_tokens=MAX_TOKENS)
    info = await backend.load()
    assert backend.worker is not None
    cpus = os.cpu_count() or 1
    # The direct side as the worker sets llama.cpp up: context, batch, threads, repacking, seed.
    llm = Llama(
        model_path=str(path),
        n_ctx=info.context_window,
        n_batch=min(512, info.context_window),
        n_threads=threads or max(cpus // 2, 1),
        n_threads_batch=threads or cpus,  # as `agent.backends._engine` sets the worker's
        seed=0,
        verbose=False,
    )
    generate, prompts = threads or max(cpus // 2, 1), threads or cpus
    print(
        f"model: {info.summary()}; rounds: {rounds}; threads on both sides (the worker's rule, "
        f"{'--threads' if threads else 'its default'}): {generate} to generate, {prompts} for "
        "prompts"
    )
    print(f"worker: pid {backend.worker.pid}; {backend.worker.path_reason}")
    if not backend.worker.repack:
        print("note: the worker does not repack here (AMX); the direct side does (its default)")
    try:
        goals = [await versus_direct(backend, llm, rounds), await constrained(backend, llm, rounds)]
        goals.append(await constrained_worst(backend, rounds))
    finally:
        llm.close()
        await backend.stop_worker()
    goals.append(await time_to_first_token(path, threads, rounds))
    goals.append(await kv_slots(path, threads, rounds))
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per goal (default 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: LocalBackend's)"
    )
    args = parser.parse_args()
    print(machine())
    for line in asyncio.run(bench(args.rounds, args.threads)):
        print(line)
    GOALS.finish()


if __name__ == "__main__":
    main()
