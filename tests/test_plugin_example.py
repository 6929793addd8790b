"""The example plugin, as a developer would ship it: installed with the runtime into a fresh
virtual environment, its tools are listed with their package and called in a task; a broken
plugin installed beside it is skipped with a warning and stops nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "examples" / "plugins"


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the runtime (built from this checkout, not editable) and
    both example plugins installed by pip, as a user would."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Built from copies, so that the builds leave nothing in the checkout.
    skip = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__")
    source = root / "runtime"
    shutil.copytree(REPO, source, ignore=skip)
    for plugin in ("weather", "broken"):
        shutil.copytree(PLUGINS / plugin, root / plugin, ignore=skip)
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            str(source),
            str(root / "weather"),
            str(root / "broken"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1500,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def agent(venv: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "agent"), *args],
        cwd=home,
        env={**env, "AGENT_HOME": str(home / "agent-home"), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_an_installed_plugin_is_listed_and_called_and_a_broken_one_stops_nothing(
    fresh_env: Path, tmp_path: Path
) -> None:
    listed = agent(fresh_env, tmp_path, "tools", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if row.split()[:1] == ["forecast"]]
    assert "entry point weather = weather_tools (package agent-weather-example 1.0.0)" in line
    assert "Tomorrow's weather in a city." in line
    warning = (
        "warning: skipped the tools of entry point broken = broken_tools (package "
        "agent-broken-example 0.1.0): ModuleNotFoundError: No module named "
        "'a_dependency_nobody_installed'"
    )
    assert warning in listed.stderr
    script = PLUGINS / "weather" / "script.json"
    ran = agent(fresh_env, tmp_path, "run", "weather", "--model", f"scripted:{script}", "--json")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "done"
    assert warning in ran.stderr
    shown = agent(fresh_env, tmp_path, "show", result["task_id"])
    assert '← {"city": "Oslo", "sky": "sunny", "celsius": 4}' in shown.stdout
