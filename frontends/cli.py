"""`agent`: run tasks, watch them, resume them, and decide their approvals.

Exit codes (for scripts):
    0  the task is done
    1  the task failed (or a scripted run left turns of its script unused)
    2  bad usage, config, or environment (nothing ran)
    3  the task is waiting for a reviewer (`agent approve ID REQ HASH` / `agent deny ...`)
    4  the task is paused (a budget ran out, the model failed, Ctrl-C): `agent resume ID`
    5  the task is stuck (it repeated itself): `agent resume ID` to try again

Environment:
    AGENT_HOME       where the store, artifacts and model sockets are kept
                     (default: $XDG_DATA_HOME/agent, else ~/.local/share/agent)
    AGENT_STORE_URL  postgresql://USER@HOST/DATABASE: the event store that workers on many
                     hosts share, instead of $AGENT_HOME/events.db
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from rich.console import Console

from agent import __version__
from agent.config import Config, find_config, load_config
from agent.events import SHORT_HASH, Status
from agent.store import Store
from base.errors import (
    AgentError,
)
from frontends.audit_commands import add_audit_parsers, audit_command
from frontends.deploy_commands import add_deploy_parsers, deployments_command
from frontends.doctor import doctor
from frontends.engine_commands import add_engine_parsers, add_worker_options, engine_command
from frontends.inbox_commands import add_inbox_parser, inbox_command
from frontends.index_commands import add_index_parser, index_command
from frontends.inputs import SHOWN_AT_MOST
from frontends.line_input import LineSource
from frontends.review import add_review_parser, review_command
from frontends.reviewer_commands import add_reviewer_parsers, reviewers_command
from frontends.sandbox_commands import add_parsers, sandbox_command
from frontends.screen import json_document, shown
from frontends.secrets_commands import add_secrets_parsers, secrets_command
from frontends.serve import add_serve_parser, serve_command
from frontends.task_setup import configured_registry, warn_problems
from frontends.tasks import EXIT, EXIT_USAGE, drive
from frontends.views import print_history, print_offered, print_tasks, print_tools

_MODEL_HELP = """model URI: anthropic:MODEL ($ANTHROPIC_API_KEY), openai:MODEL ($OPENAI_API_KEY),
openai-compatible:BASE_URL#MODEL (vLLM, llama.cpp's server, Ollama, Gemini...), local:PATH.gguf
(a GGUF model, dense or MoE, run by llama.cpp in a model worker), local:bundled (the tiny
SmolLM2-135M fallback), scripted:PATH (replay a script). Default: for a new task,
$AGENT_MODEL, else [model] uri in agent.toml, else local:bundled; for an existing task, the model
it started with"""


_ID_HELP = "task id (a unique prefix is enough)"
_TOOLS_HELP = "register the @tool functions of a module or .py file (repeatable)"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('give a JSON object: {"name": value, ...}')
    return value


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _interval(text: str) -> float:
    """A number of seconds above 0 (a wait in a loop)."""
    if (value := _seconds(text)) == 0:
        raise argparse.ArgumentTypeError("0 would look at the store without pause: give more")
    return value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help="agent.toml to use (default: ./agent.toml, then $AGENT_HOME/agent.toml)",
    )
    common.add_argument(
        "--json", action="store_true", help="print JSON instead of text (for scripts)"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say more: the traceback of a tool package that failed to load",
    )
    return common


def _running_options(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of every command that drives a task: run, resume, approve, deny."""
    running = argparse.ArgumentParser(add_help=False, parents=[common])
    running.add_argument("--model", help=_MODEL_HELP)
    running.add_argument(
        "--tools", action="append", default=[], metavar="MODULE_OR_FILE", help=_TOOLS_HELP
    )
    running.add_argument(
        "--policy",
        type=Path,
        help="policy rules file (default: [policy] file in agent.toml, else the packaged "
        "default policy)",
    )
    running.add_argument(
        "--no-prompt",
        action="store_true",
        help="never ask for approvals inline; stop with exit code 3 instead",
    )
    limits = running.add_argument_group("limits (per task)")
    limits.add_argument("--max-steps", type=int, help="executor turns (default 50)")
    limits.add_argument("--max-tokens", type=int, help="model tokens, in and out (default 500000)")
    limits.add_argument(
        "--max-seconds", type=float, help="time spent in the model and tools (default 1800)"
    )
    limits.add_argument(
        "--max-cost",
        type=float,
        dest="max_cost_usd",
        help="US dollars, where [prices] are known (default: none)",
    )
    box = running.add_argument_group(
        "sandbox (a new task's container; within [sandbox.max] of agent.toml)"
    )
    box.add_argument(
        "--memory",
        type=int,
        dest="memory_mb",
        metavar="MB",
        help="RAM, /workspace and /tmp included (default: [sandbox.limits], else 1024)",
    )
    box.add_argument("--cpus", type=float, help="CPUs (default: [sandbox.limits], else 1)")
    box.add_argument(
        "--pids", type=int, help="processes and threads (default: [sandbox.limits], else 256)"
    )
    box.add_argument(
        "--allow-domain",
        action="append",
        dest="allow_domains",
        metavar="HOST",
        help="let the sandbox reach HOST (or *.domain, HOST:PORT) through the egress proxy "
        "(repeatable; default: no network)",
    )
    return running


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent",
        usage="agent [-h] [--version] [COMMAND ...]",
        description="Run tasks with a model, tools, a policy gate and approvals.\nWith no command "
        "(or only a session's options, such as --model), `agent` opens a session to stay in.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", prog="agent")
    common = _common_options()
    running = _running_options(common)

    run = sub.add_parser(
        "run",
        parents=[running],
        help="run a task",
        description="Plan and carry out a task, showing each step live. In a terminal, "
        "approvals are asked inline.",
    )
    run.add_argument("task", help="what to do, in plain words")
    run.add_argument(
        "--file",
        action="append",
        default=[],
        dest="files",
        metavar="PATH",
        help="give the model this file with the task, e.g. to ask about it: text, Markdown, "
        "reST, HTML, PDF, an image (PNG, JPEG, WebP), a recording (WAV, MP3, M4A...) or a video "
        "(MP4...), or a folder of them (repeatable). Documents are shown (a long one shortened, "
        "the rest read with read_artifact) while the task's hold up to "
        f"{SHOWN_AT_MOST // 1000:,}k characters; past that they are indexed, and the model "
        "searches them with search_documents (or goes through all of them with map_documents)",
    )
    run.add_argument(
        "--no-plan",
        action="store_true",
        help="skip the planner: the task is its own single step (the default when no model is "
        "configured and the bundled fallback runs; [model] plan = false in agent.toml sets it "
        "for every task)",
    )

    run.add_argument(
        "--review-plan",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show each plan (and replan) before it runs: accept it, edit it, or ask for "
        "another (default: [session] review_plan in agent.toml, else off)",
    )
    run.add_argument(
        "--deploy",
        action="store_true",
        default=None,
        help="let the task deploy services: it is offered the deploy tools, and each deploy "
        "still waits for a reviewer (default: [deploy] enabled in agent.toml, else off)",
    )

    sub.add_parser(
        "session",
        parents=[running],
        help="a session to stay in: type tasks, watch them, steer them (what `agent` alone opens)",
    )

    resume = sub.add_parser("resume", parents=[running], help="continue a task from its log")
    target = resume.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help=_ID_HELP)
    target.add_argument(
        "--all", action="store_true", help="continue every task a crashed runner left running"
    )

    worker = sub.add_parser(
        "worker",
        parents=[common],
        help="continue tasks as they become due: decided over HTTP, expired, or left running "
        "(each with the model, tools and policy it was started with); with --engine temporal, "
        "run tasks' workflows and activities",
    )
    # What `agent run` and `resume` take, fixed: a worker changes nothing of a task's setup.
    worker.set_defaults(model=None, tools=[], policy=None, no_prompt=True)
    worker.add_argument("--once", action="store_true", help="continue what is due now, then stop")
    worker.add_argument(
        "--poll",
        type=_interval,
        default=0.05,
        help="seconds between looks at the store (0.05)",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=10.0,
        help="seconds a task left running waits before a worker takes it (10)",
    )
    add_worker_options(worker)

    for verb in ("approve", "deny"):
        decide_cmd = sub.add_parser(
            verb, parents=[running], help=f"{verb} a task's pending action, then continue the task"
        )
        decide_cmd.add_argument("id", help=_ID_HELP)
        decide_cmd.add_argument(
            "request", help="the request's id, as shown with it (`agent show ID` shows it)"
        )
        decide_cmd.add_argument(
            "hash",
            help=f"the start of its call's hash, as shown with it ({SHORT_HASH} characters): "
            "a decision on any other request is refused",
        )
        decide_cmd.add_argument(
            "--reason",
            required=verb == "deny",
            default="",
            help="why (shown to the model)" + (" (required)" if verb == "deny" else ""),
        )
        decide_cmd.add_argument(
            "--no-resume", action="store_true", help="record the decision; do not continue here"
        )
        if verb == "approve":
            decide_cmd.add_argument(
                "--edit",
                type=_json_object,
                metavar="JSON",
                help="approve the call with these arguments changed, e.g. '{\"amount\": 2}' (each "
                "key replaces the model's; the edited call is judged by the policy again)",
            )
            decide_cmd.add_argument(
                "--always",
                choices=["task", "project"],
                help="approve, and allow calls exactly like this one from now on, in this task or "
                "in every task of its policy file: the rule is shown, then saved at the top of "
                "the task's policy file",
            )
            decide_cmd.add_argument(
                "--yes", action="store_true", help="with --always: save the rule without asking"
            )

    tasks = sub.add_parser("tasks", parents=[common], help="list tasks, newest first")
    tasks.add_argument(
        "--status",
        action="append",
        choices=get_args(Status),
        help="only tasks in this status (repeatable)",
    )
    tasks.add_argument(
        "--limit", type=_positive, default=50, help="show at most this many (default 50)"
    )

    show = sub.add_parser("show", parents=[common], help="print a task's whole event history")
    show.add_argument("id", help=_ID_HELP)
    show.add_argument(
        "--tools",
        action="store_true",
        help="print the tools the model was told of (names, descriptions, JSON schemas), each "
        "time the set changed",
    )

    tools = sub.add_parser("tools", help="the registered tools")
    tools_sub = tools.add_subparsers(dest="tools_command", required=True, metavar="COMMAND")
    tools_list = tools_sub.add_parser("list", parents=[common], help="list the registered tools")
    tools_list.add_argument(
        "--tools", action="append", default=[], metavar="MODULE_OR_FILE", help=_TOOLS_HELP
    )
    for add in (
        add_parsers,
        add_deploy_parsers,
        add_secrets_parsers,
        add_audit_parsers,
        add_inbox_parser,
        add_index_parser,
        add_reviewer_parsers,
        add_serve_parser,
        add_review_parser,
        add_engine_parsers,
    ):
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, *, stdin: LineSource | None = None) -> int:
    """Run one `agent` command; its exit code. Answers to prompts are read from `stdin` (by
    default the process's own)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["session", *argv]  # `agent` alone, or with a session's options: a session
    args = _parser().parse_args(argv)
    out = Console(stderr=args.json, highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        config = load_config(find_config(args.config))
        with json_document(args.json):
            return _dispatch(args, config, out, stdin or sys.stdin)
    except AgentError as exc:
        err.print(f"[bold red]error:[/] {shown(str(exc))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: the task is paused (`agent tasks` lists it)")
        return EXIT["paused"]


def _dispatch(args: argparse.Namespace, config: Config, out: Console, stdin: LineSource) -> int:
    command = args.command
    if command == "session":
        from frontends.session import session_command  # noqa: PLC0415 - prompt_toolkit

        return session_command(args, config, out, stdin, lambda argv: main(argv, stdin=stdin))
    if command == "tools":
        registry = configured_registry(config, [*config.tools.modules, *args.tools])
        warn_problems(registry, verbose=args.verbose)
        print_tools(registry, out, as_json=args.json)
        return 0
    if command == "doctor":
        return doctor(args, config, out)
    if command == "deployments":
        return deployments_command(args, config, out)
    if command == "secrets":
        return secrets_command(args, config, out)
    if command == "audit":
        return audit_command(args, out)
    if command == "inbox":
        return inbox_command(args, out)
    if command == "index":
        return index_command(args, config, out)
    if command == "reviewers":
        return reviewers_command(args, out)
    if command == "serve":
        return serve_command(args, config, out)
    if command == "review":
        return review_command(args, config, out, stdin)
    if command == "engine":
        return engine_command(args, config, out)
    if command in ("tasks", "show"):
        with Store.open(read_only=True) as store:  # a read-only store can still be read
            if command == "tasks":
                print_tasks(store, out, statuses=args.status, limit=args.limit, as_json=args.json)
            else:
                show = print_offered if args.tools else print_history
                show(store, store.resolve(args.id), out, as_json=args.json)
            for damage in store.damage:  # what could not be read, said apart from what could
                print(f"agent: {damage}", file=sys.stderr)
            return 1 if store.damage else 0
    with Store.open() as store:
        if command == "sandbox":
            return sandbox_command(args, config, store, out)
        return drive(args, config, store, out, stdin)


if __name__ == "__main__":
    sys.exit(main())
