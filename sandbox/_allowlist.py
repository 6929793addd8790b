"""Allowlist entries: what a task's allowlist may name (a host, its subdomains, an IP address or
`localhost`, with an optional port), parsed once, and matched against each request."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sandbox._addresses import IPAddress

HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


@dataclass(frozen=True)
class Entry:
    name: str  # a host name, or an IP address in its canonical text
    address: IPAddress | None
    wildcard: bool
    port: int | None
    explicit: bool  # an IP literal or localhost: the operator named a local target outright

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        if port not in ((80, 443) if self.port is None else (self.port,)):
            return False
        if self.address is not None or address is not None:
            return address == self.address
        return host.endswith("." + self.name) if self.wildcard else host == self.name


def check_entry(text: str) -> str:
    """`text` if it is an allowlist entry (see `EgressProxy.register`); raises ValueError if not."""
    parse_entry(text)
    return text


def parse_entry(text: str) -> Entry:
    if "/" in text:
        raise ValueError(
            f"not an allowlist entry: {text!r} (a host name, not a URL: example.com, "
            "*.example.com or an IP address, each with an optional :port)"
        )
    host, port = split_host_port(text.strip())
    name = host.removeprefix("*.")
    wildcard = name != host
    address = ip_or_none(name)
    if address is not None and not wildcard:
        return Entry(str(address), address, wildcard, port, explicit=True)
    if address is None and HOST_NAME.fullmatch(name):
        return Entry(name, None, wildcard, port, explicit=name == "localhost")
    raise ValueError(f"not an allowlist entry: {text!r}")


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split `host[:port]`, `[ipv6][:port]` or a bare IPv6 address into host and port.

    The host comes back lowercased, without a trailing dot, and is left to the caller to check.
    Raises ValueError for a bad port or bracket.
    """
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not isinstance(ip_or_none(host), ipaddress.IPv6Address):
            raise ValueError(f"not an IPv6 address in brackets: {text!r}")
    elif isinstance(ip_or_none(text), ipaddress.IPv6Address):
        host, rest = text, ""
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    digits = rest.removeprefix(":")
    if rest and (digits == rest or not digits.isascii() or not digits.isdigit()):
        raise ValueError(f"not a port: {rest!r}")
    if digits and not 0 < int(digits) < 65536:
        raise ValueError(f"not a port: {rest!r}")
    return host.lower().removesuffix("."), int(digits) if digits else None


def ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
