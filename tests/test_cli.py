"""The `agent` command as a person or a script uses it: clear errors that change nothing,
documented exit codes, listings, resuming, and a whole task driven over the OpenAI wire format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.events import Limits, TaskCreated
from agent.store import Store
from frontends.cli import main
from tools.browser import registry as browser_tools
from tools.browser_pointer import registry as pointer_tools
from tools.deploy import registry as deploy_tools
from tools.sandboxed import registry as sandbox_tools

from .conftest import REPO, request_args, write_script
from .terminal import agent_in_terminal, read_until
from .wire_server import Reply, WireServer

TALLY = str(REPO / "examples" / "tally_tool.py")


def _script(tmp_path: Path, turns: list[Any], name: str = "s.json") -> str:
    return f"scripted:{write_script(tmp_path / name, turns)}"


def _last_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().err.split())


def _no_tasks(home: Path) -> bool:
    if not (home / "events.db").exists():
        return True
    with Store.open(home / "events.db") as store:
        return store.tasks() == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["run", "x", "--model", "scripted:s.json", "--file", "nowhere.txt"],
            "--file nowhere.txt: no such file or folder",
        ),
        (
            ["run", "x", "--model", "scripted:s.json", "--file", "s.json", "--file", "./s.json"],
            "two files named 's.json' given with --file: give the folders",
        ),
        (["run", "x", "--model", "local:nowhere.gguf"], "no model file at"),
        (["run", "x", "--model", "gpt-5"], "has no scheme; use one of: scripted:..."),
        (["run", "x", "--model", "claude:opus"], "unknown model scheme 'claude'"),
        (["run", "x", "--model", "openai:gpt-5.5"], "needs an API key: set $OPENAI_API_KEY"),
        (["run", "x", "--model", "openai:"], "names no model (or script) after 'openai:'"),
        (["run", "x", "--model", "openai-compatible:http://127.0.0.1:9/v1"], "needs the model"),
        (["run", "x", "--model", "openai-compatible:ftp://h/v1#m"], "must be an http(s) URL"),
        (["run", "x", "--model", "scripted:/nonexistent/turns.json"], "cannot read script"),
        (["run", "x", "--model", "scripted:s.json", "--tools", "nope.py"], "/nope.py"),
        (["run", "x", "--model", "scripted:s.json", "--tools", "no_such_mod"], "cannot import"),
        (["show", "zzzz"], "no task id starts with 'zzzz'"),
        (["approve", "zzzz", "zzzz-1.0", "00000000"], "no task id starts with 'zzzz'"),
    ],
)
def test_bad_input_is_a_clear_error_and_creates_nothing(
    argv: list[str],
    expected: str,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_script(tmp_path / "s.json", [{"answer": "x"}])
    assert main(argv) == 2
    assert expected in _error(capsys)
    assert _no_tasks(home)


def test_a_malformed_script_names_the_place(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"turns": [\n  {"plan": ["a"]},\n  {"tool": }\n]}')
    assert main(["run", "x", "--model", f"scripted:{bad_json}"]) == 2
    assert f"{bad_json}:3: not valid JSON" in _error(capsys)

    unknown = write_script(tmp_path / "unknown.json", [{"plan": ["a"]}, {"tol": "calculate"}])
    assert main(["run", "x", "--model", f"scripted:{unknown}"]) == 2
    assert "turn 2.tol: Extra inputs are not permitted" in _error(capsys)
    assert _no_tasks(home)


def test_a_malformed_policy_or_config_names_the_line_or_key(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[default]\naction = "ask"\n\n[[rule]]\naction = "alow"\ntool = "x"\n')
    model = _script(tmp_path, [{"answer": "x"}])
    assert main(["run", "x", "--model", model, "--policy", str(policy)]) == 2
    assert f"{policy}:5: rule 1:" in _error(capsys)

    config = tmp_path / "agent.toml"
    config.write_text("[limits]\nmax_stepz = 3\n")
    assert main(["run", "x", "--model", model, "--config", str(config)]) == 2
    assert "limits.max_stepz: Extra inputs are not permitted" in _error(capsys)

    # A sandbox limit above the machine is no limit: refused, as one above [sandbox.max] is.
    config.write_text("[sandbox.limits]\nmemory_mb = 999999\n")
    assert main(["run", "x", "--model", model, "--config", str(config)]) == 2
    error = _error(capsys)
    assert "[sandbox.limits]: memory_mb 999999 is above the bound of 4096 ([sandbox.max])" in error
    assert re.search(r"memory_mb 999999 is above this machine's \d+ MB", error), error
    config.write_text("[sandbox.limits]\ncpus = 64.0\n[sandbox.max]\ncpus = 64.0\n")
    assert main(["run", "x", "--model", model, "--config", str(config)]) == 2
    assert f"cpus 64 is above this machine's {os.cpu_count()}" in _error(capsys)

    config.write_text("[limits\n")
    monkeypatch.chdir(tmp_path)  # found as ./agent.toml without --config
    assert main(["run", "x", "--model", model]) == 2
    assert "agent.toml: " in _error(capsys)
    assert _no_tasks(home)


def test_config_supplies_model_limits_tools_and_policy(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_script(
        tmp_path / "turns.json",
        [{"plan": ["Count"]}, *[{"tool": "tally", "args": {"counter": f"c{i}"}} for i in range(5)]],
    )
    (tmp_path / "allow.toml").write_text('[default]\naction = "allow"\n')
    (tmp_path / "agent.toml").write_text(
        '[model]\nuri = "scripted:turns.json"\n'
        "[limits]\nmax_steps = 2\n"
        f'[tools]\nmodules = ["{TALLY}"]\n'
        '[policy]\nfile = "allow.toml"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", "count", "--json"]) == 4
    result = _last_json(capsys)
    assert (result["status"], result["pause_reason"], result["steps"]) == (
        "paused",
        "budget_exhausted",
        2,
    )


def test_exit_codes_for_each_outcome(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": "42"}], "done.json")
    assert main(["run", "answer", "--model", done, "--json"]) == 0
    finished = _last_json(capsys)
    assert finished["answer"] == "42"
    assert finished["usage"]["cost_usd"] is None, "no price known: not counted, not zero"

    runaway: list[dict[str, Any]] = [{"plan": ["Add"]}]
    runaway += [{"tool": "calculate", "args": {"expression": f"{i}+1"}} for i in range(5)]
    runaway.append({"answer": "added"})
    model = _script(tmp_path, runaway, "runaway.json")
    assert main(["run", "add", "--model", model, "--max-steps", "2", "--json"]) == 4
    task_id = _last_json(capsys)["task_id"]
    assert main(["resume", task_id, "--max-steps", "20", "--json"]) == 0
    assert _last_json(capsys)["answer"] == "added"

    same = {"tool": "calculate", "args": {"expression": "1+1"}}
    stuck = _script(tmp_path, [{"plan": ["Add"]}, *[same] * 5], "stuck.json")
    assert main(["run", "add", "--model", stuck, "--json"]) == 5
    assert _last_json(capsys)["reason"].startswith("the same action and observation 4 times")

    planless = _script(tmp_path, [{"text": "no"}] * 3, "planless.json")
    assert main(["run", "plan", "--model", planless, "--json"]) == 4
    paused = _last_json(capsys)
    assert paused["pause_reason"] == "model_error"
    assert "answers the executor's call but the run asked the planner" in paused["reason"]

    bad_plans = _script(tmp_path, [{"plan": []}] * 3, "bad_plans.json")
    assert main(["run", "plan", "--model", bad_plans, "--json"]) == 1
    assert _last_json(capsys)["reason"].startswith("the model gave no valid plan in 3 tries")


def test_approving_a_task_that_waits_for_nothing_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": "42"}])
    assert main(["run", "answer", "--model", model, "--json"]) == 0
    task_id = _last_json(capsys)["task_id"]
    assert main(["approve", task_id, f"{task_id}-1.0", "00000000"]) == 2
    assert f"task {task_id} is not waiting for an approval (it is done)" in _error(capsys)


def test_listings(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    assert "no tasks yet" in capsys.readouterr().out
    model = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": "42"}])
    assert main(["run", "the question", "--model", model, "--json"]) == 0
    task_id = _last_json(capsys)["task_id"]

    assert main(["tasks", "--json"]) == 0
    [row] = _last_json(capsys)
    assert (row["task_id"], row["status"], row["task"]) == (task_id, "done", "the question")
    assert main(["tasks", "--status", "paused", "--json"]) == 0
    assert _last_json(capsys) == []
    assert main(["tasks"]) == 0
    assert task_id in capsys.readouterr().out

    assert main(["tools", "list", "--json"]) == 0
    tools = {t["name"]: t for t in _last_json(capsys)}
    everyone = [
        *(t.name for t in sandbox_tools),
        *(t.name for t in browser_tools),
        *(t.name for t in pointer_tools),
        *(t.name for t in deploy_tools),
        "http_request",
        "search_documents",
        "map_documents",
    ]
    assert set(tools) == {"calculate", "current_time", "read_artifact", *everyone}
    assert tools["calculate"]["parameters"]["required"] == ["expression"]
    assert main(["tools", "list", "--tools", TALLY]) == 0
    listing = capsys.readouterr().out
    assert "tally" in listing
    assert "external" in listing


def test_resume_all_finishes_what_a_crashed_runner_left(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    with Store.open(home / "events.db") as store:
        for i in range(3):
            model = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": str(i)}], f"{i}.json")
            ids.append(store.create_task(TaskCreated(task=f"t{i}", model=model, limits=Limits())))
    assert main(["resume", "--all", "--json"]) == 0
    resumed = _last_json(capsys)["resumed"]
    assert [(r["task_id"], r["answer"]) for r in resumed] == list(zip(ids, "012", strict=True))
    assert main(["resume", "--all"]) == 0
    assert "no unfinished tasks" in capsys.readouterr().out


def test_a_task_through_the_openai_wire_format(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def tool_call(name: str, arguments: dict[str, Any], tokens: int) -> Reply:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{name}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }
        return Reply(
            body={
                "id": "x",
                "model": "local-moe",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": tokens, "completion_tokens": 10},
            }
        )

    # A key meant for OpenAI is never sent to another server unless the config names it.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key")
    monkeypatch.setenv("LOCAL_MODEL_KEY", "sk-test")
    (tmp_path / "agent.toml").write_text('[model]\napi_key_env = "LOCAL_MODEL_KEY"\n')
    monkeypatch.chdir(tmp_path)
    with WireServer() as server:
        server.reply(
            tool_call("submit_plan", {"steps": ["Multiply"]}, 100),
            Reply(status=503, body={"error": {"message": "busy"}}),  # retried by the backend
            tool_call("calculate", {"expression": "6 * 7"}, 200),
            tool_call("complete_step", {"summary": "6 * 7 = 42"}, 300),
        )
        model = f"openai-compatible:{server.url}/v1#local-moe"
        assert main(["run", "multiply six by seven", "--model", model, "--json"]) == 0
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        # A retry is said, not silent: which error, how long, which attempt.
        assert "[server_error]; trying again in" in captured.err
        assert "(attempt 2 of 5)" in captured.err
        requests = [r.json for r in server.requests]
        headers = server.requests[0].headers

    assert (result["status"], result["answer"]) == ("done", "6 * 7 = 42")
    assert result["usage"]["input_tokens"] == 600
    assert len(requests) == 4
    assert headers["authorization"] == "Bearer sk-test"

    assert [t["function"]["name"] for t in requests[0]["tools"]] == ["submit_plan"]
    act_tools = [t["function"]["name"] for t in requests[2]["tools"]]
    assert {"calculate", "current_time"} <= set(act_tools)
    assert requests[2]["tool_choice"] == "required"
    # The executor's next request carries the tool's result under the call's id.
    tool_message = requests[3]["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "call_calculate", "content": "42"}


def test_help_documents_exit_codes_and_model_uris(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "3  the task is waiting for a reviewer" in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "compatible:BASE_URL#MODEL" in text
    assert "scripted:PATH" in text


def test_run_points_at_tasks_a_crashed_runner_left(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(home / "events.db") as store:
        model = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": "1"}], "left.json")
        left = store.create_task(TaskCreated(task="left behind", model=model, limits=Limits()))
        assert store.orphans() == [left]
        with store.lease(left):  # while a live runner holds it, it is nobody's orphan
            assert store.orphans() == []
    fresh = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": "2"}], "fresh.json")
    assert main(["run", "new task", "--model", fresh]) == 0
    assert "1 task was left running by a runner that stopped" in capsys.readouterr().out
    assert main(["resume", "--all", "--json"]) == 0
    assert [r["task_id"] for r in _last_json(capsys)["resumed"]] == [left]


def test_invalid_limits_are_refused_before_anything_is_written(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runaway = [{"plan": ["Add"]}, *[{"tool": "calculate", "args": {"expression": "1+1"}}] * 3]
    model = _script(tmp_path, runaway)
    assert main(["run", "x", "--model", model, "--max-steps", "0"]) == 2
    assert "invalid limit: --max-steps: Input should be greater than or equal to 1" in _error(
        capsys
    )
    assert _no_tasks(home)

    assert main(["run", "x", "--model", model, "--max-steps", "1", "--json"]) == 4
    task_id = _last_json(capsys)["task_id"]
    with Store.open(home / "events.db") as store:
        before = len(store.events(task_id))
    assert main(["resume", task_id, "--max-cost", "-1"]) == 2
    assert "invalid limit: --max-cost: Input should be greater than 0" in _error(capsys)
    with Store.open(home / "events.db") as store:
        assert len(store.events(task_id)) == before, "the log is untouched, and still readable"
    assert main(["show", task_id]) == 0


SET_TOOL = '''
from tools import tool

@tool(touches="external")
def label(tags: set[str]) -> str:
    """Label something.

    Args:
        tags: the labels.
    """
    return "labelled " + ",".join(sorted(tags))
'''


def test_an_approval_holds_in_another_process_whatever_its_hash_seed(
    home: Path, tmp_path: Path
) -> None:
    """Sets iterate in an order that depends on the process: the call hash must not."""
    tools = tmp_path / "label_tool.py"
    tools.write_text(SET_TOOL)
    tags = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    model = _script(
        tmp_path, [{"plan": ["Label"]}, {"tool": "label", "args": {"tags": tags}}, {"answer": "ok"}]
    )
    command = [sys.executable, "-m", "frontends.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(
        [*command, "run", "label", "--model", model, "--tools", str(tools), "--json"],
        env={**env, "PYTHONHASHSEED": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 3, first.stderr
    task_id = json.loads(first.stdout)["task_id"]
    second = subprocess.run(
        [*command, "approve", *request_args(task_id), "--tools", str(tools), "--json"],
        env={**env, "PYTHONHASHSEED": "2"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["status"] == "done"


def test_ctrl_c_at_the_approval_prompt_leaves_the_task_waiting(home: Path, tmp_path: Path) -> None:
    quickstart = f"scripted:{REPO / 'examples' / 'quickstart.json'}"
    pid, fd = agent_in_terminal("run", "count visitors", "--model", quickstart, "--tools", TALLY)
    screen = read_until(fd, b"Approve?")
    assert b"approval needed" in screen
    os.write(fd, b"\x03")  # Ctrl-C
    screen = read_until(fd, b"awaiting_approval")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert b"waiting for a reviewer: agent approve" in screen
    assert not (tmp_path / "tally.jsonl").exists(), "nothing was approved, nothing ran"


def test_a_task_keeps_its_tools_and_policy_for_every_later_command(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`agent approve ID REQUEST HASH`, as the hint says, with no flags: the task's own tools
    and policy."""
    tools = tmp_path / "my_tally.py"
    tools.write_text((REPO / "examples" / "tally_tool.py").read_text())
    policy = tmp_path / "strict.toml"
    policy.write_text('[default]\naction = "deny"\n\n[[rule]]\naction = "ask"\ntool = "tally"\n')
    turns = [
        {"plan": ["Count", "Check the time"]},
        {"tool": "tally", "args": {"counter": "front-desk"}},
        {"done": "counted"},
        {"tool": "current_time"},  # the task's policy denies it; the packaged default would not
        {"answer": "counted; the time was not allowed"},
    ]
    model = _script(tmp_path, turns)
    argv = ["run", "count", "--model", model, "--tools", str(tools), "--policy", str(policy)]
    assert main([*argv, "--json"]) == 3
    task_id = _last_json(capsys)["task_id"]

    assert main(["approve", *request_args(task_id), "--json"]) == 0
    assert _last_json(capsys)["status"] == "done"
    ledger = [json.loads(line) for line in (tmp_path / "tally.jsonl").read_text().splitlines()]
    assert [e["counter"] for e in ledger] == ["front-desk"], "the task's own tool ran"
    assert main(["show", task_id]) == 0
    history = capsys.readouterr().out
    assert "denied by policy" in history, "the task's own policy decided"

    # A task whose tool file has gone is refused before its approval is spent.
    assert main([*argv, "--json"]) == 3
    second = _last_json(capsys)["task_id"]
    tools.rename(tmp_path / "moved.py")
    assert main(["approve", *request_args(second)]) == 2
    assert "runs with tools that cannot be loaded now" in _error(capsys)
    with Store.open(home / "events.db") as store:
        assert store.task(second).status == "awaiting_approval"


