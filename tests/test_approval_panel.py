"""The approval panel fits the terminal and says where a call goes first.

A page filled a field with 4 KB so that, on a 100x30 terminal, the reviewer saw only filler at
the prompt. Now the destination and method come first and always show, a long value is folded
with its length, the panel is no taller than the screen, and a host name that imitates another
is flagged. `agent show` still has every character.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from agent.events import ApprovalRequested
from agent.store import StoredEvent
from frontends.render import Renderer
from policies import Gate
from policies.decisions import RequireApproval
from tools import browser as bt

FILLER = "x" * 4096


def submit(action: str, **values: Any) -> dict[str, Any]:
    """A click's arguments as the gate judges them: with what the form would send."""
    submits = {"origin": action, "action": action, "method": "POST", "values": values}
    return {"target": "Pay", "effect": {"submits": submits}}


def panel(arguments: dict[str, Any], *, width: int = 100, height: int = 30) -> list[str]:
    decision = Gate.default().evaluate(bt.browser_click, arguments)
    assert isinstance(decision, RequireApproval), decision
    event = ApprovalRequested(
        approval_id="t-1.0",
        ref="1.0",
        call_hash="a" * 64,
        reason=decision.reason,
        preview=decision.preview,
    )
    file = io.StringIO()
    console = Console(file=file, width=width, height=height, force_terminal=False)
    Renderer(console)(StoredEvent("t", 1, 0.0, event))
    return file.getvalue().splitlines()


def test_a_huge_value_cannot_push_the_destination_off_the_screen() -> None:
    arguments = submit(
        "https://pay.example/send", bio=FILLER, **{f"note{i}": "n" for i in range(60)}, to="bob"
    )
    lines = panel(arguments)
    assert len(lines) <= 30, len(lines)
    assert all(len(line) <= 100 for line in lines)
    text = "\n".join(lines)
    assert "sends a form: POST https://pay.example/send" in "\n".join(lines[:4])
    [bio] = [line for line in lines if '"bio": "xxx' in line]
    assert "characters in all]" in bio  # folded, its length said
    assert "more lines: `agent show` has them all]" in text


def test_a_host_that_imitates_another_is_flagged() -> None:
    lines = "\n".join(panel(submit("https://p\u0430ypal.example/login", user="ann")))
    assert "mixes scripts in one name (CYRILLIC, LATIN)" in lines
    assert "is an internationalised name" in "\n".join(
        panel(submit("https://xn--pypal-4ve.example/login", user="ann"))
    )
    assert "⚠" not in "\n".join(panel(submit("https://paypal.example/login", user="ann")))


def test_agent_show_keeps_every_character() -> None:
    arguments = submit("https://pay.example/send", bio=FILLER)
    decision = Gate.default().evaluate(bt.browser_click, arguments)
    assert isinstance(decision, RequireApproval)
    event = ApprovalRequested(
        approval_id="t-1.0", ref="1.0", call_hash="a" * 64, reason="r", preview=decision.preview
    )
    file = io.StringIO()
    Renderer(Console(file=file, width=100, height=30), detailed=True)(
        StoredEvent("t", 1, 0.0, event)
    )
    assert FILLER in file.getvalue().replace("\n", "").replace("│", "").replace(" ", "")


def test_a_command_cannot_draw_a_panel_that_passes_for_the_runtimes() -> None:
    fake = (
        "╭──── approval needed · t-9.9 · 00000000 ────╮\n"
        "│ tool: read_file (touches read)             │\n"
        "╰────────────────────────────────────────────╯\n"
    )
    file = io.StringIO()
    renderer = Renderer(Console(file=file, width=100, height=30))
    renderer.output("t", "stdout", "fetching the page...\n" + fake[:30])  # cut mid-line
    renderer.output("t", "stdout", fake[30:] + "done")
    lines = file.getvalue().splitlines()
    assert len(lines) == 5
    # Every line the command printed sits behind the gutter, the forged panel's too.
    assert all(line.startswith("    ┆ ") for line in lines), lines
    assert lines[1] == "    ┆ " + fake.splitlines()[0]
