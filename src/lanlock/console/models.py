"""The console's own store (docs/design.md §11): its record, its paired boxes, pairing links,
sessions.

Alembic migrations (``migrations/versions``) create these tables; a change here needs a new
migration, and ``tests/console/test_store.py`` checks that the two agree. Every table and the
migration version table carry a ``console_`` prefix, so that a console may share a PostgreSQL
database with anything else (even the cloud's store) without a clash.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lanlock.store import Schema, Store
from lanlock.store.types import UTCDateTime

VERSION_TABLE = "console_alembic_version"
SCHEMA = Schema(migrations=Path(__file__).with_name("migrations"), version_table=VERSION_TABLE)
THE_CONSOLE = 1  # the one row of console_settings: one console (database) per store


def console_store(url: str, pool_size: int = 10) -> Store:
    """A store holding (or about to hold, once migrated) the console's tables."""
    return Store(url, SCHEMA, pool_size=pool_size)


class Base(DeclarativeBase):
    pass


class ConsoleRecord(Base):
    """The database's identity and the admin's settings; made at the console's first start."""

    __tablename__ = "console_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    db_uuid: Mapped[str] = mapped_column(String(36))
    enterprise_code: Mapped[str | None] = mapped_column(String(128))
    cloud_url: Mapped[str | None] = mapped_column(String(300))
    # Recorded by `serve`, so that `lanlock console pair` prints links boxes can reach.
    public_url: Mapped[str | None] = mapped_column(String(300))
    password_hash: Mapped[str] = mapped_column(String(200))
    form_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class PairedBox(Base):
    """A box paired with this console: its device key, its shared token and its last report."""

    __tablename__ = "console_boxes"

    box_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The public device key (DER) that signed the pairing; None for a box paired before pairing
    # was signed, until it pairs again.
    device_key_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    name: Mapped[str] = mapped_column(String(200))
    token: Mapped[str] = mapped_column(String(64))  # hex; the console signs links with it
    address: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(64))
    not_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # With not_after, the certificate's lifetime, which the early warning measures (c0003);
    # None for a box that does not send it (an older box).
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Every https origin the box reported, one per LAN address, ``url`` first (c0003); None for
    # rows of an older box, whose ``url`` is then its only one.
    urls: Mapped[list[str] | None] = mapped_column(JSON())
    version: Mapped[str | None] = mapped_column(String(64))
    paired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The box's own clock (X-Lanlock-Time) of the newest report applied: an older or replayed
    # report never overwrites a newer one.
    reported_at: Mapped[int | None] = mapped_column(BigInteger())
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class PairingCode(Base):
    """A one-time pairing link; only the SHA-256 of its code is kept."""

    __tablename__ = "console_pairing_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))  # given by the admin, for the box
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    used_by: Mapped[str | None] = mapped_column(String(64))


class LoginSession(Base):
    """An admin's login; the cookie holds the secret, the store only its SHA-256."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
