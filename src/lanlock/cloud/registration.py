"""Binding a box to a subscription, one quota slot each, under a lock every replica respects."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update

from lanlock import errors, names, pki
from lanlock.cloud import limits
from lanlock.cloud.eligibility import box_quota
from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.models import Box, Certificate, Subscription
from lanlock.cloud.refusals import Refused
from lanlock.store import Store


def register(store: Store, request: SignedRequest, source: str) -> tuple[Box, bool]:
    """Bind the box to the subscription, taking a slot; return (box, whether it is new)."""
    with store.transaction() as session:
        # The lock serialises registrations per subscription across replicas (PostgreSQL row
        # lock; on SQLite the transaction already holds the write lock): the count below
        # cannot be overtaken by a concurrent registration.
        subscription = session.execute(
            select(Subscription)
            .where(Subscription.code == request.enterprise_code)
            .with_for_update()
        ).scalar_one()
        box = session.get(Box, request.box_id, populate_existing=True)
        if box is not None and box.subscription_code == subscription.code:
            return box, False  # a concurrent request of the same box registered it
        used = session.scalar(
            select(func.count())
            .select_from(Box)
            .where(Box.subscription_code == subscription.code, Box.state == "active")
        )
        if (used or 0) >= box_quota(session, subscription.code):
            raise Refused(errors.BOX_QUOTA_EXCEEDED)
        is_new = box is None
        if box is None:
            box = Box(
                box_id=request.box_id,
                device_key_der=pki.public_key_der(request.device_key),
                scope=names.new_scope(),
            )
            session.add(box)
        box.database_uuid = request.db_uuid
        box.subscription_code = subscription.code
        box.last_address = request.address
        box.source_network = limits.network_of(source)
        session.flush()
        return box, is_new


def unregister(store: Store, box_id: str) -> None:
    """Give back the slot of a box whose first issuance failed: a refusal takes none."""
    with store.transaction() as session:
        session.execute(delete(Certificate).where(Certificate.box_id == box_id))
        session.execute(delete(Box).where(Box.box_id == box_id))


# When and from where a box last asked (its network is one its database works from): a Core
# statement, for a session or a connection alike.
SEEN = update(Box.__table__).where(Box.__table__.c.box_id == bindparam("seen_box_id"))


def seen_values(box_id: str, request: SignedRequest | None, source: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "seen_box_id": box_id,
        "last_seen_at": dt.datetime.now(dt.UTC),
        "source_network": limits.network_of(source),
    }
    if request and request.address:
        values["last_address"] = request.address
    return values
