"""What the CLI prints about tasks and tools: the `--json` summary, listings, a task's history."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.approvals import decide_command, pending_approval
from agent.events import GateDecided, TaskCreated, ToolResulted, ToolsOffered
from agent.state import TaskState
from agent.store import Store, StoredEvent
from frontends.render import Renderer
from frontends.screen import print_json, shown
from tools.documents import cited, search_documents
from tools.mapping import cited_part, map_documents
from tools.registry import Registry
from tools.tool import Tool


def summary(state: TaskState) -> dict[str, Any]:
    """The one JSON object `--json` prints at the end of a run (documented in the README)."""
    request = pending_approval(state)
    return {
        "task_id": state.task_id,
        "status": state.status,
        "answer": state.answer,
        "reason": state.end_reason or (state.pause.detail if state.pause else None),
        "pause_reason": state.pause.reason if state.pause else None,
        "steps": state.steps_taken,
        "plan": list(state.plan),
        "completed_steps": len(state.completed),
        "replans": state.replans,
        "usage": {
            "input_tokens": state.input_tokens,
            "output_tokens": state.output_tokens,
            "cost_usd": round(state.cost_usd, 6) if state.priced else None,
            "seconds": round(state.seconds, 3),
        },
        "pending_approval": None
        if request is None
        else {
            "approval_id": request.approval_id,
            "call_hash": request.call_hash,
            "reason": request.reason,
            "preview": request.preview,
        },
    }


def status_line(state: TaskState, *, events: int | None = None) -> str:
    parts = [
        f"{state.task_id}: {state.status}",
        f"{state.steps_taken} step{'' if state.steps_taken == 1 else 's'}",
        f"{state.input_tokens}+{state.output_tokens} tokens",
    ]
    if state.cost_usd:
        parts.append(f"${state.cost_usd:.4f}")
    parts.append(f"{state.seconds:.1f} s")
    if events is not None:
        parts.append(f"{events} events")
    return f"[dim]{' · '.join(parts)}[/]"


_BUDGET_FLAGS = {
    "steps": "--max-steps N",
    "tokens": "--max-tokens N",
    "time": "--max-seconds S",
    "cost": "--max-cost USD",
}


def next_move(state: TaskState) -> str | None:
    """What a person can do next about a task that stopped short of done."""
    task_id = state.task_id
    if state.status == "awaiting_approval" and (request := pending_approval(state)):
        return f"waiting for a reviewer: {decide_command(task_id, request)}"
    if state.status == "paused" and state.pause is not None:
        pause = state.pause
        if pause.reason == "budget_exhausted":
            used = pause.detail.split(":", 1)[0]  # "steps", "tokens", "time" or "cost"
            flag = _BUDGET_FLAGS.get(used, "--max-steps N")
            return f"continue with a higher limit: agent resume {task_id} {flag}"
        if pause.reason == "tool_crashed":
            return f"fix the tool, then: agent resume {task_id}"
        if pause.reason == "sandbox_error":
            return f"`agent doctor` says what the sandbox needs; then: agent resume {task_id}"
        if pause.reason == "plan_review":
            return (
                f"the plan waits for you: agent resume {task_id} (in a terminal it asks first; "
                "otherwise it runs the plan as it is)"
            )
        if pause.reason == "model_error":
            return f"once the model answers again: agent resume {task_id} [--model URI]"
        return f"continue with: agent resume {task_id}"
    if state.status == "stuck":
        return f"try again with: agent resume {task_id}"
    return None


def print_tasks(
    store: Store, out: Console, *, statuses: list[str] | None, limit: int, as_json: bool
) -> None:
    rows = store.tasks(statuses=statuses, limit=limit)
    if as_json:
        listing = [
            {
                "task_id": r.id,
                "status": r.status,
                "task": r.task,
                "created": r.created,
                "updated": r.updated,
            }
            for r in rows
        ]
        print_json(listing)
        return
    if not rows:
        out.print('no tasks yet: agent run "…" starts one')
        return
    table = Table("id", "status", "updated", "task", box=None)
    for r in rows:
        when = datetime.fromtimestamp(r.updated).strftime("%Y-%m-%d %H:%M")
        task = r.task if len(r.task) < 70 else r.task[:67] + "..."
        table.add_row(r.id, r.status, when, shown(task))
    out.print(table)
    total = store.count(statuses=statuses)
    if total > len(rows):
        out.print(f"[dim]showing the newest {len(rows)} of {total}; --limit N shows more[/]")


def print_history(store: Store, task_id: str, out: Console, *, as_json: bool) -> None:
    events = store.events(task_id)
    if as_json:
        rows = [{"seq": e.seq, "ts": e.ts, **e.event.model_dump(mode="json")} for e in events]
        print_json(rows)
        return
    render = Renderer(out, detailed=True)
    state = TaskState(task_id)
    for stored in events:
        render(stored)
        state.apply(stored.event, stored.seq)
    out.print(status_line(state, events=len(events)))
    if state.answer and (citations := cited(state.answer, _searched(events))):
        out.print("[bold]Citations[/] (the passages the answer cites)")
        for c in citations:
            page = f", page {c.page}" if c.page is not None else ""
            out.print(
                f"  {shown(f'[cite: {c.cite}]')} {shown(c.path)}{page}, "
                f"section {shown(c.section)}, lines {c.lines}",
                highlight=False,
            )


def _searched(events: list[StoredEvent]) -> list[str]:
    """What the task's searches returned (and the passages it was given first, and the sources
    a map_documents result listed): where the passages its answer may cite are. Another
    tool's output could say anything."""
    tools = {e.event.ref: e.event.tool for e in events if isinstance(e.event, GateDecided)}
    found: list[str] = []
    for e in events:
        if not isinstance(e.event, ToolResulted) or not e.event.ok:
            continue
        if tools.get(e.event.ref) == search_documents.name:
            found.append(e.event.content)
        elif tools.get(e.event.ref) == map_documents.name:  # the model's answer heads it
            found.append(cited_part(e.event.content))
    created = events[0].event if events else None
    if isinstance(created, TaskCreated):
        found += [f.content for f in created.files if f.indexed]
    return found


