"""Binding a box to a subscription, one quota slot each, under a lock every replica respects.

:func:`register_in` works in the caller's transaction (the x509 request's first look: the nonce,
eligibility and registration are one transaction, so that a new box costs one commit there), in
SQLAlchemy Core with statements built once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from lanlock import errors, names, pki
from lanlock.cloud import limits
from lanlock.cloud.eligibility import QUOTA
from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.models import Box, Certificate, Subscription
from lanlock.cloud.refusals import Refused
from lanlock.store import Store
from lanlock.store.prepared import Prepared

boxes, subscriptions = Box.__table__, Subscription.__table__


@dataclass(frozen=True)
class RegisteredBox:
    """A box as the store has it registered: what the rest of the request needs of it."""

    box_id: str
    scope: str
    database_uuid: str
    subscription_code: str
    state: str = "active"
    source_network: str | None = None

    @classmethod
    def of(cls, box_id: str, row: Any) -> RegisteredBox:
        """From a row with the box's ``scope``, ``database_uuid``, ``subscription_code``,
        ``state`` and ``source_network``."""
        return cls(
            box_id,
            row.scope,
            row.database_uuid,
            row.subscription_code,
            row.state,
            row.source_network,
        )


# Built once, like every statement of the request path: a statement object keeps its compiled
# form, so each execution skips building and keying it again.
#
# The box as it is now, its row locked on PostgreSQL (SQLite's write lock covers it already): a
# revocation or a move committed since the request first read it changes what its slot counts
# against.
BOX_NOW = (
    select(
        boxes.c.scope,
        boxes.c.database_uuid,
        boxes.c.subscription_code,
        boxes.c.state,
        boxes.c.source_network,
    )
    .where(boxes.c.box_id == bindparam("box_id"))
    .with_for_update()
)
# PostgreSQL's row lock on the subscription: registrations of one subscription queue here across
# replicas. (SQLite has no row locks: its transactions begin IMMEDIATE and hold the database's
# write lock from their first statement, which serialises them already; the statement is not
# sent there.)
LOCK = (
    select(subscriptions.c.code).where(subscriptions.c.code == bindparam("code")).with_for_update()
)
# Read after the lock, in a statement of its own (PostgreSQL gives each statement a fresh
# snapshot: one taken before the lock was granted could miss a registration committed while it
# waited): the slots taken and allowed, and whom the box is registered to now. The slots taken
# are the subscription's count of active boxes, kept by every change of a box's subscription or
# state (:data:`ACTIVE_BOXES`): counting the boxes read one index entry per box.
SLOTS = Prepared(
    select(
        select(subscriptions.c.active_boxes)
        .where(subscriptions.c.code == bindparam("code"))
        .scalar_subquery()
        .label("used"),
        QUOTA.scalar_subquery().label("quota"),
        select(boxes.c.subscription_code)
        .where(boxes.c.box_id == bindparam("box_id"))
        .scalar_subquery()
        .label("registered_to"),
    )
)
ADD = Prepared(insert(boxes))
MOVE = update(boxes).where(boxes.c.box_id == bindparam("moved_box_id"))
# A subscription's active boxes, one more or one less: in the transaction that registers, moves,
# revokes or removes the box (and so, on PostgreSQL, under the subscription row's lock).
ACTIVE_BOXES = Prepared(
    update(subscriptions)
    .where(subscriptions.c.code == bindparam("counted_code"))
    .values(active_boxes=subscriptions.c.active_boxes + bindparam("change"))
)


@dataclass(frozen=True)
class Slot:
    """A registration's outcome: the box, whether this request registered it new, and the
    subscription's quota as counted under the lock."""

    box: RegisteredBox
    is_new: bool
    quota: int


