"""The router: a task planned by one model and carried out by another, set in agent.toml.

Here the planner is a hosted model (a local server speaking Anthropic's Messages API) and the
executor a local GGUF model (the bundled SmolLM2-135M, for real). Each call is recorded with its
own model, usage and cost, and the task's cost counts only the priced one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.events import ModelResponded, TaskCreated
from agent.store import Store
from frontends.cli import main

from .wire_server import Reply, WireServer

REPO = Path(__file__).resolve().parent.parent


def plan_reply(steps: list[str]) -> Reply:
    return Reply(
        body={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "submit_plan",
                    "input": {"steps": steps},
                }
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 900, "output_tokens": 30},
        }
    )


def test_plan_with_a_hosted_model_and_act_with_a_local_one(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[model]\nuri = "local:bundled"\nplanner = "anthropic:claude-test"\n'
        '[prices."anthropic:claude-test"]\ninput = 3.0\noutput = 15.0\n'
    )
    with WireServer() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        server.reply(plan_reply(["Answer from the note what to bring"]))
        code = main(
            [
                "run",
                "What should I bring to the team meeting?",
                "--file",
                str(REPO / "examples" / "notes" / "meeting.txt"),
                "--config",
                str(config),
                "--json",
            ]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        [sent] = server.requests  # the planner was asked once, over the wire
    assert sent.path == "/v1/messages"
    assert sent.json["tools"][0]["name"] == "submit_plan"
    assert "meeting.txt" in json.dumps(sent.json["messages"])
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "done"
    assert result["plan"] == ["Answer from the note what to bring"]
    assert "quarterly numbers" in result["answer"].lower()
    # Cost: 900 input and 30 output tokens at $3 and $15 a million; the local model is free.
    assert result["usage"]["cost_usd"] == pytest.approx((900 * 3 + 30 * 15) / 1e6)

    with Store.open(home / "events.db") as store:
        events = [e.event for e in store.events(result["task_id"])]
    created = events[0]
    assert isinstance(created, TaskCreated)
    assert (created.planner, created.model) == ("anthropic:claude-test", "local:bundled")
    calls = [e for e in events if isinstance(e, ModelResponded)]
    assert [c.purpose for c in calls] == ["plan", "act"]
    assert calls[0].response.model == "claude-test"
    assert calls[1].response.model.startswith("local:")
    assert calls[1].response.usage.input_tokens > 0
    assert calls[1].cost_usd == 0.0
