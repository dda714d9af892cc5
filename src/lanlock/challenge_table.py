"""A table the cloud and the DNS share: ``acme_challenges``, the DNS-01 TXT values (the other
is ``acme_accounts``, :mod:`lanlock.account_table`).

The cloud's ACME issuer writes a row per value while an order is pending; every DNS replica
reads the unexpired rows (a snapshot, :mod:`lanlock.dns.challenges`) and answers each value at
``_acme-challenge.<scope>.<zone>`` and nowhere else (docs/design.md §7). That is the whole
contract of this table:

* ``scope``: the scope of the order that wrote the row (lower case); the DNS derives the one
  name it answers from it, so the cloud can never publish under a name of its choosing;
* ``value``: the TXT value, as the CA asked for it;
* ``expires_at``: aware UTC; the DNS stops answering the value then, even if the row stays;
* ``id``: increasing; the DNS answers the values of one scope in this order.

The table belongs to the cloud's schema (its migrations create it); the DNS never migrates, it
checks that the store is at :data:`FIRST_REVISION` or later of the cloud's migrations, the first
that made the table in this shape. A migration that changes these columns must raise
:data:`FIRST_REVISION` to itself.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table

from lanlock.store.types import UTCDateTime, utcnow

NAME = "acme_challenges"
FIRST_REVISION = "0004"  # the cloud's migration "challenges by scope"
VERSION_TABLE = "alembic_version"  # the cloud's Alembic version table


def define(metadata: MetaData) -> Table:
    """The table, on ``metadata``: the cloud's models and the DNS's reader each have their own."""
    return Table(
        NAME,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("scope", String(63), index=True, nullable=False),
        Column("value", String(255), nullable=False),
        Column("created_at", UTCDateTime, default=utcnow, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
    )
