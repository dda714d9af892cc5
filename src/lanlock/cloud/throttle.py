"""How many new certificates one box and one subscription may get in a window.

A box that makes a new key at every start (a bug, a wiped disk, an attacker's loop) gets a new
certificate each time, and with an ACME CA each of them spends the CA's rate limits, which the
whole fleet shares (a public CA allows a registered domain about 50 new certificates a week). So
new certificates are counted, per box and per subscription, over a window; handing out one the
cloud already has (the reuse rule) is free and never counted.

The defaults are far above normal life: a box renews once per certificate lifetime (every few
days with 6-day certificates) and re-keys after a reset, so five a day per box, and per
subscription three times its number of boxes a day (a whole fleet re-keying at once after an
update still fits).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from lanlock.cloud.models import Certificate, Subscription
from lanlock.store.prepared import Prepared


@dataclass(frozen=True)
class IssuanceBudget:
    per_box: int = 5
    per_box_slot: int = 3  # a subscription's budget: this many for each box it may have
    window: float = 24 * 3600.0


class IssuanceLimited(Exception):
    """Over budget: answered 429 with ``Retry-After`` and the code ``issuance_limited``."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


certificates = Certificate.__table__
# Built once: asked for every new certificate (Core keeps a statement's compiled form).
PER_BOX = select(func.count(), func.min(certificates.c.created_at)).where(
    certificates.c.box_id == bindparam("box_id"),
    certificates.c.created_at > bindparam("since"),
)
PER_SUBSCRIPTION = select(func.count(), func.min(certificates.c.created_at)).where(
    certificates.c.subscription_code == bindparam("code"),
    certificates.c.created_at > bindparam("since"),
)

# A subscription's certificates are also counted as they are issued (:func:`count_issued`), in
# its row, per period: a period lasts at least the window and begins with the first certificate
# after the last one ended. The window ending now lies within this period and the one before it
# (when that one began before the window: a window made longer since may reach further back), so
# their two counts together are never below the window's. Only a subscription whose bound
# reaches its budget is counted exactly (PER_SUBSCRIPTION reads one index entry per certificate
# of the window: a fleet of 10,000 boxes read 10,000 at each new one).
subscriptions = Subscription.__table__
ISSUED_BOUND = Prepared(
    select(
        (subscriptions.c.issued_last_period + subscriptions.c.issued_this_period).label("bound"),
        subscriptions.c.issued_last_start,
    ).where(subscriptions.c.code == bindparam("code"))
)
COUNT_IN_PERIOD = Prepared(
    update(subscriptions)
    .where(
        subscriptions.c.code == bindparam("counted_code"),
        subscriptions.c.issued_period_start > bindparam("window_start"),
    )
    .values(issued_this_period=subscriptions.c.issued_this_period + 1)
)
COUNT_IN_NEW_PERIOD = Prepared(
    update(subscriptions)
    .where(
        subscriptions.c.code == bindparam("counted_code"),
        or_(
            subscriptions.c.issued_period_start.is_(None),
            subscriptions.c.issued_period_start <= bindparam("window_start"),
        ),
    )
    .values(
        issued_last_period=subscriptions.c.issued_this_period,
        issued_last_start=subscriptions.c.issued_period_start,
        issued_this_period=1,
        issued_period_start=bindparam("period_start"),
    )
)


class BudgetBox(Protocol):
    box_id: str
    subscription_code: str


def check_budget(
    session: Session | Connection,
    budget: IssuanceBudget,
    box: BudgetBox,
    box_slots: int,
    now: dt.datetime,
    first: bool = False,
) -> None:
    """Raise IssuanceLimited when the box or its subscription has spent its budget.

    ``first``: the box was registered by this very transaction, so it has no certificate yet
    (a certificate's row needs its box's: the foreign key) and its own count is not asked.
    """
    since = now - dt.timedelta(seconds=budget.window)
    hours = budget.window / 3600
    if not first:
        count, oldest = session.execute(PER_BOX, {"box_id": box.box_id, "since": since}).one()
        if count >= budget.per_box:
            raise IssuanceLimited(
                f"this box got {count} new certificates in {hours:g} h, its limit; a box that "
                "keeps its TLS key needs none (is it losing its key at every start?)",
                _seconds_until(oldest, budget, now),
            )
    allowed = budget.per_box_slot * box_slots
    if issued_bound(session, box.subscription_code, since) < allowed:
        return
    count, oldest = session.execute(
        PER_SUBSCRIPTION, {"code": box.subscription_code, "since": since}
    ).one()
    if count >= allowed:
        raise IssuanceLimited(
            f"this subscription's boxes got {count} new certificates in {hours:g} h, its limit "
            f"({budget.per_box_slot} per box it may have)",
            _seconds_until(oldest, budget, now),
        )


def issued_bound(session: Session | Connection, code: str, since: dt.datetime) -> float:
    """At least as many as the subscription ``code``'s certificates issued after ``since``
    (infinite when its kept counts cannot tell: then count them)."""
    row = ISSUED_BOUND.first(session, {"code": code})
    if row is None:
        return math.inf
    last_start = row.issued_last_start
    if last_start is not None and last_start > since:
        return math.inf
    return row.bound


def _seconds_until(oldest: dt.datetime | None, budget: IssuanceBudget, now: dt.datetime) -> int:
    """When the oldest certificate in the window leaves it, freeing one new certificate."""
    if oldest is None:  # a budget of zero: nothing will ever leave the window
        return math.ceil(budget.window)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(1, math.ceil((oldest + dt.timedelta(seconds=budget.window) - now).total_seconds()))


def count_issued(
    session: Session | Connection, budget: IssuanceBudget, code: str, now: dt.datetime
) -> None:
    """One more certificate issued under the subscription ``code``, in the transaction that
    records it (``now`` no earlier than its ``created_at``): in this period while it is younger
    than the window, else in a new period beginning now."""
    window_start = now - dt.timedelta(seconds=budget.window)
    counted = {"counted_code": code, "window_start": window_start}
    if COUNT_IN_PERIOD.run(session, counted):
        return
    # The period is over (or none began): a new one. A transaction that began it first, while
    # this one waited for the row (PostgreSQL re-reads it then), leaves this one to count in it.
    if not COUNT_IN_NEW_PERIOD.run(session, counted | {"period_start": now}):
        COUNT_IN_PERIOD.run(session, counted)
