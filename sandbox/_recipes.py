"""How a folder becomes an image: its own Dockerfile, or one written here for a kind recognised
from its files (a Python web app, a static site). Pure functions of the folder's files, so that
the plan a reviewer approves and the build that follows read the same thing.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from typing import Literal

from base.errors import ErrorCode

Kind = Literal["dockerfile", "python", "static"]
#: the port a recognised app is told to listen on ($PORT), unless the deploy names another
DEFAULT_PORT = 8000
#: the files a Python app may start from, in the order they are looked for
_PY_ENTRIES = ("app.py", "main.py", "server.py", "wsgi.py", "asgi.py")
_ASGI = re.compile(r"\b(FastAPI|Starlette|Quart)\s*\(|async\s+def\s+app\s*\(\s*scope\b")
_WSGI = re.compile(r"\b(Flask|Bottle)\s*\(|def\s+(application|app)\s*\(\s*environ\b")
_MAIN = re.compile(r"""if\s+__name__\s*==\s*['"]__main__['"]""")
_PRIVILEGED = (
    (re.compile(r"--privileged|--security\s*=\s*insecure", re.I), "a privileged RUN"),
    (re.compile(r"--network\s*=\s*host", re.I), "the host's network"),
    (re.compile(r"^\s*VOLUME\b", re.I | re.M), "a VOLUME (a deployment has no host mounts)"),
)


class RecipeError(Exception):
    """The folder cannot be deployed as it is: the message says why and what was looked for."""

    def __init__(self, message: str, code: str = ErrorCode.BAD_ARGUMENTS) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Recipe:
    """What will be built: the kind, the Dockerfile, the command it runs and its port."""

    kind: Kind
    dockerfile: str
    command: str
    port: int
    #: how the kind was recognised, said to the reviewer ("app.py: a WSGI app (Flask)")
    because: str


def files_of(archive: bytes) -> dict[str, bytes]:
    """The regular files of a tar archive of one folder (as Docker's archive API gives it: each
    path starts with the folder's name), by their path inside the folder."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            _, _, inner = member.name.partition("/")
            handle = tar.extractfile(member)
            if inner and handle is not None:
                found[inner] = handle.read()
    return found


def digest(files: dict[str, bytes]) -> str:
    """A digest of a folder's contents (paths and bytes, not times): a changed file changes it."""
    summer = hashlib.sha256()
    for path in sorted(files):
        summer.update(json.dumps([path, hashlib.sha256(files[path]).hexdigest()]).encode())
    return summer.hexdigest()


