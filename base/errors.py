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

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every code the program gives a failure: of its own (`AgentError.code`), and of a tool's
    call (`ToolResult.error_code`). Compared by member, never by text; each is its own string
    value on the wire and in the log, so a stored code reads back as the same member. A custom
    tool may give codes of its own (`ToolError(code=...)` takes any string)."""

    AGENT_ERROR = "agent_error"
    AMBIGUOUS = "ambiguous"
    AUTH_FAILED = "auth_failed"
    BACKEND_ERROR = "backend_error"
    BAD_ARGUMENTS = "bad_arguments"
    BAD_FIELD = "bad_field"
    BAD_REQUEST = "bad_request"
    BAD_RESPONSE = "bad_response"
    BAD_TARGET = "bad_target"
    BAD_VALUE = "bad_value"
    BROWSER_PAGE_SCRIPT = "browser_page_script"
    BUILD_FAILED = "build_failed"
    CAPABILITY_REFUSED = "capability_refused"
    COMMAND_TIMEOUT = "command_timeout"
    CONFIG_INVALID = "config_invalid"
    CONFLICTING_WRITE = "conflicting_write"
    CONNECTION_FAILED = "connection_failed"
    CONTEXT_EXCEEDED = "context_exceeded"
    DIALOG_OPEN = "dialog_open"
    DISK_FULL = "disk_full"
    DOCKER_UNAVAILABLE = "docker_unavailable"
    ELEMENT_NOT_READY = "element_not_ready"
    EXIT_STATUS = "exit_status"
    GENERATION_FAILED = "generation_failed"
    HEALTH_FAILED = "health_failed"
    IMAGE_MISSING = "image_missing"
    MODEL_LOAD_FAILED = "model_load_failed"
    NO_DIALOG = "no_dialog"
    NO_NETWORK = "no_network"
    NO_SANDBOX = "no_sandbox"
    NOT_A_DIRECTORY = "not_a_directory"
    NOT_A_FILE = "not_a_file"
    NOT_FILLED = "not_filled"
    NOT_FOUND = "not_found"
    NO_EARLIER_VERSION = "no_earlier_version"
    NOT_IN_FORM = "not_in_form"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    ESCALATED = "escalated"
    NOT_RUNNING = "not_running"
    NOT_TEXT = "not_text"
    NOTHING_TO_APPROVE = "nothing_to_approve"
    OUTSIDE_WORKSPACE = "outside_workspace"
    OVERLOADED = "overloaded"
    PAGE_ERROR = "page_error"
    PORT_TAKEN = "port_taken"
    RULE_REFUSED = "rule_refused"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"
    SANDBOX_BUSY = "sandbox_busy"
    SANDBOX_ERROR = "sandbox_error"
    SANDBOX_GONE = "sandbox_gone"
    SANDBOX_RESTARTED = "sandbox_restarted"
    SANDBOX_UNRESPONSIVE = "sandbox_unresponsive"
    SCRIPT_DIVERGED = "script_diverged"
    SECRET_OUT_OF_SCOPE = "secret_out_of_scope"
    SCRIPT_EXHAUSTED = "script_exhausted"
    SCRIPT_UNCONSUMED = "script_unconsumed"
    SERVER_ERROR = "server_error"
    STORE_DAMAGED = "store_damaged"
    STORE_ERROR = "store_error"
    STORE_INTEGRITY = "store_integrity"
    STORE_READ_ONLY = "store_read_only"
    TAB_CLOSED = "tab_closed"
    TASK_BUSY = "task_busy"
    TASK_NOT_FOUND = "task_not_found"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    TOOL_ERROR = "tool_error"
    TRUNCATED_STREAM = "truncated_stream"
    WORKER_CRASHED = "worker_crashed"


class AgentError(Exception):
    """Base of the program's own errors: a stable `code`, `retryable`, and context fields."""

    code: ErrorCode = ErrorCode.AGENT_ERROR
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
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

    code = ErrorCode.CONFIG_INVALID


class BackendError(AgentError):
    """A model backend failed. `retryable` says whether trying again may help."""

    code = ErrorCode.BACKEND_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
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

    code = ErrorCode.SCRIPT_EXHAUSTED


class StoreError(AgentError):
    code = ErrorCode.STORE_ERROR


class TaskNotFound(StoreError):
    code = ErrorCode.TASK_NOT_FOUND


class TaskBusy(StoreError):
    code = ErrorCode.TASK_BUSY
    retryable = True


class ConflictingWrite(StoreError):
    code = ErrorCode.CONFLICTING_WRITE
    retryable = True


class SandboxError(AgentError):
    """A sandbox cannot be created or used. `fix`, when set, is the command that fixes it."""

    code = ErrorCode.SANDBOX_ERROR

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
    code = ErrorCode.DOCKER_UNAVAILABLE
    retryable = True


class ImageMissing(SandboxError):
    code = ErrorCode.IMAGE_MISSING
