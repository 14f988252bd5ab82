"""The address a webhook delivery came from: what the IP allowlist checks and the event records."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

from django.conf import settings

from core.ip_allowlist import IPAddress, IPNetwork, ip_address_parse


def client_ip(meta: Mapping[str, str]) -> str | None:
    """The client's address: ``REMOTE_ADDR``, unless that is one of ``TRUSTED_PROXIES``; then
    the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.

    Why the right-most: each proxy appends the address of the peer it received the request
    from. Walking from the right, each entry up to the first address that is not a trusted proxy
    was appended by a proxy of ours about a connection it saw; everything to the left of that
    came with the request from the client and can say anything. (The left-most entry, which
    naive code takes, is the one an attacker chooses.)

    None when a trusted proxy forwarded something that is not an address: the client is then
    unknown, and an allowlist with entries refuses it.
    """
    remote = meta.get("REMOTE_ADDR") or None
    proxies = settings.TRUSTED_PROXIES
    if not proxies:  # the usual case costs one look-up
        return remote
    trusted = _trusted_networks(tuple(proxies))
    hop = ip_address_parse(remote)
    if hop is None or not _is_trusted(hop, trusted):
        return remote
    forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
    if not forwarded.strip():
        return str(hop)  # the proxy's own request
    for entry in reversed(forwarded.split(",")):
        hop = ip_address_parse(entry.strip())
        if hop is None:
            return None
        if not _is_trusted(hop, trusted):
            return str(hop)
    # Every entry is a proxy of ours: the left-most is as far back as anyone can tell.
    return str(hop)


@functools.lru_cache(maxsize=8)
def _trusted_networks(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    # Checked at start-up (config.env.env_ip_networks); keyed by the value so a changed setting
    # (tests) is parsed again.
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted(address: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in trusted)
