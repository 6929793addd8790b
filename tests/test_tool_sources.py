"""Where tools come from, as a developer registering them sees it: the source of each tool, what
a module registers, duplicate names, replacing and disabling built-ins, broken plugins, and the
runtime run from inside a project whose folders share its packages' names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Config, ToolsConfig
from base.errors import ConfigError
from frontends.doctor import _check_tools
from frontends.task_setup import registry_of
from tools import Registry, tool
from tools.sources import ToolSource

REPO = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / "agent"

TOOL_FILE = '''
from agent_runtime import tool


@tool(touches="read")
def {name}(city: str) -> str:
    """The weather in a city.

    Args:
        city: where.
    """
    return "sunny in " + city
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with its own packages named like the runtime's, each of which fails loudly if
    imported, and a package of tools."""
    root = tmp_path / "project"
    for name in ("tools", "sandbox", "policies", "browser", "agent", "base", "frontends"):
        write(root / name / "__init__.py", f"raise RuntimeError('the project\\'s {name}/')\n")
    write(root / "mytools" / "__init__.py", "")
    write(root / "mytools" / "weather.py", TOOL_FILE.format(name="forecast"))
    write(
        root / "script.json",
        json.dumps(
            {
                "turns": [
                    {"plan": ["Ask for the weather"]},
                    {"tool": "forecast", "args": {"city": "Oslo"}},
                    {"done": "it is sunny in Oslo"},
                ]
            }
        ),
    )
    return root


