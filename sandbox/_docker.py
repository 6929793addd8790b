"""The Docker connection and the one place Docker's errors become the runtime's own."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import datetime

import docker
import docker.errors
import requests.exceptions

from base.errors import DockerUnavailable, ErrorCode, ImageMissing, SandboxError

#: every container, volume, network and image the project creates carries this label
LABEL = "agent.sandbox"
#: and these, naming its owner: the scope of the runner that made it (a digest of its store),
#: and the task it was made for ("" for a pooled sandbox, made before any task claims it)
SCOPE = "agent.scope"
TASK = "agent.task"
START_DOCKER = (
    "start the Docker daemon (`dockerd &` as root, or `systemctl start docker`); "
    "`agent doctor` checks it"
)
BUILD_IMAGE = "agent sandbox build"


def owner_labels(scope: str, task: str = "") -> dict[str, str]:
    """The labels naming an object's owner: the project's, a runner's scope, a task."""
    return {LABEL: "1", SCOPE: scope, TASK: task}


def owned_by(labels: Mapping[str, str] | None, scope: str) -> bool:
    """Whether an object of the project is `scope`'s to clean up: labelled with that scope, or
    made before objects were labelled with their owner."""
    return (labels or {}).get(SCOPE, scope) == scope


def connect(timeout: float = 60.0) -> docker.DockerClient:
    """A client for the daemon $DOCKER_HOST names (default: the local socket), known to answer.

    Raises `DockerUnavailable` with what to run when none answers.
    """
    try:
        client = docker.from_env(timeout=int(timeout), max_pool_size=32)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerUnavailable(
            f"no Docker daemon answers: {_first_line(exc)}", fix=START_DOCKER
        ) from None
    return client


@contextlib.contextmanager
def mapped(what: str, image: str | None = None) -> Iterator[None]:
    """Turn Docker's exceptions raised while doing `what` into `SandboxError`s."""
    try:
        yield
    except docker.errors.ImageNotFound:
        raise ImageMissing(
            f"{what}: the runtime image {image or ''} is not built", fix=BUILD_IMAGE
        ) from None
    except docker.errors.NotFound as exc:
        raise SandboxError(f"{what}: {_first_line(exc)}", code=ErrorCode.SANDBOX_GONE) from None
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            raise SandboxError(f"{what}: {_first_line(exc)}", code=ErrorCode.SANDBOX_BUSY) from None
        if image and exc.status_code == 404:
            raise ImageMissing(f"{what}: no image {image}", fix=BUILD_IMAGE) from None
        raise SandboxError(
            f"{what}: {_first_line(exc)}", retryable=(exc.status_code or 500) >= 500
        ) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerUnavailable(f"{what}: {_first_line(exc)}", fix=START_DOCKER) from None


def docker_time(stamp: str) -> float:
    """Seconds since the epoch of a time as Docker writes it (RFC 3339, with up to nanoseconds,
    "Z" or an offset). Raises ValueError for anything else."""
    found = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
    if found is None:
        raise ValueError(f"not a time: {stamp!r}")
    seconds, offset = found.groups()
    return datetime.fromisoformat(seconds + ("+00:00" if offset == "Z" else offset)).timestamp()


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
