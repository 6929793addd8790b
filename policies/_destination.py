"""Where a call goes, said first in a reviewer's preview, with host names that imitate others
flagged.

A reviewer must see where a call sends what, before any of its values: a page can fill a field
with kilobytes so that a destination further down scrolls off the screen. And a host name can
imitate another: `pаypal.example` with a Cyrillic `а`, or a punycode label (`xn--...`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit


def destination_lines(arguments: Mapping[str, Any]) -> list[str]:
    """The lines that say where a call goes (a form's submission; a URL and its method), and a
    warning for each host name that may imitate another; [] for a call that names none."""
    lines: list[str] = []
    effect = arguments.get("effect")
    submits = effect.get("submits") if isinstance(effect, Mapping) else None
    if isinstance(submits, Mapping):
        lines.append(f"sends a form: {submits.get('method', '?')} {submits.get('action', '?')}")
        urls = [str(submits.get("action", ""))]
    elif isinstance(arguments.get("url"), str):
        method = str(arguments.get("method") or "GET").upper()
        lines.append(f"request: {method} {arguments['url']}")
        urls = [str(arguments["url"])]
    else:
        return []
    for url in urls:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:  # "Invalid IPv6 URL", and the like
            lines.append("⚠ this URL cannot be read as one: check where it leads")
            continue
        if warning := lookalike(host):
            lines.append(f"⚠ {warning}")
    return lines


def lookalike(host: str) -> str | None:
    """Why `host` may imitate another host, or None: a label that mixes scripts, or a name
    that is not plain ASCII (or is punycode, `xn--`)."""
    for label in host.split("."):
        scripts = {_script(c) for c in label if c.isalpha()}
        if len(scripts) > 1:
            mixed = ", ".join(sorted(scripts))
            return f"the host {host} mixes scripts in one name ({mixed}): it may imitate another"
    if not host.isascii() or any(label.startswith("xn--") for label in host.split(".")):
        return f"the host {host} is an internationalised name: check that it is the site meant"
    return None


def _script(char: str) -> str:
    """The script a letter belongs to, by its Unicode name (LATIN, CYRILLIC, GREEK, ...)."""
    return unicodedata.name(char, "UNKNOWN").split(" ")[0]
