"""Whether a verified request may have a certificate, checked in the documented order.

docs/design.md §5's order: credentials (the database and one of its subscriptions' codes), the
database's kind, the subscription's state, its IoT box lines, the box's own state. The first
check that fails is the refusal the box shows, so the order is the contract. Before any of them,
an unregistered key meets the failure limits (:mod:`lanlock.cloud.limits`); a wrong code counts
as a failure for its network and its database.
"""

from __future__ import annotations

import datetime as dt
import hmac

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from lanlock import errors
from lanlock.cloud import limits
from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.models import IOT_BOX_PRODUCT, Box, Database, Subscription, SubscriptionLine
from lanlock.cloud.refusals import Limited, Refused


def check_credentials(
    session: Session, request: SignedRequest, source: str, failures: limits.FailureCounts
) -> Box | None:
    """The box as registered (None if new), or Refused / Limited."""
    box = session.get(Box, request.box_id)
    network = limits.network_of(source)
    now = dt.datetime.now(dt.UTC)
    # A registered box proves itself with its device key: nobody's failures limit it.
    if box is None or box.database_uuid != request.db_uuid:
        check_limits(session, failures, request.db_uuid, network, now)
    database = session.get(Database, request.db_uuid)
    subscription = matching_subscription(session, request)
    if database is None or subscription is None:
        keys = [limits.network_key(network), limits.database_key(request.db_uuid)]
        failures.record(session, keys, now)
        raise Refused(errors.INVALID_CREDENTIALS)
    if database.kind != "production":
        raise Refused(errors.DATABASE_NOT_PRODUCTION, f"database kind {database.kind}")
    if subscription.state != "in_progress":
        raise Refused(
            errors.SUBSCRIPTION_NOT_IN_PROGRESS, f"subscription state {subscription.state}"
        )
    if box_quota(session, subscription.code) <= 0:
        raise Refused(errors.NO_IOT_BOX_LINE)
    if box is not None and box.state == "revoked":
        raise Refused(errors.BOX_REVOKED)
    return box


def check_limits(
    session: Session,
    failures: limits.FailureCounts,
    db_uuid: str,
    network: str,
    now: dt.datetime,
) -> None:
    """429 for a network over its failures, and for a new box of a guarded database unless
    it comes from a network where that database's boxes work (see :mod:`limits`)."""
    over = failures.retry_after(
        session, [limits.network_key(network), limits.database_key(db_uuid)], now
    )
    if retry := over.get(limits.network_key(network)):
        raise Limited(retry)
    retry = over.get(limits.database_key(db_uuid))
    if retry and not limits.database_works_from(session, db_uuid, network):
        raise Limited(retry)


def matching_subscription(session: Session, request: SignedRequest) -> Subscription | None:
    """The database's subscription with this code, compared in constant time."""
    candidates = session.scalars(
        select(Subscription).where(Subscription.database_uuid == request.db_uuid)
    ).all()
    supplied = request.enterprise_code.encode()
    found = None
    for candidate in candidates:
        if hmac.compare_digest(candidate.code.encode(), supplied):
            found = candidate
    return found


# Built once (asked up to three times per new box): Core keeps its compiled form.
QUOTA = select(func.coalesce(func.sum(SubscriptionLine.quantity), 0)).where(
    SubscriptionLine.subscription_code == bindparam("code"),
    SubscriptionLine.product == IOT_BOX_PRODUCT,
)


def box_quota(session: Session, subscription_code: str) -> int:
    """How many boxes the subscription's IoT box lines allow."""
    return int(session.scalar(QUOTA, {"code": subscription_code}) or 0)
