"""IP allowlists of provider accounts: which client addresses may deliver an account's webhooks.

The text is one entry a line: an IPv4 or IPv6 address or a CIDR network (``203.0.113.7``,
``203.0.113.0/24``, ``2001:db8::/32``); blank lines and ``#`` comments are ignored. An allowlist
without entries allows every address (the signature is still checked either way).
"""

from __future__ import annotations

import functools
import ipaddress
import logging

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpAllowlistInvalid(ValueError):
    """An entry is not an address or a network; the message names its line."""


def ip_allowlist_parse(text: str) -> tuple[IPNetwork, ...]:
    """The networks of an allowlist, strictly: the first bad line raises ``IpAllowlistInvalid``."""
    networks = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            # strict=False: "203.0.113.7/24" means the /24 it is in, as staff would expect.
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise IpAllowlistInvalid(
                f"line {number}: {entry!r} is not an IP address or CIDR network "
                "(for example 203.0.113.7, 203.0.113.0/24 or 2001:db8::/32)"
            ) from None
    return tuple(networks)


def ip_address_parse(text: str | None) -> IPAddress | None:
    """``text`` as an address, or None when it is not one. An IPv4-mapped IPv6 address
    (``::ffff:203.0.113.7``, what a dual-stack socket reports for an IPv4 peer) is its IPv4
    address, so IPv4 entries match it."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_allowlist_allows(allowlist: str, address: str | None) -> bool:
    """Whether ``address`` may deliver to an account with ``allowlist``. An address that is
    missing or not an address is allowed only by an allowlist without entries."""
    networks = _networks(allowlist)
    if networks is None:
        return True
    parsed = ip_address_parse(address)
    # An IPv6 address is never inside an IPv4 network (``in`` checks the versions too).
    return parsed is not None and any(parsed in network for network in networks)


@functools.lru_cache(maxsize=1024)
def _networks(allowlist: str) -> tuple[IPNetwork, ...] | None:
    """The allowlist's networks, parsed once per distinct text (the webhook path calls this for
    every delivery to an account with an allowlist); None when it has no entries.

    Saved allowlists were checked strictly, but one written another way (a shell, an older
    version) must not break deliveries: a bad line allows nothing, the others still apply.
    """
    networks: list[IPNetwork] = []
    entries = 0
    for line in allowlist.splitlines():
        try:
            parsed = ip_allowlist_parse(line)
        except IpAllowlistInvalid:
            entries += 1
            logger.warning("ignoring an IP allowlist entry that is not an address or network: %r", line.strip()[:100])
            continue
        entries += len(parsed)
        networks.extend(parsed)
    return tuple(networks) if entries else None