def test_no_key_goes_to_a_compatible_server_unless_configured(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key")
    plan = {"choices": [{"message": {"role": "assistant", "content": "no plan"}}]}
    with WireServer() as server:
        # Each of the 3 planning attempts is asked again for JSON once (see openai_compat).
        server.reply(*[Reply(body=plan)] * 6)
        model = f"openai-compatible:{server.url}/v1#m"
        assert main(["run", "x", "--model", model, "--json"]) == 1
        assert all("authorization" not in r.headers for r in server.requests)


def test_small_things_a_demanding_user_notices(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _script(tmp_path, [{"plan": ["Answer"]}, {"answer": "42"}])
    assert main(["run", "  ", "--model", model]) == 2
    assert "the task is empty" in _error(capsys)

    both = write_script(tmp_path / "both.json", [{"plan": ["a"]}, {"done": "x", "answer": "y"}])
    assert main(["run", "x", "--model", f"scripted:{both}"]) == 2
    assert "a turn can end the step one way" in _error(capsys)

    # $AGENT_MODEL wins over agent.toml; paths in agent.toml are relative to it.
    config_dir = tmp_path / "project"
    config_dir.mkdir()
    write_script(config_dir / "turns.json", [{"plan": ["Answer"]}, {"answer": "from toml"}])
    (config_dir / "agent.toml").write_text(
        '[model]\nuri = "scripted:turns.json"\n[prices."scripted:turns.json"]\ninput = 1.0\n'
        "output = 1.0\n"
    )
    argv = ["run", "x", "--config", str(config_dir / "agent.toml"), "--json"]
    assert main(argv) == 0, "the script is found next to agent.toml, from any directory"
    result = _last_json(capsys)
    assert result["answer"] == "from toml"
    assert result["usage"]["cost_usd"] > 0, "the price key names the same script"
    monkeypatch.setenv("AGENT_MODEL", model)
    assert main(argv) == 0
    assert _last_json(capsys)["answer"] == "42"

    assert main(["run", "x", "--model", model, "--max-cost", "1"]) == 0
    assert "a cost limit is set but [prices] has no price for this model" in capsys.readouterr().out

    for _ in range(3):
        assert main(["run", "x", "--model", model, "--json"]) == 0
    capsys.readouterr()
    assert main(["tasks", "--limit", "2"]) == 0
    assert "showing the newest 2 of" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["tasks", "--limit", "0"])
    with pytest.raises(SystemExit):
        main(["tasks", "--status", "waiting"])


def test_limits_with_resume_all_are_refused_not_ignored(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resume", "--all", "--max-steps", "2"]) == 2
    assert "limits are raised one task at a time" in _error(capsys)


def test_each_provider_gets_only_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planner on OpenAI and an executor on a local server: neither gets the other's key."""
    from agent.backends import backend_from_uri
    from agent.backends.openai_compat import OpenAICompatibleBackend

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("LOCAL_MODEL_KEY", "sk-local")
    hosted = backend_from_uri("openai:gpt-5.5", api_key_env="LOCAL_MODEL_KEY")
    local = backend_from_uri(
        "openai-compatible:http://127.0.0.1:9/v1#m", api_key_env="LOCAL_MODEL_KEY"
    )
    assert isinstance(hosted, OpenAICompatibleBackend)
    assert isinstance(local, OpenAICompatibleBackend)
    assert hosted._api_key == "sk-openai"
    assert local._api_key == "sk-local"


def test_a_price_key_names_a_script_however_its_path_is_written(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    write_script(tmp_path / "s.json", [{"plan": ["a"]}, {"answer": "x"}])
    (tmp_path / "sub" / "agent.toml").write_text(
        '[model]\nuri = "scripted:../s.json"\n[prices."scripted:../s.json"]\ninput = 1.0\n'
        "output = 1.0\n"
    )
    assert main(["run", "x", "--config", str(tmp_path / "sub" / "agent.toml"), "--json"]) == 0
    assert _last_json(capsys)["usage"]["cost_usd"] > 0


def test_a_commands_help_names_the_command_as_it_is_typed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, usage in [
        (["run", "--help"], "usage: agent run [-h]"),
        (["index", "--help"], "usage: agent index [-h]"),
        (["tools", "list", "--help"], "usage: agent tools list [-h]"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert capsys.readouterr().out.startswith(usage), argv