def register_in(
    conn: Connection,
    request: SignedRequest,
    network: str,
    known: RegisteredBox | None,
    locks_rows: bool,
) -> Slot:
    """Bind the box to the request's subscription in ``conn``'s transaction, taking a slot, or
    Refused(box_quota_exceeded). ``known`` is the box as this transaction read it before (None:
    not registered); ``locks_rows``: the store has row locks (PostgreSQL) and the subscription's
    row is locked first."""
    code = request.enterprise_code
    if locks_rows:
        conn.execute(LOCK, {"code": code}).one()
    slots = SLOTS.first(conn, {"code": code, "box_id": request.box_id})
    if known is not None or slots.registered_to is not None:
        # A registered box (or one registered by a concurrent request of its own while we
        # waited): as it is now, locked, so that its slot moves from where it really is.
        row = conn.execute(BOX_NOW, {"box_id": request.box_id}).first()
        known = RegisteredBox.of(request.box_id, row) if row is not None else None
    quota = int(slots.quota or 0)
    if known is not None and known.subscription_code == code:
        return Slot(known, False, quota)  # a concurrent request of the same box registered it
    if (slots.used or 0) >= quota:
        raise Refused(errors.BOX_QUOTA_EXCEEDED)
    if known is None:
        box = RegisteredBox(
            request.box_id, names.new_scope(), request.db_uuid, code, "active", network
        )
        now = dt.datetime.now(dt.UTC)
        ADD.run(
            conn,
            {
                "box_id": box.box_id,
                "device_key_der": pki.public_key_der(request.device_key),
                "scope": box.scope,
                "database_uuid": box.database_uuid,
                "subscription_code": code,
                "state": box.state,
                "last_address": request.address,
                "source_network": network,
                "created_at": now,
                "last_seen_at": now,
            },
        )
        ACTIVE_BOXES.run(conn, {"counted_code": code, "change": 1})
        return Slot(box, True, quota)
    # A registered box that presents another subscription's code moves to it, keeping its scope.
    conn.execute(
        MOVE,
        {
            "moved_box_id": known.box_id,
            "database_uuid": request.db_uuid,
            "subscription_code": code,
            "last_address": request.address,
            "source_network": network,
        },
    )
    if known.state == "active":  # its slot moves with it (the old subscription's row unlocked:
        # two boxes moving at once in opposite directions can deadlock, and PostgreSQL then
        # fails one, which the box is told to retry)
        ACTIVE_BOXES.run(conn, {"counted_code": known.subscription_code, "change": -1})
        ACTIVE_BOXES.run(conn, {"counted_code": code, "change": 1})
    moved = replace(
        known, database_uuid=request.db_uuid, subscription_code=code, source_network=network
    )
    return Slot(moved, False, quota)


def unregister(store: Store, box_id: str) -> None:
    """Give back the slot of a box whose first issuance failed: a refusal takes none."""
    with store.transaction() as session:
        unregister_in(session, box_id)


def unregister_in(session: Session | Connection, box_id: str) -> None:
    row = session.execute(BOX_NOW, {"box_id": box_id}).first()
    if row is not None and row.state == "active":  # a revoked box was not counted
        ACTIVE_BOXES.run(session, {"counted_code": row.subscription_code, "change": -1})
    session.execute(UNREGISTER_CERTIFICATES, {"gone_box_id": box_id})
    session.execute(UNREGISTER_BOX, {"gone_box_id": box_id})


UNREGISTER_CERTIFICATES = delete(Certificate.__table__).where(
    Certificate.__table__.c.box_id == bindparam("gone_box_id")
)
UNREGISTER_BOX = delete(boxes).where(boxes.c.box_id == bindparam("gone_box_id"))

# When and from where a box last asked (its network is one its database works from): a Core
# statement, for a session or a connection alike.
SEEN = Prepared(update(boxes).where(boxes.c.box_id == bindparam("seen_box_id")))


def seen_values(
    box_id: str, request: SignedRequest | None, source: str, network: str | None = None
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "seen_box_id": box_id,
        "last_seen_at": dt.datetime.now(dt.UTC),
        "source_network": network or limits.network_of(source),
    }
    if request and request.address:
        values["last_address"] = request.address
    return values
