"""The box's LAN addresses, read from its interfaces (docs/design.md §8).

The box is named by its address (``10-0-0-7.<scope>.<zone>``), so it needs every address it can
be reached at on its LAN, and again after a DHCP change. The interfaces are listed
(``psutil.net_if_addrs``) rather than the route to a public address asked for: a LAN may have no
default route at all, and a route names one IPv4 address where a box may have several
interfaces and IPv6 too. No new certificate is needed when they change: the wildcard
``*.<scope>.<zone>`` covers every address label.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from lanlock import names

# What a box with no LAN address at all is named by, as before interfaces were listed: its
# homepage still answers on loopback, and the first address that appears replaces it.
LOOPBACK_FALLBACK = "127.0.0.1"
# Seconds between two readings: a reading is a few netlink and ioctl calls per interface (under
# a millisecond here), and a DHCP change shows on the homepage, in `lanlock box status` and at
# the console within this long.
READ_INTERVAL = 20.0


def lan_addresses() -> tuple[str, ...]:
    """Every address the zone may name on an interface that is up and running, IPv4 first, then
    IPv6, each in the order of the interfaces' indexes (the order of ``ip addr``: the wired link
    before a bridge made later) and, on one interface, in the order the OS lists them (the
    primary address first); ``("127.0.0.1",)`` when there is none."""
    # Imported here: every `lanlock box` command loads this module for READ_INTERVAL, and only
    # the agent and `box connect` read interfaces (psutil takes about 20 ms to import).
    import psutil

    running = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    order = _interface_order()
    found = sorted(
        (
            (address.version, order.get(interface, sys.maxsize), interface, str(address))
            for interface, entries in psutil.net_if_addrs().items()
            if interface in running
            for entry in entries
            if (address := lan_address(entry)) is not None
        ),
        key=lambda found: found[:3],  # a stable sort: one interface's own order stays
    )
    return tuple(dict.fromkeys(text for *_, text in found)) or (LOOPBACK_FALLBACK,)


def lan_address(entry: Any) -> names.Address | None:
    """The address of one ``psutil`` interface entry, if the box can be named by it there.

    Not loopback nor link-local (they mean another place on every network); an address the zone
    serves (docs/design.md §2); IPv6 global addresses too, since a LAN's IPv6 is mostly the
    provider's global prefix (named where the zone's DNS runs with ``--allow-public``), but no
    public IPv4 address, which is not a LAN's.
    """
    if entry.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    address = ipaddress.ip_address(entry.address.partition("%")[0])  # fe80::1%eth0: no zone
    if address.is_loopback or address.is_link_local:
        return None
    return address if names.is_served_address(address, allow_public=address.version == 6) else None


def _interface_order() -> dict[str, int]:
    """Each interface's index. psutil lists interfaces in no stable order (IPv4 ones first)."""
    try:
        return {name: index for index, name in socket.if_nameindex()}
    except OSError:  # not offered on this system: the interfaces' names order them
        return {}
