"""Where an MCP server that is not trusted runs: a container of its own, hardened as a deployed
service is (no capability, an unprivileged user, a read-only root, limits on memory, processes
and CPU), with no network at all, spoken to over its stdin and stdout through `docker run -i`.

    runner ──stdio── docker run -i --rm … agent-mcp:DIGEST python3 server.py
                                              (the server's folder at /srv/mcp, read-only)

The container is the server's process: it ends when the runner closes the server's input (or
dies: Docker closes it then too) and is removed as it ends. Each runner that opens a server
starts its own.

Its image is the runtime image with the `mcp` SDK, and whatever packages the server's entry
names, installed from wheels fetched on this host for the image's Python and machine: building
it needs no registry. It is built the first time those packages meet a runtime image, and
tagged with a digest of both.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import docker
import docker.errors

from base.errors import SandboxError
from sandbox._docker import LABEL, SCOPE, mapped
from sandbox._recipes import context, digest
from sandbox.deploy import ServiceLimits

#: where a server's folder is, in its container (and where its command runs)
FOLDER = "/srv/mcp"
#: the scope of every MCP server's container: no runner's, so no runner's clean-up takes one
#: away from the runner using it (each is removed as its process ends)
MCP_SCOPE = "mcp"
LIMITS = ServiceLimits(memory_mb=512, cpus=1.0, pids=128)
Progress = Callable[[str], None]
#: glibc of the runtime image (Debian bookworm): the newest manylinux wheels it runs
_GLIBC = (2, 36)


def server_image(
    client: docker.DockerClient,
    runtime_image: str,
    packages: Sequence[str] = (),
    progress: Progress | None = None,
) -> str:
    """The image MCP servers run in: `runtime_image` with the `mcp` SDK (the version this host
    has) and `packages`, built the first time. Raises `SandboxError` (or `ImageMissing`)."""
    wanted = [f"mcp=={importlib.metadata.version('mcp')}", *sorted(packages)]
    with mapped("reading the runtime image", runtime_image):
        base = str(client.images.get(runtime_image).id)
    tag = (
        f"agent-mcp:{digest({'FROM': base.encode(), 'packages': json.dumps(wanted).encode()})[:16]}"
    )
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    if progress is not None:
        progress(f"building {tag}, the image MCP servers run in (once): {' '.join(wanted)}")
    python, machine = _python_of(client, runtime_image)
    with tempfile.TemporaryDirectory(prefix="agent-mcp-wheels-") as folder:
        _download(wanted, python, machine, Path(folder))
        wheels = {f"wheels/{p.name}": p.read_bytes() for p in Path(folder).iterdir()}
    install = ["python3", "-m", "pip", "install", "--no-index", "--no-cache-dir"]
    install += ["--break-system-packages", "--find-links", "/opt/agent-mcp/wheels", *wanted]
    dockerfile = (  # the exec form: a package's name reaches pip as it is, never a shell
        f"FROM {runtime_image}\n"
        "COPY wheels /opt/agent-mcp/wheels\n"
        f"RUN {json.dumps(install)}\n"
        "ENV PYTHONDONTWRITEBYTECODE=1\n"
    )
    with mapped("building the image MCP servers run in", runtime_image):
        try:
            client.images.build(
                fileobj=io.BytesIO(context(wheels, dockerfile)),
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                network_mode="none",
                labels={LABEL: "1"},
            )
        except docker.errors.BuildError as exc:
            said = " ".join(str(line.get("stream", "")).strip() for line in exc.build_log)
            raise SandboxError(f"building {tag} failed: {exc.msg}: {said[-600:]}") from None
    return tag


def run_command(
    name: str,
    image: str,
    command: Sequence[str],
    *,
    folder: Path | None = None,
    env: Mapping[str, str] | None = None,
    limits: ServiceLimits = LIMITS,
) -> list[str]:
    """The `docker` arguments that start `command` as an MCP server in a container of its own,
    on stdio: hardened, with no network, `folder` (read-only) as its working folder."""
    memory = f"{limits.memory_mb}m"
    argv = [
        "run", "--interactive", "--rm",
        "--name", f"agent-mcp-{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}-{secrets.token_hex(4)}",
        "--label", f"{LABEL}=1", "--label", f"{SCOPE}={MCP_SCOPE}", "--label", "agent.role=mcp",
        "--init", "--user", "1000:1000", "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
        "--network", "none", "--ipc", "private", "--hostname", "mcp",
        "--pids-limit", str(limits.pids), "--memory", memory, "--memory-swap", memory,
        "--cpus", str(limits.cpus),
        "--tmpfs", "/tmp:size=64m,mode=1777,nosuid,nodev",
        "--tmpfs", "/home/sandbox:size=16m,uid=1000,gid=1000,mode=0700,nosuid,nodev",
        "--workdir", FOLDER if folder is not None else "/tmp",
    ]  # fmt: skip
    if folder is not None:
        argv += ["--mount", f"type=bind,source={folder},target={FOLDER},readonly"]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    return [*argv, image, *command]


def _python_of(client: docker.DockerClient, image: str) -> tuple[str, str]:
    """The image's Python ("311") and machine ("x86_64")."""
    with mapped("asking the runtime image for its Python", image):
        said = client.containers.run(
            image,
            [
                "python3",
                "-c",
                "import sys, platform; print(*sys.version_info[:2], platform.machine())",
            ],
            remove=True,
            network_mode="none",
            user="1000:1000",
        )
    major, minor, machine = bytes(said).decode().split()
    return f"{major}{minor}", machine


def _download(wanted: Sequence[str], python: str, machine: str, folder: Path) -> None:
    """Fetch the wheels of `wanted` (and what they need) for the image, with this host's pip
    and its index settings."""
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, _GLIBC[1] + 1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    command += ["--abi", f"cp{python}", "--dest", str(folder)]
    for platform in platforms:
        command += ["--platform", platform]
    done = subprocess.run([*command, *wanted], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise SandboxError(
            f"fetching the wheels of {' '.join(wanted)} for the MCP servers' image failed: "
            + ("; ".join(errors) or done.stderr.strip()[-400:]),
            fix="check this host's package index (pip's settings), or mark the server trusted "
            "= true to run it on this host",
        )
