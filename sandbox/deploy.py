"""Deployments: long-running services built from a folder of a task's workspace, on a target
that runs them (`DeployTarget`): a Docker engine named by URL today (`sandbox/deploy_docker.py`),
another kind of target (Kubernetes, say) later, without touching the deploy tools.

A deploy asks for a `Spec` (what to build and how to run and check it); each deploy that changes
something is a new numbered `Version`; a `Deployment` is a name's versions and its URL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sandbox._recipes import Recipe

NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
BuildOutput = Callable[[str], None]
BuildEgress = tuple[str, dict[str, str]]
"""Where a build may download from: the network it joins and the proxy settings it gets."""


class DeployFailed(Exception):
    """A deploy, rollback or stop that did not happen: why, said plainly, with a code the model
    and the log can key on, and the last lines of the service's log where they help."""

    def __init__(self, message: str, *, code: str, logs: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.logs = logs


@dataclass(frozen=True)
class Health:
    """How a version is judged healthy: an HTTP path answering 2xx or 3xx, or a command (run in
    the service's container) exiting 0, within `timeout` seconds."""

    path: str = "/"
    command: str | None = None
    timeout: float = 30.0

    def describe(self) -> str:
        check = f"`{self.command}` exits 0" if self.command else f"GET {self.path} is 2xx or 3xx"
        return f"{check}, within {self.timeout:g} s"


@dataclass(frozen=True)
class ServiceLimits:
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 128


@dataclass(frozen=True)
class Spec:
    """What a deploy asks for, besides its files: everything a reviewer approves."""

    name: str
    recipe: Recipe
    #: the digest of the folder's files (see `_recipes.digest`)
    files: str
    folder: str
    health: Health = Health()
    limits: ServiceLimits = ServiceLimits()
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    #: who approved the deploy (None: no reviewer was asked; "": one who gave no name)
    approved_by: str | None = None
    #: the host port its URL is on (None: the one it has, or a free one the first time)
    host_port: int | None = None
    #: the hosts the service may reach, through an egress proxy of its own (an entry as a
    #: task's allowlist has them); none: it has no way out at all
    egress: tuple[str, ...] = ()


@dataclass(frozen=True)
class Version:
    """One deployed version, as its container's labels record it."""

    name: str
    number: int
    key: str
    image: str
    kind: str
    command: str
    port: int
    env_names: tuple[str, ...]
    health: str
    limits: dict[str, float]
    files: str
    base: str
    created: float
    approved_by: str | None = None
    #: the allowlist of its egress proxy (none: no way out)
    egress: tuple[str, ...] = ()
    #: serving (the front sends to it), standby (running, ready to serve again: the version
    #: the serving one replaced), stopped, or starting (not yet checked)
    state: Literal["serving", "standby", "stopped", "starting"] = "stopped"

    def describe(self) -> str:
        return f"{self.name} v{self.number} ({self.kind}, {self.state}): {self.command}"


@dataclass(frozen=True)
class Deployment:
    name: str
    #: where it is reached (None once it is stopped)
    url: str | None
    versions: tuple[Version, ...]

    @property
    def serving(self) -> Version | None:
        return next((v for v in self.versions if v.state == "serving"), None)


class DeployTarget(Protocol):
    """Where deployments run. The deploy tools name this, never Docker."""

    async def base_image(self) -> tuple[str, str]:
        """The image a recognised app is built FROM: its name and its digest."""
        ...

    async def deploy(
        self,
        spec: Spec,
        context: bytes,
        key: str,
        *,
        on_output: BuildOutput | None = None,
        egress: BuildEgress | None = None,
    ) -> Version:
        """Build `context` and start it beside what serves; switch over once it is healthy.
        An unchanged deploy of what serves returns that version. The build has no network
        unless `egress` gives one. Raises `DeployFailed`."""
        ...

    async def settle(self, key: str) -> Version | None:
        """After a crash: the version the deploy with `key` made, carried to its end (checked and
        switched to, if it was left starting); None if it made none."""
        ...

    async def status(self, name: str) -> Deployment: ...

    async def deployments(self) -> list[Deployment]: ...

    async def logs(self, name: str, lines: int = 100, *, egress: bool = False) -> str:
        """The last `lines` of the log of the version serving (else the newest); with `egress`,
        its egress proxy's decisions, one JSON object a line."""
        ...

    async def stop(self, name: str) -> Deployment: ...

    async def rollback(self, name: str) -> Version: ...

    async def remove(self, name: str) -> None: ...

    async def reachable_by(self, task_id: str) -> frozenset[tuple[str, int]]:
        """Where the deployments `task_id` made are reached: (host, port) of each URL. The egress
        proxy lets the task's own browser and tools reach them with no allowlist entry."""
        ...
