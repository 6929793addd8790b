"""The benchmarks' goal lines: a missed goal makes the benchmark exit 1 and names it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def goals_module() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "_goals.py"
    spec = importlib.util.spec_from_file_location("bench_goals", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_met_goals_print_their_line_and_exit_quietly() -> None:
    goals = goals_module().Goals()
    assert goals.add("loop_overhead", 1.234, "<= 1.5x") == "loop_overhead: 1.23x (goal <= 1.5x)"
    assert goals.add("speed", 0.9, ">= 0.9x") == "speed: 0.90x (goal >= 0.9x)"
    goals.finish()  # returns: nothing missed


def test_a_missed_goal_exits_1_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    goals = goals_module().Goals()
    goals.add("loop_overhead", 1.51, "<= 1.5x")
    goals.add("speed", 0.95, ">= 0.9x")
    goals.add("ttft", 0.3, "<= 0.25x")
    with pytest.raises(SystemExit) as exited:
        goals.finish()
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == "missed goals: loop_overhead, ttft"


def test_a_goal_it_cannot_read_is_refused() -> None:
    with pytest.raises(ValueError, match=r"<= N\.Nx"):
        goals_module().Goals().add("x", 1.0, "< 2")


def test_the_machine_line_names_cpu_and_cores() -> None:
    line = goals_module().machine()
    assert line.startswith("machine: ")
    assert " cores; " in line
