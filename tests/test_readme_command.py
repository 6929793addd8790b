"""The README's first command, run as a newcomer would: no model configured, no key, no network.

It runs on the bundled SmolLM2-135M (a real model, through llama.cpp) and must answer a question
about a local file. Where this process may create namespaces (root, as in CI), the command runs
in a network namespace of its own, with no interface but a loopback that is down, so it is shown
to need no network at all.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_main_command() -> list[str]:
    """The first line of the README's first shell block: the command that runs the main job."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```sh\n(.+?)\n", text)
    assert match, "the README opens with a ```sh block"
    return shlex.split(match.group(1))


def offline(argv: list[str]) -> list[str]:
    """`argv` in a network namespace of its own, where this process may make one."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return argv
    return [unshare, "--net", "--", *argv]


def test_the_readme_main_command_answers_from_a_file_on_the_bundled_model(
    tmp_path: Path,
) -> None:
    argv = readme_main_command()
    assert argv[:2] == ["./agentw", "run"]
    assert "--model" not in argv, "the main command must work with no model configured"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("AGENT_MODEL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    }
    env["AGENT_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        offline([*argv, "--json"]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "done"
    # The file says: "Bring the quarterly numbers."
    assert "quarterly numbers" in result["answer"].lower()
    assert result["usage"]["input_tokens"] > 0
    assert result["usage"]["cost_usd"] == 0.0, "a model on this machine costs nothing"
    # The person is told plainly that this is a tiny fallback, and how to name a real model.
    assert "bundled SmolLM2-135M-Instruct" in done.stderr
    assert "--model" in done.stderr
