"""Building the runtime image (`agent sandbox build`).

The Dockerfile and the helpers that run inside are in `sandbox/image/`. The image is built FROM
`debian:bookworm-slim` where that image is present or a registry gives it; where no registry is
reachable, from a base made here: `debootstrap --variant=minbase bookworm` into a folder, imported
with the Docker API (needs root and Debian's debootstrap). Either way the build says which path
it took and streams its progress.

A built image is labelled with a digest of the Dockerfile and helpers: building again when they
have not changed does nothing (unless forced), so CI and first runs pay for the build once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors

from base.errors import SandboxError
from sandbox._docker import LABEL, mapped

CONTEXT = Path(__file__).parent / "image"
REGISTRY_BASE = "debian:bookworm-slim"
LOCAL_BASE = "agent-base:bookworm"
BUILD_LABEL = "agent.build"
Base = Literal["auto", "registry", "debootstrap"]
Progress = Callable[[str], None]


def recipe_digest() -> str:
    """A digest of everything the image is built from."""
    digest = hashlib.sha256()
    for path in sorted(p for p in CONTEXT.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(CONTEXT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def image_state(client: docker.DockerClient, tag: str) -> Literal["current", "stale", "missing"]:
    """Whether `tag` exists and was built from the current recipe."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return "missing"
    labels = image.labels or {}
    return "current" if labels.get(BUILD_LABEL) == recipe_digest() else "stale"


def build_image(
    client: docker.DockerClient,
    tag: str,
    *,
    base: Base = "auto",
    force: bool = False,
    mirror: str | None = None,
    progress: Progress = print,
) -> str:
    """Build the runtime image as `tag`; return its id. Raises `SandboxError` with the build's
    last lines when it fails."""
    with mapped("checking the runtime image"):
        state = image_state(client, tag)
    if state == "current" and not force:
        progress(f"{tag} is up to date (recipe {recipe_digest()}); --force builds it again")
        return str(client.images.get(tag).id)
    base_image = _base(client, base, mirror, progress)
    progress(f"building {tag} from {base_image} (the first build takes a few minutes)")
    lines: list[str] = []
    with mapped(f"building {tag}"):
        stream = client.api.build(
            path=str(CONTEXT),
            tag=tag,
            buildargs={"BASE": base_image},
            labels={LABEL: "1", BUILD_LABEL: recipe_digest()},
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            _show(chunk, lines, progress)
    with mapped(f"checking the built image {tag}"):
        image = client.images.get(tag)
    progress(f"built {tag} ({(image.attrs.get('Size') or 0) / 1e6:.0f} MB)")
    return str(image.id)


def _show(chunk: dict[str, Any], lines: list[str], progress: Progress) -> None:
    if "error" in chunk:
        tail = "\n".join(lines[-15:])
        raise SandboxError(f"the image build failed: {chunk['error'].strip()}\n{tail}")
    text = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
    if text:
        lines.append(text)
        progress(text)


def _present(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _base(client: docker.DockerClient, base: Base, mirror: str | None, progress: Progress) -> str:
    """The image to build FROM, making it when needed."""
    if base in ("auto", "registry"):
        if _present(client, REGISTRY_BASE):
            progress(f"base: {REGISTRY_BASE} (already present)")
            return REGISTRY_BASE
        try:
            progress(f"base: pulling {REGISTRY_BASE}")
            client.images.pull(REGISTRY_BASE)
            return REGISTRY_BASE
        except docker.errors.APIError as exc:
            if base == "registry":
                raise SandboxError(f"cannot pull {REGISTRY_BASE}: {exc.explanation}") from None
            progress("base: no registry is reachable; making one with debootstrap instead")
    if _present(client, LOCAL_BASE):
        progress(f"base: {LOCAL_BASE} (made earlier with debootstrap)")
        return LOCAL_BASE
    _debootstrap(client, mirror, progress)
    return LOCAL_BASE


def _debootstrap(client: docker.DockerClient, mirror: str | None, progress: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise SandboxError(
            "no registry is reachable and debootstrap is not installed",
            fix="apt-get install -y debootstrap (as root), then agent sandbox build",
        )
    if os.geteuid() != 0:
        raise SandboxError(
            "making a base image with debootstrap needs root",
            fix="sudo agent sandbox build, or make debian:bookworm-slim available to Docker",
        )
    with tempfile.TemporaryDirectory(prefix="agent-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        command = ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)]
        if mirror:
            command.append(mirror)
        progress(f"base: {' '.join(command)} (about a minute)")
        _run(command, progress)
        archive = Path(tmp) / "rootfs.tar"
        progress(f"base: importing the root file system as {LOCAL_BASE}")
        _run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], progress)
        repository, _, tag = LOCAL_BASE.partition(":")
        with mapped(f"importing {LOCAL_BASE}"):
            client.api.import_image_from_file(
                str(archive), repository=repository, tag=tag, changes=[f"LABEL {LABEL}=1"]
            )


def _run(command: list[str], progress: Progress) -> None:
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-14:], line.rstrip()]
            progress(line.rstrip())
    if proc.returncode != 0:
        raise SandboxError(f"{command[0]} failed (exit {proc.returncode}):\n" + "\n".join(tail))