def run_in(project: Path, command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=project,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("pythonpath", ["", "."])
def test_a_task_runs_from_a_project_with_folders_named_like_the_runtime_s_packages(
    home: Path, project: Path, pythonpath: str
) -> None:
    args = ["run", "weather", "--model", "scripted:script.json", "--tools", "mytools.weather"]
    done = run_in(project, [str(AGENT), *args, "--json"], PYTHONPATH=pythonpath)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "done"
    assert result["answer"] == "it is sunny in Oslo"


def test_without_the_guard_the_project_s_folder_takes_the_runtime_s_place(
    home: Path, project: Path
) -> None:
    """The positive control: importing the runtime's command module directly, with the project
    on the path first, is what broke; the test above would have seen it."""
    args = ["tools", "list", "--tools", "mytools.weather"]
    code = "import sys; from frontends.cli import main; sys.exit(main())"
    broken = run_in(project, [sys.executable, "-c", code, *args], PYTHONPATH=".")
    assert broken.returncode != 0
    assert "the project's" in broken.stderr


def test_a_project_s_own_package_of_a_runtime_name_is_said_plainly(
    home: Path, project: Path
) -> None:
    write(project / "mytools" / "uses_own.py", "from tools.helpers import thing\n")
    listed = run_in(project, [str(AGENT), "tools", "list", "--tools", "mytools.uses_own"])
    assert listed.returncode == 2
    assert "No module named 'tools.helpers' (at " in listed.stderr
    assert "uses_own.py:1)" in listed.stderr
    assert "'tools' is the runtime's own package" in listed.stderr
    assert "rename the folder" in listed.stderr


def test_a_module_registers_the_tools_it_defines_not_those_it_imports(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    try:
        write(tmp_path / "src_weather.py", TOOL_FILE.format(name="forecast_a"))
        write(
            tmp_path / "src_more.py",
            "from src_weather import forecast_a\n" + TOOL_FILE.format(name="tides"),
        )
        registry = Registry()
        registry.load_module("src_weather")
        registry.load_module("src_more")  # imports forecast_a: not registered a second time
        assert [t.name for t in registry] == ["forecast_a", "tides"]
        assert registry.source_of("forecast_a") == ToolSource("module", "src_weather")
        # A module lists what it registers in __all__, imported tools included.
        write(
            tmp_path / "src_listed.py",
            "from src_weather import forecast_a\n__all__ = ['forecast_a']\n",
        )
        listed = Registry()
        listed.load_module("src_listed")
        assert [t.name for t in listed] == ["forecast_a"]
        # A module that only imports tools says where they are registered from.
        write(tmp_path / "src_reexport.py", "from src_weather import forecast_a\n")
        with pytest.raises(ConfigError, match=r"module src_reexport defines no tools \(the tools"):
            Registry().load_module("src_reexport")
    finally:
        sys.path.remove(str(tmp_path))


def test_a_duplicate_name_names_both_sources(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "weather.py", TOOL_FILE.format(name="forecast"))
    second = write(tmp_path / "b" / "weather.py", TOOL_FILE.format(name="forecast"))
    registry = Registry()
    registry.load_module(str(first))
    with pytest.raises(ConfigError) as caught:
        registry.load_module(str(second))
    message = str(caught.value)
    assert f"from file {first}; this one is from file {second}" in message
    assert "replaces='forecast'" in message
    # A built-in is named as one.
    write(tmp_path / "calc.py", TOOL_FILE.format(name="calculate"))
    with pytest.raises(ConfigError, match=r"already registered, from built-in tools.builtin"):
        registry_of([str(tmp_path / "calc.py")])


def test_replaces_takes_a_built_in_s_place_and_disable_hides_one(tmp_path: Path) -> None:
    write(
        tmp_path / "mine.py",
        "from agent_runtime import tool\n\n\n"
        '@tool(touches="read", replaces="calculate")\n'
        "def calculate(expression: str) -> str:\n"
        '    """Evaluate it my way."""\n'
        "    return expression\n",
    )
    registry = registry_of([str(tmp_path / "mine.py")], disable=["current_time"])
    replaced = registry.get("calculate")
    assert replaced is not None
    assert replaced.description == "Evaluate it my way."
    assert registry.source_of("calculate").kind == "file"
    assert "current_time" not in registry
    with pytest.raises(ConfigError, match=r"\[tools\] disable names 'curent_time', which is not"):
        registry_of([], disable=["curent_time"])


def test_errors_in_a_tool_file_name_its_line(tmp_path: Path) -> None:
    raising = write(tmp_path / "raising.py", "import os\n\nos.environ['NO_SUCH_VARIABLE_X']\n")
    with pytest.raises(ConfigError, match=rf"KeyError: 'NO_SUCH_VARIABLE_X' \(at {raising}:3\)"):
        Registry().load_module(str(raising))
    syntax = write(tmp_path / "syntax.py", "def broken(:\n    pass\n")
    with pytest.raises(ConfigError, match=rf"SyntaxError: .* \(at {syntax}:1\)"):
        Registry().load_module(str(syntax))


def test_a_tool_added_in_code_is_sourced_where_it_is_defined() -> None:
    @tool(touches="read")
    def here(x: int) -> int:
        """Here."""
        return x

    registry = Registry([here])
    source = registry.source_of("here")
    assert source.kind == "code"
    assert source.name == f"{__file__}:{here.fn.__code__.co_firstlineno}"


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package (a dist-info folder on the path) whose tools fail to import."""
    site = tmp_path / "site"
    info = site / "broken_weather-1.0.dist-info"
    write(info / "METADATA", "Metadata-Version: 2.1\nName: broken-weather\nVersion: 1.0\n")
    write(info / "entry_points.txt", "[agent.tools]\nweather = broken_weather.tools\n")
    write(site / "broken_weather" / "__init__.py", "")
    write(site / "broken_weather" / "tools.py", "import no_such_weather_dependency\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.mark.usefixtures("broken_plugin", "home")
def test_a_broken_plugin_is_skipped_with_one_warning_and_listed_by_the_doctor() -> None:
    listed = subprocess.run(
        [str(AGENT), "tools", "list"], capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert "calculate" in listed.stdout  # the others are all there
    warning = (
        "warning: skipped the tools of entry point weather = broken_weather.tools (package "
        "broken-weather 1.0): ModuleNotFoundError: No module named 'no_such_weather_dependency'"
    )
    assert listed.stderr.count(warning) == 1, listed.stderr
    assert "Traceback" not in listed.stderr
    assert "-v shows the traceback" in listed.stderr
    verbose = subprocess.run(
        [str(AGENT), "tools", "list", "-v"], capture_output=True, text=True, check=False
    )
    assert "Traceback (most recent call last)" in verbose.stderr
    check = _check_tools(Config(tools=ToolsConfig()))
    assert not check.ok
    assert "broken-weather 1.0" in check.detail
    assert check.fix is not None
    assert "uninstall" in check.fix


def test_tools_list_says_where_each_tool_came_from_and_what_it_touches(
    home: Path, tmp_path: Path
) -> None:
    write(
        tmp_path / "undeclared.py",
        "from agent_runtime import tool\n\n\n@tool\ndef ping() -> str:\n"
        '    """Ping."""\n    return "pong"\n',
    )
    command = [str(AGENT), "tools", "list", "--tools", str(tmp_path / "undeclared.py")]
    wide = {**os.environ, "COLUMNS": "250"}
    text = subprocess.run(command, capture_output=True, text=True, check=True, env=wide).stdout
    [line] = [line for line in text.splitlines() if line.split()[:1] == ["ping"]]
    assert "read (undeclared)" in line
    assert f"file {tmp_path / 'undeclared.py'}" in line
    [builtin] = [line for line in text.splitlines() if line.split()[:1] == ["calculate"]]
    assert "built-in" in builtin
    listed = json.loads(
        subprocess.run([*command, "--json"], capture_output=True, text=True, check=True).stdout
    )
    ping = next(t for t in listed if t["name"] == "ping")
    assert ping["source"] == {"kind": "file", "name": str(tmp_path / "undeclared.py")}
    assert ping["touches_declared"] is False
    assert ping["parameters"]["additionalProperties"] is False
