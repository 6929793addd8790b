"""What a task's sandbox may use, and the bounds an operator puts on what a task may ask for.

In agent.toml::

    [sandbox]
    image = "agent-sandbox:latest"   # built by `agent sandbox build`
    pool_size = 2                    # containers kept started for new tasks; 0 turns it off
    browser_pool = 1                 # and with a browser running, for browser tasks

    [sandbox.limits]                 # what a task gets unless it asks for other limits
    memory_mb = 1024                 # RAM; swap is the same, so no swapping beyond it
    cpus = 1.0
    pids = 256                       # processes and threads (a fork bomb stops here)
    workspace_mb = 512               # /workspace, kept for the task's life (in memory: it
    tmp_mb = 128                     # /tmp         counts against memory_mb, as /tmp does)
    network = "none"                 # or "proxy": egress only through the egress proxy
    allow_domains = []               # with "proxy": the hosts it may reach

    [sandbox.max]                    # the most a task may ask for (`agent run --memory ...`)
    memory_mb = 4096
    ...
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from base.errors import ConfigError
from sandbox.proxy import check_entry

Network = Literal["none", "proxy"]
#: the size of the tmpfs at $HOME
HOME_MB = 16


class SandboxLimits(BaseModel):
    """The resources of one sandbox. Recorded with the task, so a resume gets the same."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int = Field(1024, ge=64)
    cpus: float = Field(1.0, gt=0, le=64)
    pids: int = Field(256, ge=16)
    workspace_mb: int = Field(512, ge=1)
    tmp_mb: int = Field(128, ge=1)
    network: Network = "none"
    allow_domains: tuple[str, ...] = ()

    @field_validator("allow_domains")
    @classmethod
    def _entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_entry(entry) for entry in value)

    @model_validator(mode="after")
    def _room_to_run(self) -> SandboxLimits:
        # /workspace, /tmp and $HOME are tmpfs: what is written there is memory of the
        # container's, and a full workspace must not leave the commands none.
        held = self.workspace_mb + self.tmp_mb + HOME_MB
        if held + 32 > self.memory_mb:
            raise ValueError(
                f"memory_mb ({self.memory_mb}) must exceed workspace_mb + tmp_mb + {HOME_MB} "
                f"({held}) by at least 32: the workspace and /tmp are held in memory"
            )
        if self.allow_domains and self.network != "proxy":
            raise ValueError('allow_domains needs network = "proxy"')
        return self

    def key(self) -> str:
        """A short digest: pooled containers are only handed to tasks with the same limits. The
        allowed domains are not part of it: the proxy holds them, not the container."""
        pooled = self.model_copy(update={"allow_domains": ()})
        return hashlib.sha256(pooled.model_dump_json().encode()).hexdigest()[:12]


class SandboxBounds(BaseModel):
    """The operator's ceiling on each limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int = Field(4096, ge=64)
    cpus: float = Field(2.0, gt=0)
    pids: int = Field(1024, ge=16)
    workspace_mb: int = Field(4096, ge=1)
    tmp_mb: int = Field(1024, ge=1)

    def check(self, limits: SandboxLimits) -> SandboxLimits:
        """Return `limits` if every one is within bounds and the machine; raise `ConfigError`
        naming those that are not."""
        over = self.over(limits)
        if over:
            raise ConfigError("sandbox limits refused: " + "; ".join(over))
        return limits

    def over(self, limits: SandboxLimits) -> list[str]:
        """What in `limits` is above these bounds ([sandbox.max]) or this machine's size."""
        over = [
            f"{name} {getattr(limits, name):g} is above the bound of {bound:g} ([sandbox.max])"
            for name, bound in self.model_dump().items()
            if getattr(limits, name) > bound
        ]
        memory_mb = psutil.virtual_memory().total // 2**20
        if limits.memory_mb > memory_mb:
            over.append(f"memory_mb {limits.memory_mb} is above this machine's {memory_mb} MB")
        cpus = os.cpu_count() or 1
        if limits.cpus > cpus:
            over.append(f"cpus {limits.cpus:g} is above this machine's {cpus}")
        return over


#: the runtime image's tag, as `agent sandbox build` makes it
DEFAULT_IMAGE = "agent-sandbox:latest"


class SandboxConfig(BaseModel):
    """The [sandbox] section of agent.toml."""

    model_config = ConfigDict(extra="forbid")

    image: str = DEFAULT_IMAGE
    pool_size: int = Field(2, ge=0, le=32)
    #: sandboxes kept started, with network "proxy" and Chromium running (and, in a runner that
    #: uses browsers, connected), for new tasks' browsers; 0 turns it off
    browser_pool: int = Field(1, ge=0, le=8)
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    max: SandboxBounds = Field(default_factory=SandboxBounds)
    #: let a task's allowlist reach a private, loopback or this host's own address that it names
    #: outright (an IP literal or localhost: `--allow-domain 127.0.0.1:8765`); off, the proxy
    #: refuses them whatever a task asks. The operator's to turn on, never a task's.
    allow_private: bool = False

    @model_validator(mode="after")
    def _limits_within_bounds(self) -> SandboxConfig:
        # What every task gets unless it asks: held to the same bounds as what a task asks for,
        # and to the machine (a limit above the machine's memory is no limit). Only where the
        # operator set them: the defaults must not stop a small machine from starting at all.
        if "limits" not in self.model_fields_set:
            return self
        over = self.max.over(self.limits)
        if over:
            raise ValueError("[sandbox.limits]: " + "; ".join(over))
        return self
