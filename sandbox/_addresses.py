"""Which addresses the egress proxy may dial: what a DNS answer or an IP literal is judged by.

The proxy runs on the host, so whatever it dials, it dials from the host. It refuses:

- every special-purpose range of IANA's registries for IPv4 and IPv6 (private, loopback, shared,
  link-local, documentation, benchmarking, reserved, multicast, discard, ...), whether or not the
  registry calls the range globally reachable: a task has no business with any of them;
- every address of the host's own interfaces (its public address too: a name an attacker
  controls can resolve to it, and the host's services would answer the proxy);
- an IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged by the IPv4
  address it leads to; Teredo, whose client address is hidden, is refused.

A private, loopback or own address the operator's allowlist names outright (an IP literal or
`localhost`) is dialled only where the operator said so in config (`[sandbox] allow_private`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = "cloud metadata address"
RESERVED = "link-local or reserved address"
PRIVATE = "private or loopback address"
SPECIAL = "special-purpose address"
OWN = "an address of the proxy's own host"
TEREDO = "Teredo address (its IPv4 address is hidden)"

_METADATA: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def _nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


# The host itself and the networks of an organisation: an operator may open these explicitly.
_PRIVATE: Final = _nets(
    *("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"),
    *("::1/128", "fc00::/7", "fec0::/10"),
)
# Never dialled: link-local, "this network", broadcast, multicast.
_RESERVED: Final = _nets(
    *("0.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32"),
    *("::/128", "fe80::/10", "ff00::/8"),
)
# The rest of IANA's special-purpose address registries (IPv4 and IPv6), and the reserved
# blocks: never dialled.
_SPECIAL: Final = _nets(
    # IPv4: IETF protocol assignments (DS-Lite, PCP anycast, TURN, ...), documentation, AS112,
    # AMT, the old 6to4 relay anycast, benchmarking, reserved for future use
    *("192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24"),
    *("192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4"),
    # IPv6: IPv4-compatible (deprecated) and the rest of ::/8, local-use NAT64, discard-only,
    # the dummy prefix, IETF protocol assignments (Teredo, benchmarking, ORCHID, AMT, AS112,
    # ...), documentation (both), direct AS112 delegation, SRv6 SIDs
    *("::/8", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23", "2001:db8::/32"),
    *("2620:4f:8000::/48", "3fff::/20", "5f00::/16"),
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_TEREDO: Final = ipaddress.ip_network("2001::/32")


def judge(
    address: IPAddress,
    *,
    explicit: bool,
    allow_private: bool,
    own: Callable[[IPAddress], bool] | None = None,
) -> str | None:
    """Why the proxy must not dial `address`, or None if it may.

    `explicit`: the allowlist entry that matched names this address outright (an IP literal or
    localhost), and `allow_private`: the operator lets such entries reach private, loopback and
    the host's own addresses. `own`: whether an address is the host's (default: `is_own`, the
    interfaces of the host this runs on).
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address in _TEREDO:
            return TEREDO
        embedded = _embedded(address)
        if embedded is not None:
            reason = judge(embedded, explicit=explicit, allow_private=allow_private, own=own)
            return f"{reason} ({embedded}, inside {address})" if reason else None
    if address in _METADATA:
        return METADATA
    if any(address in network for network in _RESERVED):
        return RESERVED
    opened = explicit and allow_private
    if any(address in network for network in _PRIVATE):
        return None if opened else PRIVATE
    if any(address in network for network in _SPECIAL):
        return SPECIAL
    if (own or is_own)(address):
        return None if opened else OWN
    return None


def _embedded(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped, NAT64 (64:ff9b::/96), 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def is_own(address: IPAddress) -> bool:
    """Whether `address` is one of this host's: on one of its interfaces."""
    return own_of(host_addresses())(address)


def own_of(addresses: Collection[str]) -> Callable[[IPAddress], bool]:
    """`judge`'s `own` for a proxy that runs elsewhere than the host it guards (in a container:
    its interfaces are not the host's), told the host's addresses."""
    known = frozenset(ipaddress.ip_address(a) for a in addresses)
    return lambda address: address in known


def host_addresses() -> list[str]:
    """The addresses of this host's interfaces (an IPv6 link-local one without its zone)."""
    import psutil  # noqa: PLC0415 - a deployment's proxy imports this module where psutil is not

    return sorted(
        {
            info.address.split("%")[0]
            for infos in psutil.net_if_addrs().values()
            for info in infos
            if info.family in (socket.AF_INET, socket.AF_INET6)
        }
    )
