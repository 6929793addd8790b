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
    """`argv` in a network namespace of its own, wherever this machine lets this process make
    one: as root, or as a user through a user namespace. Says so when it cannot."""
    unshare = shutil.which("unshare")
    if unshare is None:
        print("note: no unshare here; the command runs with the machine's network")
        return argv
    if os.geteuid() == 0:
        return [unshare, "--net", "--", *argv]
    as_user = [unshare, "--map-root-user", "--net", "--"]
    if subprocess.run([*as_user, "true"], capture_output=True, check=False).returncode == 0:
        return [*as_user, *argv]
    print("note: this user may not make a network namespace; the command runs with the network")
    return argv


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

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            offline([*command, "--json"]),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    done = run(*argv)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "done"
    # The file says: "Bring the quarterly numbers."
    answer = result["answer"].lower()
    assert "quarterly numbers" in answer
    # An answer, not the file echoed back: the file's other lines are not in it.
    assert "coffee" not in answer
    assert "4b" not in answer
    assert result["usage"]["input_tokens"] > 0
    assert result["usage"]["cost_usd"] == 0.0, "a model on this machine costs nothing"
    # The person is told plainly that this is a tiny fallback, and how to name a real model.
    assert "bundled SmolLM2-135M-Instruct" in done.stderr
    assert "--model" in done.stderr

    # The control: without the file the same question cannot be answered so, so the answer above
    # came from reading it.
    at = argv.index("--file")
    blind = run(*argv[:at], *argv[at + 2 :], "--max-steps", "4")
    unseen = json.loads(blind.stdout.strip().splitlines()[-1])
    assert "quarterly" not in (unseen.get("answer") or "").lower(), unseen
