"""The cloud's tables as SQLAlchemy 2 models, and the cloud's schema (its Alembic migrations).

Alembic migrations (``migrations/versions``) create these tables; a change here needs a new
migration, and ``tests/store/test_store.py`` checks that the two agree. Revision ids are
zero-padded numbers in order ("0001", "0002", …): the DNS compares them to the one it needs
(:mod:`lanlock.challenge_table`, :mod:`lanlock.account_table`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lanlock import account_table, challenge_table
from lanlock.store import Schema, Store
from lanlock.store.types import UTCDateTime, utcnow

SCHEMA = Schema(migrations=Path(__file__).with_name("migrations"))

DATABASE_KINDS = ("production", "staging", "development", "duplicate")
SUBSCRIPTION_STATES = ("in_progress", "draft", "paused", "closed")
BOX_STATES = ("active", "revoked")
IOT_BOX_PRODUCT = "iot_box"


def cloud_store(url: str, pool_size: int = 10) -> Store:
    """A store holding (or about to hold, once migrated) the cloud's tables."""
    return Store(url, SCHEMA, pool_size=pool_size)


class Base(DeclarativeBase):
    pass


class Database(Base):
    """A customer's ERP database, known to the vendor by its UUID."""

    __tablename__ = "databases"
    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="production")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Subscription(Base):
    """A contract of a database; its ``code`` is the secret a box presents."""

    __tablename__ = "subscriptions"
    code: Mapped[str] = mapped_column(String(128), primary_key=True)
    database_uuid: Mapped[str] = mapped_column(ForeignKey("databases.uuid"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="in_progress")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Counts kept with every change, so that no request counts rows (migration 0010): its
    # active boxes (the quota's slots taken: lanlock.cloud.registration), and its certificates
    # over two periods of at least the issuance window, which bound the window's count from
    # above (lanlock.cloud.throttle).
    active_boxes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    issued_period_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the last period began; None: with the beginning (nothing was counted before it).
    issued_last_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    issued_this_period: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    issued_last_period: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SubscriptionLine(Base):
    """A product line of a subscription; the IoT box lines' quantities are the box quota."""

    __tablename__ = "subscription_lines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_code: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.code", ondelete="CASCADE"), index=True
    )
    product: Mapped[str] = mapped_column(String(32), default=IOT_BOX_PRODUCT)
    quantity: Mapped[int] = mapped_column(Integer, default=1)


class Box(Base):
    """A device, known by its ``box_id`` (derived from its device key) and bound to one scope."""

    __tablename__ = "boxes"
    box_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    device_key_der: Mapped[bytes] = mapped_column(LargeBinary)
    scope: Mapped[str] = mapped_column(String(16), unique=True)
    database_uuid: Mapped[str] = mapped_column(ForeignKey("databases.uuid"))
    subscription_code: Mapped[str] = mapped_column(ForeignKey("subscriptions.code"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    last_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The network (/24 or /56) its requests come from: where the database's boxes work, which
    # a database under guessing attack still takes new boxes from.
    source_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # Also the database's boxes (its first column): no index of that column alone.
        Index("ix_boxes_database_network", "database_uuid", "source_network"),
    )


class Certificate(Base):
    """A certificate issued for a scope; kept so that a repeated request can reuse it."""

    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    box_id: Mapped[str] = mapped_column(ForeignKey("boxes.box_id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(16))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(48))
    issuer: Mapped[str] = mapped_column(String(16))
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    x509_pem: Mapped[str] = mapped_column(Text)
    chain_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the CA's renewal information (ACME ARI) says to renew; None: at 2/3 of the lifetime.
    renew_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The subscription it was issued under: the subscription's issuance budget counts by it.
    subscription_code: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # When to ask the CA's renewal information again (its Retry-After); None: never (no ARI).
    ari_next_check: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The SHA-256 of the CSR's DER it was issued for, checked then: the same bytes again need no
    # second check (lanlock.pki.build_csr signs deterministically). None: issued before 0011.
    csr_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_certificates_scope_key", "scope", "key_fingerprint"),
        Index("ix_certificates_ari_next_check", "ari_next_check"),
        # the issuance budget, per box and per subscription
        Index("ix_certificates_box_created", "box_id", "created_at"),
        Index("ix_certificates_subscription_created", "subscription_code", "created_at"),
    )


class SeenNonce(Base):
    """Nonces of verified requests, kept past the ``iat`` window so that a replay is refused."""

    __tablename__ = "seen_nonces"
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class AuthorityRecord(Base):
    """The embedded CA; its private keys are encrypted with the cloud's secret key."""

    __tablename__ = "certificate_authorities"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    zone: Mapped[str] = mapped_column(String(253))
    root_pem: Mapped[str] = mapped_column(Text)
    intermediate_pem: Mapped[str] = mapped_column(Text)
    root_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    intermediate_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class IssuanceLease(Base):
    """Who is issuing for a scope right now, across every cloud replica (expires by itself)."""

    __tablename__ = "issuance_leases"
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """One line per x509 request that got past parsing: issued, reused, refused or rejected."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    box_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    database_uuid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class FailureCount(Base):
    """Failed credential attempts under one key (a network, a database) in the current window.

    In the store so that every replica counts the same; a row per key that failed lately, swept
    once its window is over.
    """

    __tablename__ = "failure_counts"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer)


class ChallengeRecord(Base):
    """A DNS-01 TXT value the cloud publishes for the DNS to answer (docs/design.md §7); the
    table is the one contract between the two roles' code, defined in
    :mod:`lanlock.challenge_table`."""

    __table__ = challenge_table.define(Base.metadata)


class AcmeAccount(Base):
    """The cloud's one account at an ACME CA; its key is encrypted with the cloud's secret key.
    The DNS binds the zone's CAA records to its ``account_uri`` (docs/design.md §7): the table is
    the second contract between the two roles' code, defined in :mod:`lanlock.account_table`."""

    __table__ = account_table.define(Base.metadata)
    # Typing only: the columns are the contract's.
    directory_url: Mapped[str]
    key_encrypted: Mapped[bytes]
    account_uri: Mapped[str | None]
    created_at: Mapped[dt.datetime]


class CABucket(Base):
    """One of the ACME CA's rate limits as the cloud spends it (:mod:`lanlock.cloud.ca_budget`):
    ``full_at`` is when the bucket is full again (a past time or no row: full); ``blocked_until``
    is a time the CA itself named in a ``rateLimited`` answer, before which nothing is ordered."""

    __tablename__ = "ca_buckets"
    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    full_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
