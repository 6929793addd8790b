"""Failures of the program, as opposed to failures the model should see.

A failure the model can correct (bad arguments, an unknown tool, a 404 from a tool) becomes an
observation and the loop goes on. A failure of the program itself is one of these exceptions,
raised with structured fields so that callers decide on `code` and `retryable`, never on text::

    AgentError
    ├── ConfigError          a config, rules file or model URI is wrong (refused at load)
    ├── BackendError         a model backend failed (rate limited, 5xx, timeout, 4xx, ...)
    │   └── ScriptError      a scripted backend ran out of turns or diverged from its script
    ├── StoreError           the event log cannot be used
    │   ├── TaskNotFound
    │   ├── TaskBusy         another live runner holds the task
    │   └── ConflictingWrite another process appended to the task first
    └── SandboxError         a task's sandbox cannot be had or used (`fix` says what to run)
        ├── DockerUnavailable no Docker daemon answers
        └── ImageMissing     the runtime image has not been built
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base of the program's own errors: a stable `code`, `retryable`, and context fields."""

    code: str = "agent_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        return self.message


class ConfigError(AgentError):
    """A configuration, policy file or model URI is invalid. The message names the place."""

    code = "config_invalid"


class BackendError(AgentError):
    """A model backend failed. `retryable` says whether trying again may help."""

    code = "backend_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable, **context)
        self.status = status
        self.retry_after = retry_after


class ScriptError(BackendError):
    """A scripted backend has no turn left for a request, or the request is not the one expected."""

    code = "script_exhausted"


class StoreError(AgentError):
    code = "store_error"


class TaskNotFound(StoreError):
    code = "task_not_found"


class TaskBusy(StoreError):
    code = "task_busy"
    retryable = True


class ConflictingWrite(StoreError):
    code = "conflicting_write"
    retryable = True


class SandboxError(AgentError):
    """A sandbox cannot be created or used. `fix`, when set, is the command that fixes it."""

    code = "sandbox_error"

    def __init__(
        self, message: str, *, fix: str | None = None, nothing_ran: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.fix = fix
        #: known to have run none of the caller's command (the container could not be had)
        self.nothing_ran = nothing_ran

    def __str__(self) -> str:
        return f"{self.message} (to fix: {self.fix})" if self.fix else self.message


class DockerUnavailable(SandboxError):
    code = "docker_unavailable"
    retryable = True


class ImageMissing(SandboxError):
    code = "image_missing"
