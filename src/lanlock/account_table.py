"""The second table the cloud and the DNS share: ``acme_accounts``, the cloud's ACME accounts.

The cloud's ACME issuer writes a row per ACME directory it uses; every DNS replica reads the
registered accounts' URIs (with its challenge snapshot, :mod:`lanlock.dns.challenges`) and binds
the zone's CAA records to them (RFC 8657 ``accounturi``), so that no other account, even at the
same CA, can have a certificate issued under the zone (docs/design.md §7). The contract:

* ``directory_url``: the ACME directory of the account, one row per directory (the key);
* ``key_encrypted``: the account's private key, encrypted with the cloud's secret key; the
  cloud's alone, never read by the DNS;
* ``account_uri``: the account's URL as the CA gave it at registration (RFC 8555 §7.3), the
  ``accounturi`` the CA compares with CAA; NULL while the key is made but not yet registered.
  The DNS reads this column only, and checks each value before it puts it in a record;
* ``created_at``: aware UTC, when the key was made.

The table belongs to the cloud's schema (its migrations create it); the DNS never migrates, it
checks that the store is at :data:`FIRST_REVISION` or later of the cloud's migrations, the first
that made the table in this shape. A migration that changes these columns must raise
:data:`FIRST_REVISION` to itself.
"""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary, MetaData, String, Table

from lanlock.store.types import UTCDateTime, utcnow

NAME = "acme_accounts"
FIRST_REVISION = "0003"  # the cloud's migration "ACME account of the cloud"


def define(metadata: MetaData) -> Table:
    """The table, on ``metadata``: the cloud's models and the DNS's reader each have their own."""
    return Table(
        NAME,
        metadata,
        Column("directory_url", String(500), primary_key=True),
        Column("key_encrypted", LargeBinary, nullable=False),
        Column("account_uri", String(500), nullable=True),
        Column("created_at", UTCDateTime, default=utcnow, nullable=False),
    )
