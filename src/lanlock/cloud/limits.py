"""Failed credential attempts, counted in the store so that guessing codes is slow everywhere.

Who is limited, and why so:

* **A key registered to the database is never limited.** A box that signs with a device key the
  cloud already bound to that database has proved more than any code could; nobody's failures,
  from its network or against its database, can refuse it. (The caller skips the limits.)
* **Per source network.** Failures are counted per /24 (IPv4) or /56 (IPv6), the smallest block
  one customer or one attacker usually holds, so that an attacker cannot step through the
  addresses of its own block. Behind a load balancer the cloud counts the client address the
  configured trusted proxy forwards (:func:`client_address`), never a header anybody can write.
* **Per database, without handing strangers a lock-out.** The UUID is printed on every box, so a
  stranger can fail against any database at will, from many networks. Refusing that database's
  new boxes while it is attacked would give him exactly that power. Instead a database with too
  many failures is *guarded*: it still takes new boxes from the networks where its own boxes
  already work (``boxes.source_network``), and new boxes from other networks wait (429) until
  the window is over. Guessing from outside the shops' networks is slowed to the per-database
  limit; a stranger cannot refuse a new box where the customer's boxes live. What is left: during
  an attack, a customer's first box at a new site waits for the window, and an attacker on the
  shop's own network (who shares its /24) is limited like the shop.

Counts live in ``failure_counts``: fixed windows per key, one row per key that failed lately,
swept when the window is over, so memory is bounded by the store, not by the process, and
every replica sees the same counts. A failure costs two upserts (its network's and its
database's) in the refusal's own transaction; a registered box's request is never checked
against the table (a wrong code it sends still counts as a failure).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Iterable, Sequence

from sqlalchemy import case, delete, literal, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from lanlock.cloud.models import Box, FailureCount, UTCDateTime

IPV4_PREFIX = 24
IPV6_PREFIX = 56
TrustedProxies = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def network_of(address: str) -> str:
    """The /24 or /56 that ``address`` is counted in; an unparseable one is its own network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def client_address(peer: str, forwarded_for: str | None, trusted: TrustedProxies) -> str:
    """The client's address: the peer's, or behind trusted proxies the one they forwarded.

    ``X-Forwarded-For`` is read from the right: each trusted proxy appends the address it saw,
    so the rightmost entry that is not a trusted proxy is the first one nobody can forge. A
    peer that is not a trusted proxy is the client, whatever header it sends.
    """
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for entry in reversed([e.strip() for e in forwarded_for.split(",")]):
        if not _is_trusted(entry, trusted):
            return entry if _parses(entry) else peer
    return peer


def _is_trusted(address: str, trusted: TrustedProxies) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def _parses(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def network_key(network: str) -> str:
    return f"net:{network}"


def database_key(db_uuid: str) -> str:
    return f"db:{db_uuid[:64]}"


class FailureCounts:
    """At most ``limit`` failures per key within a ``window`` of seconds; then the key waits."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = dt.timedelta(seconds=window)

    def seconds_left(self, window_start: dt.datetime, now: dt.datetime) -> int:
        """Seconds until the window that began at ``window_start`` is over (at least 1)."""
        return max(1, math.ceil((window_start + self.window - now).total_seconds()))

    def record(self, session: Session, keys: Iterable[str], now: dt.datetime) -> None:
        """One more failure under each key, starting a new window where the last one is over."""
        table = FailureCount.__table__
        window_over = table.c.window_start <= now - self.window
        started = literal(now, UTCDateTime())
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
        for key in keys:
            statement = insert(table).values(key=key, window_start=now, failures=1)
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.key],
                    set_={
                        "failures": case((window_over, 1), else_=table.c.failures + 1),
                        "window_start": case((window_over, started), else_=table.c.window_start),
                    },
                )
            )

    def sweep(self, session: Session, now: dt.datetime) -> None:
        session.execute(delete(FailureCount).where(FailureCount.window_start <= now - self.window))


def database_works_from(session: Session, db_uuid: str, network: str) -> bool:
    """Whether an active box of the database sends its requests from ``network``."""
    return (
        session.scalar(
            select(Box.box_id)
            .where(
                Box.database_uuid == db_uuid,
                Box.source_network == network,
                Box.state == "active",
            )
            .limit(1)
        )
        is not None
    )
