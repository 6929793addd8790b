"""Where the runtime keeps its files: the event log, artifacts, and the model workers' sockets.

A module of its own, importing nothing of the project's, so that any layer may ask.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """`$AGENT_HOME`, else `$XDG_DATA_HOME/agent`, else `~/.local/share/agent`."""
    if home := os.environ.get("AGENT_HOME"):
        return Path(home)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "agent"
