"""Whether a verified request may have a certificate, checked in the documented order.

docs/design.md §5's order: credentials (the database and one of its subscriptions' codes), the
database's kind, the subscription's state, its IoT box lines, the box's own state. The first
check that fails is the refusal the box shows, so the order is the contract. Before any of them,
an unregistered key meets the failure limits (:mod:`lanlock.cloud.limits`); a wrong code counts
as a failure for its network and its database.

Each decision is one statement of SQLAlchemy Core, built once: the box (read by the express lane,
:data:`lanlock.cloud.express.BOX_ROW`, with its database, subscription and quota), the failure
counts when the key is not registered to the database, and the database with its
subscriptions when the box's own row cannot answer (a new box, another database or code).
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, ScalarSelect, Select, bindparam, func, literal, select
from sqlalchemy.orm import Session

from lanlock import errors
from lanlock.cloud import limits
from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.models import (
    IOT_BOX_PRODUCT,
    Database,
    FailureCount,
    Subscription,
    SubscriptionLine,
)
from lanlock.cloud.refusals import Limited, Refused
from lanlock.store.prepared import Prepared

if TYPE_CHECKING:
    from lanlock.cloud.registration import RegisteredBox

databases, subscriptions = Database.__table__, Subscription.__table__
lines, failure_counts = SubscriptionLine.__table__, FailureCount.__table__


def quota_of(code: Any) -> Select[tuple[int]]:
    """How many boxes the IoT box lines of the subscription ``code`` allow (a bound parameter,
    or a column the statement around it correlates to)."""
    return select(func.coalesce(func.sum(lines.c.quantity), 0)).where(
        lines.c.subscription_code == code, lines.c.product == IOT_BOX_PRODUCT
    )


# Built once: Core keeps its compiled form.
QUOTA = quota_of(bindparam("code"))


def _over_limit_since(key: str) -> ScalarSelect[dt.datetime]:
    """When the window of the failure count under the key ``key`` names began, if that count
    is over its limit (NULL otherwise)."""
    return (
        select(failure_counts.c.window_start)
        .where(
            failure_counts.c.key == bindparam(key),
            failure_counts.c.failures >= bindparam("limit"),
            failure_counts.c.window_start > bindparam("since"),
        )
        .scalar_subquery()
    )


# One round trip for everything a request that its box's own row cannot answer needs: the
# failure counts of its network and database when over their limits, its database's kind, and
# each of the database's subscriptions with its quota. A row per subscription; one row with a
# NULL code when the database has none, and with a NULL kind too when it is unknown.
_ANCHOR = select(literal(1).label("one")).subquery("anchor")
CREDENTIALS = Prepared(
    select(
        _over_limit_since("network_key").label("network_over_since"),
        _over_limit_since("database_key").label("database_over_since"),
        databases.c.kind,
        subscriptions.c.code,
        subscriptions.c.state,
        quota_of(subscriptions.c.code).scalar_subquery().label("quota"),
    ).select_from(
        _ANCHOR.outerjoin(databases, databases.c.uuid == bindparam("db_uuid")).outerjoin(
            subscriptions, subscriptions.c.database_uuid == databases.c.uuid
        )
    )
)


def check(
    conn: Connection,
    request: SignedRequest,
    row: Any | None,
    box: RegisteredBox | None,
    network: str,
    failures: limits.FailureCounts,
    now: dt.datetime,
) -> int:
    """The subscription's quota once every check passes, or Refused / Limited.

    ``row`` is the box's row as the express lane reads it (:data:`express.BOX_ROW`: the box
    with its database's kind, its subscription's state and quota), ``box`` the same box (None
    for both when it is not registered). A box asking under the database and code it is
    registered to is answered from that row alone; any other request reads its database.
    """
    if (
        row is not None
        and row.database_uuid == request.db_uuid
        and row.kind is not None
        and row.subscription_state is not None
        and hmac.compare_digest(row.subscription_code.encode(), request.enterprise_code.encode())
    ):
        kind, state, quota = row.kind, row.subscription_state, int(row.quota)
    else:
        subscription = _credentials(conn, request, box, network, failures, now)
        kind, state, quota = subscription.kind, subscription.state, int(subscription.quota)
    if kind != "production":
        raise Refused(errors.DATABASE_NOT_PRODUCTION, f"database kind {kind}")
    if state != "in_progress":
        raise Refused(errors.SUBSCRIPTION_NOT_IN_PROGRESS, f"subscription state {state}")
    if quota <= 0:
        raise Refused(errors.NO_IOT_BOX_LINE)
    if box is not None and box.state == "revoked":
        raise Refused(errors.BOX_REVOKED)
    return quota


def _credentials(
    conn: Connection,
    request: SignedRequest,
    box: RegisteredBox | None,
    network: str,
    failures: limits.FailureCounts,
    now: dt.datetime,
) -> Any:
    """The failure limits (for a key not registered to the database), then the database's
    subscription with the request's code: its row of :data:`CREDENTIALS`, or Refused."""
    network_key, database_key = limits.network_key(network), limits.database_key(request.db_uuid)
    values = {
        "db_uuid": request.db_uuid,
        "network_key": network_key,
        "database_key": database_key,
        "limit": failures.limit,
        "since": now - failures.window,
    }
    found = CREDENTIALS.all(conn, values)
    # A registered box proves itself with its device key: nobody's failures limit it.
    if box is None or box.database_uuid != request.db_uuid:
        first = found[0]  # the anchor's row is there whatever the database
        over = {network_key: first.network_over_since, database_key: first.database_over_since}
        check_limits(conn, failures, request.db_uuid, network, now, over)
    subscription = _matching(found, request.enterprise_code)
    if subscription is None:
        with Session(bind=conn) as session:  # joins conn's transaction, leaves it open
            failures.record(session, [network_key, database_key], now)
        raise Refused(errors.INVALID_CREDENTIALS)
    return subscription


def _matching(rows: list[Any], code: str) -> Any | None:
    """The row of the subscription with this code, compared in constant time with each."""
    supplied = code.encode()
    found = None
    for row in rows:
        if row.code is not None and hmac.compare_digest(row.code.encode(), supplied):
            found = row
    return found


def check_limits(
    conn: Connection,
    failures: limits.FailureCounts,
    db_uuid: str,
    network: str,
    now: dt.datetime,
    over: dict[str, dt.datetime | None],
) -> None:
    """429 for a network over its failures, and for a new box of a guarded database unless
    it comes from a network where that database's boxes work (see :mod:`limits`). ``over``:
    when the count under each key began its window, if it is over its limit (else None), as
    :data:`CREDENTIALS` reads them."""
    network_key, database_key = limits.network_key(network), limits.database_key(db_uuid)
    retry = {
        key: failures.seconds_left(started, now)
        for key, started in over.items()
        if started is not None
    }
    if network_retry := retry.get(network_key):
        raise Limited(network_retry)
    database_retry = retry.get(database_key)
    if database_retry and not limits.database_works_from(conn, db_uuid, network):  # type: ignore[arg-type]
        raise Limited(database_retry)


def box_quota(session: Session | Connection, subscription_code: str) -> int:
    """How many boxes the subscription's IoT box lines allow."""
    return int(session.scalar(QUOTA, {"code": subscription_code}) or 0)