def context(files: dict[str, bytes], dockerfile: str) -> bytes:
    """The build context: the folder's files with `dockerfile` as its Dockerfile."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in sorted({**files, "Dockerfile": dockerfile.encode()}.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def recipe(files: dict[str, bytes], base: str, port: int | None = None) -> Recipe:
    """How to build the folder: its Dockerfile, or one for the kind recognised from its files,
    built FROM `base` (the runtime image, so that no registry is needed). Raises `RecipeError`."""
    if "Dockerfile" in files:
        return _own(files["Dockerfile"].decode(errors="replace"), port)
    if entry := next((name for name in _PY_ENTRIES if name in files), None):
        return _python(files, entry, base, port or DEFAULT_PORT)
    if "index.html" in files:
        chosen = port or DEFAULT_PORT
        command = f"python3 -m http.server {chosen} --bind 0.0.0.0 --directory /srv/app"
        dockerfile = _dockerfile(base, "", command, chosen)
        return Recipe("static", dockerfile, command, chosen, "index.html: a static site")
    raise RecipeError(
        "cannot tell how to run this folder: looked for a Dockerfile, a Python app "
        f"({', '.join(_PY_ENTRIES)}) and a static site (index.html), and found none of them"
        + (f" among {', '.join(sorted(files)[:12])}" if files else " (the folder is empty)"),
        code=ErrorCode.NOT_FOUND,
    )


def _own(dockerfile: str, port: int | None) -> Recipe:
    for pattern, what in _PRIVILEGED:
        if found := pattern.search(dockerfile):
            line = dockerfile.count("\n", 0, found.start()) + 1
            raise RecipeError(
                f"Dockerfile line {line} asks for {what}, which a deployment does not get: it "
                "runs as an unprivileged user, with no capabilities, no host mounts and no host "
                "network"
            )
    users = re.findall(r"^\s*USER\s+(\S+)", dockerfile, re.I | re.M)
    if users and users[-1].split(":")[0] in ("root", "0"):
        raise RecipeError(
            "the Dockerfile's last USER is root: a deployment runs as an unprivileged user "
            "(1000), so make the files it needs that user's and drop `USER root`"
        )
    exposed = re.search(r"^\s*EXPOSE\s+(\d+)", dockerfile, re.I | re.M)
    chosen = port or (int(exposed.group(1)) if exposed else DEFAULT_PORT)
    command = _last(r"^\s*(CMD|ENTRYPOINT)\s+(.+)$", dockerfile) or "(the image's own)"
    return Recipe("dockerfile", dockerfile, command, chosen, "the folder's Dockerfile")


def _python(files: dict[str, bytes], entry: str, base: str, port: int) -> Recipe:
    source = files[entry].decode(errors="replace")
    requirements = files.get("requirements.txt", b"").decode(errors="replace")
    wanted = {
        re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        for line in requirements.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    module = entry.removesuffix(".py")
    install = ""
    if wanted or "pyproject.toml" in files:
        target = "-r requirements.txt" if wanted else "."
        install = f"RUN python3 -m pip install --no-cache-dir --break-system-packages {target}\n"
    if _ASGI.search(source):
        if "uvicorn" not in wanted:
            raise RecipeError(
                f"{entry} is an ASGI app, which needs a server: add uvicorn to requirements.txt"
            )
        command = f"python3 -m uvicorn {module}:app --host 0.0.0.0 --port {port}"
        because = f"{entry}: an ASGI app, served by uvicorn"
    elif _WSGI.search(source):
        name = (
            "application" if re.search(r"\bapplication\s*=|def\s+application\b", source) else "app"
        )
        if "gunicorn" in wanted:
            command = f"gunicorn --bind 0.0.0.0:{port} {module}:{name}"
            because = f"{entry}: a WSGI app, served by gunicorn"
        else:
            command = (
                f'python3 -c "from wsgiref.simple_server import make_server; '
                f"from {module} import {name}; make_server('0.0.0.0', {port}, {name})"
                '.serve_forever()"'
            )
            because = f"{entry}: a WSGI app, served by Python's wsgiref"
    elif _MAIN.search(source):
        command = f"python3 {entry}"
        because = f"{entry}: a Python program that serves on $PORT"
    else:
        raise RecipeError(
            f"{entry} is neither an ASGI app, a WSGI app nor a program with "
            "`if __name__ == '__main__'`: cannot tell how to start it"
        )
    return Recipe("python", _dockerfile(base, install, command, port), command, port, because)


def _dockerfile(base: str, install: str, command: str, port: int = DEFAULT_PORT) -> str:
    return (
        f"FROM {base}\n"
        "USER 0:0\n"
        "COPY . /srv/app\n"
        "WORKDIR /srv/app\n"
        f"{install}"
        f"ENV PORT={port} PYTHONUNBUFFERED=1\n"
        f"EXPOSE {port}\n"
        "USER 1000:1000\n"
        f'CMD ["sh", "-c", {json.dumps("exec " + command)}]\n'
    )


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text, re.I | re.M)
    return found[-1][1].strip() if found else None


def build_failure(dockerfile: str, step: str, error: str) -> str:
    """Which line of the Dockerfile failed, and how."""
    where = ""
    if step:
        for number, line in enumerate(dockerfile.splitlines(), start=1):
            if line.strip() and line.strip() == step:
                where = f" at Dockerfile line {number} ({step})"
                break
        else:
            where = f" at {step}"
    return f"the build failed{where}: {error.strip()}"
