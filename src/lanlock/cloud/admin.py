"""Operator actions on the store: databases, subscriptions, boxes (the admin command line).

Each function validates its input, changes the store in one transaction, and returns plain data
for printing; a problem the operator can fix raises AdminError with the fix in its message.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from lanlock.cloud import registration
from lanlock.cloud.models import (
    BOX_STATES,
    DATABASE_KINDS,
    IOT_BOX_PRODUCT,
    SUBSCRIPTION_STATES,
    Box,
    Certificate,
    Database,
    Subscription,
    SubscriptionLine,
)
from lanlock.masking import masked_code
from lanlock.store import Store

HIDDEN = "…"  # codes are secrets: listings show them as …1234


class AdminError(ValueError):
    """An admin request that cannot be done as asked; the message says what to do instead."""


def add_database(
    store: Store, uuid: str, name: str = "", kind: str = "production"
) -> dict[str, Any]:
    uuid = _checked_text("database UUID", uuid, 64)
    _checked_choice("kind", kind, DATABASE_KINDS)
    with store.transaction() as session:
        if session.get(Database, uuid) is not None:
            raise AdminError(
                f"database {uuid} already exists; `lanlock cloud database list` shows it"
            )
        session.add(Database(uuid=uuid, name=name, kind=kind))
    return {"uuid": uuid, "name": name, "kind": kind}


def list_databases(store: Store) -> list[dict[str, Any]]:
    with store.transaction() as session:
        rows = session.scalars(select(Database).order_by(Database.created_at)).all()
        return [
            {
                "uuid": d.uuid,
                "name": d.name,
                "kind": d.kind,
                "created_at": d.created_at.isoformat(),
                "subscriptions": _subscriptions_of(session, d.uuid),
            }
            for d in rows
        ]


def _subscriptions_of(session: Any, uuid: str) -> list[dict[str, Any]]:
    # Codes are secrets: a listing names them only by their last four characters.
    subs = session.scalars(select(Subscription).where(Subscription.database_uuid == uuid)).all()
    return [
        {
            "code": masked_code(s.code, HIDDEN),
            "state": s.state,
            "iot_boxes": _iot_boxes(session, s.code),
        }
        for s in subs
    ]


def add_subscription(
    store: Store, code: str, database: str, state: str = "in_progress", iot_boxes: int = 0
) -> dict[str, Any]:
    code = _checked_text("subscription code", code, 128)
    _checked_choice("state", state, SUBSCRIPTION_STATES)
    _checked_quantity(iot_boxes)
    with store.transaction() as session:
        if session.get(Database, database) is None:
            raise AdminError(
                f"database {database} does not exist; add it with "
                "`lanlock cloud database add UUID` first"
            )
        if session.get(Subscription, code) is not None:
            raise AdminError(
                "a subscription with this code already exists; use "
                "`lanlock cloud subscription set CODE` to change it"
            )
        session.add(Subscription(code=code, database_uuid=database, state=state))
        session.flush()
        _set_iot_boxes(session, code, iot_boxes)
    return {
        "code": masked_code(code, HIDDEN),
        "database": database,
        "state": state,
        "iot_boxes": iot_boxes,
    }


def set_subscription(
    store: Store, code: str, state: str | None = None, iot_boxes: int | None = None
) -> dict[str, Any]:
    if state is not None:
        _checked_choice("state", state, SUBSCRIPTION_STATES)
    if iot_boxes is not None:
        _checked_quantity(iot_boxes)
    with store.transaction() as session:
        subscription = session.get(Subscription, code)
        if subscription is None:
            raise AdminError(
                "no subscription has this code; `lanlock cloud database list` shows "
                "the subscriptions of each database"
            )
        if state is not None:
            subscription.state = state
        if iot_boxes is not None:
            _set_iot_boxes(session, code, iot_boxes)
        return {
            "code": masked_code(code, HIDDEN),
            "database": subscription.database_uuid,
            "state": subscription.state,
            "iot_boxes": _iot_boxes(session, code),
        }


def _set_iot_boxes(session: Any, code: str, quantity: int) -> None:
    """One IoT box line of ``quantity`` (none when 0), replacing the subscription's others."""
    session.execute(
        delete(SubscriptionLine).where(
            SubscriptionLine.subscription_code == code, SubscriptionLine.product == IOT_BOX_PRODUCT
        )
    )
    if quantity > 0:
        session.add(
            SubscriptionLine(subscription_code=code, product=IOT_BOX_PRODUCT, quantity=quantity)
        )


def _iot_boxes(session: Any, code: str) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(SubscriptionLine.quantity), 0)).where(
                SubscriptionLine.subscription_code == code,
                SubscriptionLine.product == IOT_BOX_PRODUCT,
            )
        )
        or 0
    )


def list_boxes(store: Store) -> list[dict[str, Any]]:
    with store.transaction() as session:
        boxes = session.scalars(select(Box).order_by(Box.created_at)).all()
        newest = dict(
            session.execute(
                select(Certificate.box_id, func.max(Certificate.not_after)).group_by(
                    Certificate.box_id
                )
            ).all()
        )
        return [
            {
                "box_id": b.box_id,
                "scope": b.scope,
                "database": b.database_uuid,
                "state": b.state,
                "last_address": b.last_address,
                "last_seen_at": b.last_seen_at.isoformat(),
                "certificate_not_after": newest[b.box_id].isoformat()
                if b.box_id in newest
                else None,
            }
            for b in boxes
        ]


def set_box_state(store: Store, box_id: str, state: str) -> dict[str, Any]:
    _checked_choice("state", state, BOX_STATES)
    with store.transaction() as session:
        # Locked (PostgreSQL): two changes at once would both see the old state and both count.
        box = session.get(Box, box_id, with_for_update=True)
        if box is None:
            raise AdminError(f"no box has id {box_id}; `lanlock cloud box list` shows them")
        if box.state != state and "active" in (box.state, state):
            change = 1 if state == "active" else -1
            registration.ACTIVE_BOXES.run(
                session, {"counted_code": box.subscription_code, "change": change}
            )
        box.state = state
        return {"box_id": box.box_id, "scope": box.scope, "state": box.state}


def _checked_text(what: str, value: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise AdminError(f"{what} must be 1 to {limit} printable characters")
    return value


def _checked_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdminError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


def _checked_quantity(quantity: int) -> None:
    if quantity < 0:
        raise AdminError("--iot-boxes must be 0 or more")
