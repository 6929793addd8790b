"""Every example of docs/tools.md, run: the guide says what the code does."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from frontends.task_setup import registry_of
from policies import Gate, RequireApproval
from tools import Registry, ToolContext

REPO = Path(__file__).resolve().parent.parent
GUIDE = (REPO / "docs" / "tools.md").read_text()
AGENT = Path(sys.executable).parent / "agent"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE, flags=re.DOTALL)


@pytest.fixture
def guide(tmp_path: Path) -> Path:
    """The guide's Python examples, each in the file its first line names, and its script."""
    for code in blocks("python"):
        name = code.splitlines()[0].removeprefix("# ").strip()
        assert name.endswith(".py"), f"an example without its file name: {code[:60]!r}"
        (tmp_path / name).write_text(code)
    [script] = blocks("json")
    (tmp_path / "count.json").write_text(script)
    return tmp_path


def loaded(folder: Path, name: str) -> Registry:
    registry = Registry()
    registry.load_module(str(folder / name))
    return registry


def test_the_first_example_runs_as_the_guide_shows(guide: Path, home: Path) -> None:
    commands = [shlex.split(line) for line in blocks("sh")[0].splitlines()]
    assert commands[0][:2] == ["agent", "run"]
    ran = subprocess.run(
        [str(AGENT), *commands[0][1:], "--json"],
        cwd=guide,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["answer"] == "3 words"
    listed = subprocess.run(
        [str(AGENT), *commands[1][1:]], cwd=guide, capture_output=True, text=True, check=True
    )
    assert "word_count" in listed.stdout
    assert "warning" not in listed.stderr  # the example is documented as the guide asks


async def test_return_values_read_as_the_table_says(guide: Path) -> None:
    registry = loaded(guide, "guide_returns.py")
    thermometer, today = registry.get("thermometer"), registry.get("today")
    assert thermometer is not None
    assert today is not None
    assert (await thermometer.invoke({}, None)).content == "21.5 °C"
    assert (await today.invoke({}, None)).content == '"2026-12-03"'


async def test_the_async_example_waits(guide: Path) -> None:
    pause = loaded(guide, "guide_async.py").get("pause")
    assert pause is not None
    assert (await pause.invoke({"seconds": 0.01}, None)).content == "waited 0.01 s"


async def test_the_effects_example_asks_and_reconciles(guide: Path) -> None:
    pay = loaded(guide, "guide_effects.py").get("pay")
    assert pay is not None
    assert pay.touches == "external"
    assert callable(pay.needs_approval)
    assert pay.needs_approval({"to": "bob", "amount": 500})
    assert not pay.needs_approval({"to": "bob", "amount": 5})
    assert isinstance(Gate.default().evaluate(pay, {"to": "bob", "amount": 5}), RequireApproval)
    ctx = ToolContext(task_id="t", call_id="c", idempotency_key="t/1.0")
    assert pay.reconcile is not None
    assert pay.reconcile(ctx) is None  # not sent yet
    await pay.invoke({"to": "bob", "amount": 5}, ctx)
    assert pay.reconcile(ctx) == "paid bob 5 EUR"


def test_replaces_takes_the_built_in_s_place(guide: Path) -> None:
    registry = registry_of([str(guide / "guide_replace.py")])
    replaced = registry.get("current_time")
    assert replaced is not None
    assert replaced.fn() == "2026-12-03T12:00:00+00:00"
    assert registry.source_of("current_time").kind == "file"


def test_a_trailing_answer_turn_is_said_as_the_guide_says(guide: Path, home: Path) -> None:
    script: dict[str, Any] = json.loads((guide / "count.json").read_text())
    script["turns"].append({"answer": "3 words"})
    (guide / "extra.json").write_text(json.dumps(script))
    ran = subprocess.run(
        [str(AGENT), "run", "x", "--tools", "guide_first.py", "--model", "scripted:extra.json"],
        cwd=guide,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "turn 4 was never used" in ran.stdout + ran.stderr
