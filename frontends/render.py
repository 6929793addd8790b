"""Rendering a task's events for people: live during a run, and whole in `agent show`.

The loop never imports this module; the CLI subscribes a `Renderer` to the runner's live
stream. Every piece of text that came from outside (a model, a page, a tool, a file, a command,
the task) is printed through `frontends.screen`: nothing in it can move the cursor, restyle or
reorder the screen.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal, assert_never

from rich.console import Console
from rich.panel import Panel

from agent.backends.base import Delta, Purpose
from agent.events import (
    ApprovalDecided,
    ApprovalEscalated,
    ApprovalGiven,
    ApprovalRequested,
    Attachment,
    CallRejected,
    EgressDecided,
    GateDecided,
    InstructionAdded,
    IntentRecorded,
    LateResult,
    LimitsRaised,
    ModelResponded,
    OutcomeUnknown,
    PlanProposed,
    ReplanRequested,
    ReplyRejected,
    StepFinished,
    StepStarted,
    TaskCreated,
    TaskFailed,
    TaskFinished,
    TaskPaused,
    TaskResumed,
    TaskStuck,
    ToolResulted,
    ToolsOffered,
)
from agent.live import CommandOutput, Live, ModelDelta
from agent.store import StoredEvent
from base.words import counted
from frontends.screen import plain, shown


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


class Renderer:
    """Prints events to a console. `detailed` (for `agent show`) adds sequence numbers, times,
    and longer excerpts of tool output."""

    def __init__(self, console: Console, *, detailed: bool = False) -> None:
        self.console = console
        self.detailed = detailed
        self.limit = 2000 if detailed else 240
        #: a command's output was shown as it came: its result need not repeat it
        self._streamed = False
        #: the model's answer is being shown as it comes (None: it is not)
        self._live: Literal["text", "tool_call"] | None = None
        #: the answer's text was shown as it came: its event need not repeat it
        self._text_shown = False
        #: the next piece of a command's output starts a line (and gets the gutter)
        self._line_start = True

    def __call__(self, item: Live) -> None:
        """Show one item of the live stream (or of a task's history: its events)."""
        match item:
            case StoredEvent():
                self.event(item)
            case CommandOutput():
                self.output(item.task_id, item.stream, item.text, repeated=item.source == "command")
            case ModelDelta():
                self.delta(item.task_id, item.purpose, item.delta)
            case _:
                assert_never(item)

    def event(self, stored: StoredEvent) -> None:
        if self._live is not None:
            self.console.print()  # end the line the answer was streamed on
            self._live = None
        line = self.line(stored)
        self._text_shown = False
        self._line_start = True
        if line is None:
            return
        if self.detailed:
            when = datetime.fromtimestamp(stored.ts).strftime("%H:%M:%S")
            prefix = f"[dim]{stored.seq:>4} {when}[/] "
            if isinstance(line, str):
                line = prefix + line
            else:
                self.console.print(prefix + f"[dim]{stored.event.kind}[/]")
        self.console.print(line)

    def output(self, task_id: str, stream: str, text: str, *, repeated: bool = True) -> None:
        """Show a sandbox command's output (or what a tool prints) as it comes (dim; stderr in
        red), each line behind a gutter, so that nothing it prints (a drawn "approval needed"
        panel, say) can pass for the runtime's own. `repeated`: the result will hold it too."""
        del task_id
        self._streamed = self._streamed or repeated
        pieces = []
        for line in plain(text).splitlines(keepends=True):
            pieces.append((OUTPUT_GUTTER if self._line_start else "") + line)
            self._line_start = line.endswith("\n")
        self.console.print(
            "".join(pieces),
            end="",
            style="red dim" if stream == "stderr" else "dim",
            markup=False,
            highlight=False,
        )

    def delta(self, task_id: str, purpose: Purpose, delta: Delta) -> None:
        """Show a model's answer as it comes (dim), so a slow model is not silence."""
        del task_id, purpose
        if self._live != delta.kind:
            if self._live is not None:
                self.console.print()
            self.console.print("    … " if delta.kind == "text" else "    ⋯ ", end="", style="dim")
            self._live = delta.kind
        self._text_shown |= delta.kind == "text"
        self.console.print(plain(delta.text), end="", style="dim", markup=False, highlight=False)

    def restart(self) -> None:
        """The answer being streamed is void: the model is being asked again (a retry after a
        cut-off stream, say). Its line is ended, and the next answer is shown whole."""
        if self._live is not None:
            self.console.print(" [dim]✂[/]")
            self._live = None
        self._text_shown = False

    def line(self, stored: StoredEvent) -> str | Panel | None:
        e, cut = stored.event, self.limit
        match e:
            case TaskCreated():
                head = (
                    f"[bold]▶ task {stored.task_id}[/] {shown(e.task)}  [dim]({shown(e.model)})[/]"
                )
                return "\n".join([head, *(f"  [dim]with[/] {given(f)}" for f in e.files)])
            case PlanProposed():
                head = (
                    "[bold]Plan[/]"
                    if e.replan_reason is None
                    else f"[bold yellow]New plan[/] [dim](after: {shown(e.replan_reason)})[/]"
                )
                if e.by == "user":
                    head += " [dim](as you wrote it)[/]"
                steps = "\n".join(f"  {i}. {shown(s)}" for i, s in enumerate(e.steps, 1))
                return f"{head}\n{steps}"
            case StepStarted():
                return f"[bold cyan]● step {e.index + 1}[/] {shown(e.title)}"
            case InstructionAdded():
                return f"[bold]✎ you told it:[/] {shown(e.text)}"
            case ModelResponded():
                return self._response(e)
            case ReplyRejected():
                return f"    [red]✗ reply rejected:[/] {shown(_cut(e.error, cut))}"
            case CallRejected():
                return f"    [red]✗ {shown(_cut(e.tool, 60))}:[/] {shown(_cut(e.error, cut))}"
            case GateDecided():
                if e.verdict == "deny":
                    return (
                        f"    [red]⛔ denied by policy[/] ({shown(e.rule or '')}): "
                        f"{shown(e.reason)}"
                    )
                return (
                    f"    [dim]gate: {e.verdict} ({shown(e.rule or '')})[/]"
                    if self.detailed
                    else None
                )
            case ApprovalRequested():
                body = self._approval_body(e)
                return Panel(
                    body,
                    title=f"approval needed · {e.approval_id} · {e.short_hash}",
                    expand=False,
                    border_style="yellow",
                )
            case ApprovalDecided():
                who = f" by {shown(e.reviewer)}" if e.reviewer else ""
                why = f": {shown(e.reason)}" if e.reason else ""
                return (
                    f"    [green]✓ approved{who}[/]{why}"
                    if e.approved
                    else f"    [red]✗ declined{who}[/]{why}"
                )
            case ApprovalEscalated():
                return f"    [yellow]⇡ escalated to {shown(', '.join(e.to))}[/]: {shown(e.reason)}"
            case ApprovalGiven():
                who = shown(e.reviewer)
                return f"    [green]✓ approved by {who}[/] [dim](it waits for more reviewers)[/]"
            case IntentRecorded():
                return (
                    f"    [dim]intent recorded ({e.idempotency_key})[/]" if self.detailed else None
                )
            case ToolResulted() | OutcomeUnknown() | LateResult():
                return self._result(e, cut)
            case ToolsOffered():
                if not self.detailed:
                    return None  # the same tools each run: `agent show` has them
                names = ", ".join(t.name for t in e.tools)
                return f"  [dim]tools offered ({len(e.tools)}): {shown(_cut(names, cut))}[/]"
            case EgressDecided():
                mark = "[green]allowed[/]" if e.allowed else "[red]refused[/]"
                where = f" ({shown(e.address)})" if e.address and e.address != e.host else ""
                return (
                    f"    [dim]↗ egress {e.method} {shown(e.host)}:{e.port}{where}[/] {mark}"
                    f" [dim]{shown(e.reason)}[/]"
                )
            case StepFinished():
                return f"  [green]✓ step {e.index + 1} done:[/] {shown(_cut(e.summary, cut))}"
            case ReplanRequested():
                return f"  [yellow]↻ replanning:[/] {shown(e.reason)}"
            case TaskPaused():
                detail = e.detail if self.detailed else e.detail.split("\n", 1)[0]
                line = f"[yellow]⏸ paused ({e.reason}):[/] {shown(_cut(detail, cut))}"
                if "\n" in e.detail and not self.detailed:
                    line += f" [dim](`agent show {stored.task_id}` has the traceback)[/]"
                if e.reason == "interrupted" and not self.detailed:
                    line += f" [dim]— `agent resume {stored.task_id}` continues it[/]"
                return line
            case LimitsRaised():
                raised = ", ".join(f"{k}={v}" for k, v in e.limits.model_dump().items() if v)
                return f"[dim]limits now: {raised}[/]"
            case TaskResumed():
                return "[bold]▶ resumed[/]"
            case TaskFinished():
                return f"[bold green]✔ done:[/] {shown(e.answer)}"
            case TaskFailed():
                return f"[bold red]✘ failed:[/] {shown(e.reason)}"
            case TaskStuck():
                return f"[bold red]✘ stuck:[/] {shown(e.reason)}"
            case _:
                assert_never(e)

    def _result(self, e: ToolResulted | OutcomeUnknown | LateResult, cut: int) -> str:
        """What a call did: its result, an unknown outcome, or a result that came late."""
        match e:
            case ToolResulted():
                mark = "[green]←[/]" if e.ok else "[red]← error:[/]"
                how = f" [dim]({e.recovery})[/]" if e.recovery else ""
                content = e.content
                if self._streamed and not self.detailed:
                    self._streamed = False
                    content = content.split("\n", 1)[0]  # the output is on the screen above
                line = f"    {mark} {shown(_cut(content, cut))}{how}"
                if e.printed and self.detailed:
                    printed = _cut(e.printed.rstrip("\n"), cut).split("\n")
                    line += "".join(f"\n      [dim]│ {shown(part)}[/]" for part in printed)
                return line
            case OutcomeUnknown():
                return f"    [yellow]? outcome unknown:[/] {shown(e.reason)}"
            case LateResult():
                mark = "[yellow]← late result[/]" if e.ok else "[red]← late error[/]"
                return f"    {mark} of {e.ref} ({shown(e.tool)}): {shown(_cut(e.content, cut))}"
            case _:
                assert_never(e)

    def _approval_body(self, e: ApprovalRequested) -> str:
        """What a reviewer reads in the panel, fitted to the screen: where the call goes and why
        it is asked first and always whole; a long value folded, with its length; arguments
        beyond the screen's height left to `agent show`, which shows everything."""
        if self.detailed:
            return f"{shown(e.reason)}\n\n{shown(e.preview)}"
        width, height = self.console.size
        fold = max(40, width - 8)  # the panel's borders and padding
        # Where the call goes is never cut (a long one wraps); anything else is folded.
        lines = [
            line if line.startswith(_DESTINATION) else _fold(line, fold)
            for line in e.preview.splitlines()
        ]
        head = next((i for i, line in enumerate(lines) if line == "arguments:"), len(lines))
        room = max(head + 4, height - 10)  # the title, the reason, the prompt below
        if len(lines) > room:
            left = len(lines) - room + 1
            lines = [*lines[: room - 1], f"[{left} more lines: `agent show` has them all]"]
        return f"{shown(_fold(e.reason, fold))}\n\n" + "\n".join(shown(line) for line in lines)

    def _response(self, e: ModelResponded) -> str | None:
        parts = []
        if e.response.text.strip() and not self._text_shown:
            parts.append(f"    [dim]“{shown(_cut(e.response.text, self.limit))}”[/]")
        if e.purpose == "act":
            for call in e.response.tool_calls:
                parts.append(
                    f"    → [bold]{shown(call.name)}[/]"
                    f"({shown(_cut(_args(call.arguments), self.limit))})"
                )
        if self.detailed:
            u = e.response.usage
            cost = f", ${e.cost_usd:.5f}" if e.cost_usd is not None else ""
            parts.append(
                f"    [dim]{e.purpose} model: {u.input_tokens}+{u.output_tokens} "
                f"tokens, {e.seconds:.2f} s{cost}[/]"
            )
        return "\n".join(parts) or None


#: what every line of a command's streamed output is shown behind
OUTPUT_GUTTER = "    ┆ "

#: how the lines that say where a call goes begin (see `policies._destination`)
_DESTINATION = ("sends a form:", "request:", "⚠ ")


def _fold(line: str, width: int) -> str:
    """`line`, cut to `width` with its length said when it is longer."""
    if len(line) <= width:
        return line
    return f"{line[: width - 32]}… [{len(line):,} characters in all]"


def _args(raw: str) -> str:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if isinstance(value, dict):
        return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
    return raw


def given(file: Attachment) -> str:
    """A file given with a task, as its history says it: its name, what was made of it, and
    where it is kept."""
    if file.indexed:
        made = f"{file.kind}, {counted(file.words or 0, 'word')}, indexed for search_documents"
    elif file.kind == "image":
        made = "a picture"
    elif file.kind == "audio":
        made = "a recording, as its transcript"
    elif file.kind == "video":
        made = f"a video, as {counted(len(file.images), 'key frame')} and its transcript"
    else:
        pages = f", {counted(file.pages, 'page')}" if file.pages is not None else ""
        made = f"{file.kind}{pages}, {counted(len(file.content), 'character')}"
    kept = "" if file.indexed else f"; artifact {shown(file.name)}"
    return f"{shown(file.name)} ({made}{kept})"
