"""`agent doctor`: what this machine can do, checked now: Docker, the runtime image and Chromium
in it, the model config (each model asked once, for real), and the store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass

import docker
import docker.errors
from rich.console import Console
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import RPCError

from agent.backends import backend_from_uri
from agent.backends.base import Capabilities, Message, ModelBackend, ModelRequest
from agent.backends.local import BUNDLED, LocalBackend, ModelInfo
from agent.backends.scripted import ScriptedBackend
from agent.config import Config
from agent.damage import recovery
from agent.home import default_home
from agent.store import STORE_URL, Store
from base.errors import (
    AgentError,
    BackendError,
    ConfigError,
    ErrorCode,
    SandboxError,
    StoreError,
)
from frontends.screen import print_json, shown
from frontends.task_setup import artifacts_for, configured_registry
from sandbox._docker import BUILD_IMAGE, START_DOCKER, connect, owner_labels
from sandbox._hardening import hardened
from sandbox.image import image_state
from sandbox.limits import SandboxLimits
from tools.secrets import Secrets

#: the owner of the doctor's one container (removed as soon as it has answered)
DOCTOR_OWNER = owner_labels("doctor")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def doctor(args: argparse.Namespace, config: Config, out: Console) -> int:
    """Check everything a task needs; each failure says what to run. Exit 0 when all pass."""
    checks: list[Check] = []
    client = _check_docker(checks)
    if client is not None:
        _check_image(checks, client, config.sandbox.image)
    checks.extend(_check_model(config))
    checks.append(_check_tools(config))
    checks.append(_check_secrets(config))
    checks.append(_check_store())
    if config.engine.kind == "temporal":
        checks.append(_check_engine(config))
    if config.artifacts.bucket:
        checks.append(_check_bucket(config))
    elif os.environ.get(STORE_URL):
        folder = default_home() / "artifacts"
        checks.append(
            Check(
                "artifacts",
                True,
                f"kept in {folder}, on this host only: a task whose sandbox moves to another "
                "host finds them only in a bucket every host reaches ([artifacts] bucket)",
            )
        )
    if args.json:
        print_json([c.__dict__ for c in checks])
    else:
        for c in checks:
            mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
            out.print(f"{mark} {c.name}: {shown(c.detail)}")
            if c.fix:
                out.print(f"       to fix: {shown(c.fix)}")
    return 0 if all(c.ok for c in checks) else 1


def _check_docker(checks: list[Check]) -> docker.DockerClient | None:
    try:
        client = connect(timeout=10)
        version = client.version().get("Version", "?")
    except SandboxError as exc:
        checks.append(Check("docker", False, exc.message, exc.fix or START_DOCKER))
        return None
    checks.append(Check("docker", True, f"daemon {version} answers"))
    return client


def _check_image(checks: list[Check], client: docker.DockerClient, image: str) -> None:
    try:
        state = image_state(client, image)
    except docker.errors.DockerException as exc:
        checks.append(Check("image", False, str(exc), BUILD_IMAGE))
        return
    if state == "missing":
        checks.append(Check("image", False, f"{image} is not built", BUILD_IMAGE))
        return
    if state == "stale":
        checks.append(Check("image", False, f"{image} was built from an older recipe", BUILD_IMAGE))
    else:
        checks.append(Check("image", True, f"{image} is built and current"))
    try:
        output = client.containers.run(
            image,
            ["chromium", "--version"],
            remove=True,
            labels=DOCTOR_OWNER,
            **hardened(SandboxLimits(), DOCTOR_OWNER),
        )
        text = output.decode().strip() if isinstance(output, bytes) else str(output)
        checks.append(Check("chromium", True, text or "present"))
    except docker.errors.DockerException as exc:
        checks.append(
            Check("chromium", False, f"not runnable in {image}: {exc}", f"{BUILD_IMAGE} --force")
        )


#: seconds the doctor waits for a model's answer
DOCTOR_TIMEOUT = 30.0


def _check_model(config: Config) -> list[Check]:
    """Build the configured model's backend, ask it what it can do, and make it answer a tiny
    request (the self-test), timed. A local model is loaded in its worker, which reports the CPU
    path it took."""
    uri = os.environ.get("AGENT_MODEL") or config.model.uri or BUNDLED
    if config.model.api_key_env and not os.environ.get(config.model.api_key_env):
        return [
            Check(
                "model",
                False,
                f"{uri}: ${config.model.api_key_env} is not set",
                f"export {config.model.api_key_env}=...",
            )
        ]
    loaded: list[ModelInfo] = []
    try:
        backend = backend_from_uri(
            uri,
            api_key_env=config.model.api_key_env,
            # A check, not a task: a server that does not answer a tiny request soon is a finding.
            timeout=min(config.model.timeout, DOCTOR_TIMEOUT),
            max_attempts=1,
            # A self-test needs a few tokens, not an essay; the worker is the same one.
            local={**config.model.local.model_dump(), "max_tokens": 8},
            on_load=lambda info, _seconds: loaded.append(info),
        )
        capabilities, local = asyncio.run(_probe(backend))
    except AgentError as exc:
        return [Check("model", False, f"{uri}: {exc}", _model_fix(exc))]
    what = [
        "native tool calls" if capabilities.native_tools else "tool calls as schema-held JSON",
        "streams" if capabilities.streaming else "does not stream",
    ]
    if capabilities.context_window:
        what.append(f"context {capabilities.context_window:,} tokens")
    what.extend(capabilities.notes)
    if loaded:
        what.insert(0, loaded[0].summary())
    if uri == BUNDLED and not (os.environ.get("AGENT_MODEL") or config.model.uri):
        what.append("none configured: this tiny fallback runs tasks; set [model] uri for real work")
    return [Check("model", True, f"{uri}: {'; '.join(what)}"), *local]


def _model_fix(exc: AgentError) -> str:
    if exc.code == ErrorCode.AUTH_FAILED:
        return "check the model's API key (the variable named in the error, or [model] api_key_env)"
    if exc.code in (ErrorCode.TIMEOUT, ErrorCode.CONNECTION_FAILED):
        return "check that the model's server is up and reachable (its base URL)"
    if exc.code == ErrorCode.WORKER_CRASHED:
        return (
            "llama.cpp crashed on this machine: try `repack = false` under [model.local] in "
            "agent.toml, and see the worker's log named above"
        )
    if exc.code == ErrorCode.MODEL_LOAD_FAILED:
        return (
            "check what the error names, under [model.local] in agent.toml: path (or the "
            "model's URI) for the model's file, mmproj for its projector's, or the setting named"
        )
    return "correct, in agent.toml, the setting the error names"


async def _probe(backend: ModelBackend) -> tuple[Capabilities, list[Check]]:
    """What the model can do, and a self-test: the smallest real request (a script is not asked:
    it holds a task's turns, not a model). For a local model also its worker's CPU path."""
    try:
        capabilities = await backend.probe()
        checks: list[Check] = []
        if isinstance(backend, LocalBackend) and backend.worker is not None:
            worker = backend.worker
            checks.append(
                Check(
                    "cpu",
                    True,
                    f"{worker.cpu}; llama.cpp uses: {worker.system_info}; "
                    f"weight repacking {'on' if worker.repack else 'off'}: {worker.path_reason}",
                )
            )
        if not isinstance(backend, ScriptedBackend):
            checks.append(await _self_test(backend))
        return capabilities, checks
    finally:
        await backend.aclose()


async def _self_test(backend: ModelBackend) -> Check:
    """Ask the model to say OK: it must answer, and how long it took is reported."""
    request = ModelRequest(
        task_id="doctor",
        purpose="act",
        turn=0,
        messages=(Message(role="user", content="Say OK."),),
        tools=(),
    )
    started = time.perf_counter()
    try:
        response = await backend.complete(request)
    except BackendError as exc:
        return Check("self-test", False, f"{exc} [{exc.code}]", _model_fix(exc))
    seconds = time.perf_counter() - started
    tokens = response.usage.output_tokens
    answered = bool(response.text or response.tool_calls or tokens)
    if isinstance(backend, LocalBackend) and backend.worker is not None:
        worker = backend.worker
        detail = (
            f"worker pid {worker.pid} wrote {tokens} tokens in {seconds:.2f} s "
            f"(model loaded in {worker.load_seconds:.1f} s)"
        )
    else:
        detail = f"answered in {seconds:.2f} s ({tokens} tokens)"
    return Check("self-test", answered, detail, None if answered else "the model answered nothing")


def _check_tools(config: Config) -> Check:
    """Load every source of tools (the installed packages', then agent.toml's); a package that
    fails to load is a finding (a task runs without it)."""
    try:
        registry = configured_registry(config, config.tools.modules)
    except ConfigError as exc:
        return Check("tools", False, str(exc), "correct [tools] in agent.toml")
    if registry.problems:
        return Check(
            "tools",
            False,
            f"{len(registry)} tools; " + "; ".join(str(p) for p in registry.problems),
            "fix or uninstall the package (`agent tools list -v` shows the traceback)",
        )
    return Check("tools", True, f"{len(registry)} tools load")


def _check_secrets(config: Config) -> Check:
    """The secrets file: readable by its owner alone, well formed, and each secret with a value
    here (one from an unset variable fails the calls that use it)."""
    path = config.secrets.path()
    try:
        found = list(Secrets.load(path))
    except ConfigError as exc:
        return Check("secrets", False, str(exc), f"correct {path} (`agent secrets`)")
    missing = [f"{s.name}: {s.missing}" for s in found if s.missing]
    if missing:
        return Check(
            "secrets",
            False,
            "; ".join(missing),
            "set the variable, or `agent secrets set NAME` again",
        )
    return Check("secrets", True, f"{len(found)} declared ({path})" if found else "none declared")


def _check_engine(config: Config) -> Check:
    """The Temporal service answers, and says which version it runs."""
    from agent.temporal.client import EngineError, connect  # noqa: PLC0415 - only for Temporal

    engine = config.engine

    async def ask() -> str:
        client = await connect(engine)
        info = await client.service_client.workflow_service.get_system_info(GetSystemInfoRequest())
        return info.server_version or "a version it does not say"

    try:
        version = asyncio.run(ask())
    except EngineError as exc:
        return Check("engine", False, exc.message, "agent engine dev (to try it on this machine)")
    except RPCError as exc:
        return Check("engine", False, f"{engine.address}: {exc.message}")
    return Check(
        "engine",
        True,
        f"Temporal {version} at {engine.address}, namespace {engine.namespace}, task queue "
        f"{engine.task_queue} (`agent worker --engine temporal` runs its tasks)",
    )


def _check_bucket(config: Config) -> Check:
    """The artifact bucket can be listed with the credentials this process has."""
    kept = config.artifacts
    try:
        artifacts = artifacts_for(config)
        assert artifacts is not None
        artifacts("doctor").names()
    except (ConfigError, StoreError) as exc:
        return Check("artifacts", False, exc.message, "correct [artifacts] in agent.toml")
    where = f" at {kept.endpoint_url}" if kept.endpoint_url else ""
    return Check("artifacts", True, f"bucket {kept.bucket}{where} answers")


def _check_store() -> Check:
    if os.environ.get(STORE_URL):
        return _check_shared_store()
    path = default_home() / "events.db"
    recover = recovery(path)
    try:
        with Store.open() as store:
            result = store.check()
            count = store.count() if result == "ok" else None
    except sqlite3.DatabaseError as exc:  # a damaged page that even the check cannot read
        return Check("store", False, f"{path} is damaged: {exc}", recover)
    except StoreError as exc:
        if exc.code != ErrorCode.STORE_READ_ONLY:
            corrupt = isinstance(exc.__cause__, sqlite3.DatabaseError)
            return Check("store", False, str(exc), recover if corrupt else None)
        try:
            with Store.open(read_only=True) as store:
                count = store.count()
        except StoreError as again:
            return Check("store", False, str(again), f"make {path.parent} writable")
        return Check(
            "store",
            False,
            f"{path} is read-only: its {count} tasks can be listed and shown, not run or decided",
            f"make {path.parent} writable",
        )
    if result != "ok":
        return Check("store", False, f"{path} is damaged: {result[:300]}", recover)
    return Check("store", True, f"{path} ({count} tasks)")


def _check_shared_store() -> Check:
    """The PostgreSQL store that AGENT_STORE_URL names: it answers, and holds how many tasks."""
    try:
        with Store.open() as store:
            store.check()
            return Check("store", True, f"{store.location} (shared; {store.count()} tasks)")
    except ConfigError as exc:  # it says what to do
        return Check("store", False, exc.message)
    except (StoreError, sqlite3.Error) as exc:
        fix = f"check {STORE_URL}, and that its server answers from this host"
        return Check("store", False, str(exc), fix)