def print_offered(store: Store, task_id: str, out: Console, *, as_json: bool) -> None:
    """The tools the task's model was told of, each time the set changed, as it was told."""
    offered = [e for e in store.events(task_id) if isinstance(e.event, ToolsOffered)]
    if as_json:
        print_json(
            [
                {
                    "seq": e.seq,
                    "ts": e.ts,
                    "tools": [t.model_dump(mode="json") for t in e.event.tools],
                }
                for e in offered
                if isinstance(e.event, ToolsOffered)
            ]
        )
        return
    if not offered:
        out.print("no record of the tools offered (the task ran before they were recorded)")
    for stored in offered:
        assert isinstance(stored.event, ToolsOffered)
        when = datetime.fromtimestamp(stored.ts).strftime("%Y-%m-%d %H:%M:%S")
        out.print(f"[bold]{len(stored.event.tools)} tools offered[/] (event {stored.seq}, {when})")
        for spec in stored.event.tools:
            out.print(f"\n[bold]{shown(spec.name)}[/]: {shown(spec.description)}")
            schema = json.dumps(spec.parameters, indent=2, ensure_ascii=False)
            out.print(shown(schema), highlight=False)


def print_tools(registry: Registry, out: Console, *, as_json: bool) -> None:
    if as_json:
        tools = [
            {
                "name": t.name,
                "description": t.description,
                "touches": t.touches,
                "touches_declared": t.touches_declared,
                "needs_approval": t.needs_approval
                if isinstance(t.needs_approval, bool)
                else "by arguments",
                "timeout": float(t.timeout),
                "source": {
                    "kind": registry.source_of(t.name).kind,
                    "name": registry.source_of(t.name).name,
                },
                "parameters": t.spec.parameters,
            }
            for t in registry
        ]
        print_json(tools)
        return
    rows = []
    for t in registry:
        source = registry.source_of(t.name)
        rows.append(
            (
                t.name,
                _effect(t),
                f"{t.timeout:g} s",
                "built-in" if source.kind == "built-in" else shown(str(source)),
                shown(t.description.split("\n", 1)[0]),
            )
        )
    table = Table(box=None)
    widths = []
    for i, column in enumerate(("tool", "touches", "timeout", "source")):
        # Whole, each of them; the description takes the rest of the line (`--json` has it all).
        widths.append(max([len(column), *(len(row[i]) for row in rows)]))
        table.add_column(column, no_wrap=True, min_width=widths[-1])
    rest = max(out.width - sum(widths) - 2 * (len(widths) + 1), 20)
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=rest)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _effect(t: Tool) -> str:
    """What a tool touches, as declared, and whether it asks a reviewer itself."""
    text = t.touches if t.touches_declared else f"{t.touches} (undeclared)"
    if t.needs_approval is True:
        return f"{text}, asks"
    if t.needs_approval is not False:
        return f"{text}, may ask"
    return text
