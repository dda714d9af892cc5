"""The counts a subscription keeps instead of counting rows at each request (migration 0010),
on SQLite and PostgreSQL: its active boxes, which its quota is checked against, and its
certificates per period, which bound its issuance budget's window from above.

If a kept count fell below the rows it stands for, a subscription could take more boxes than its
quota or more certificates than its budget; these tests hold the counts to the rows through
every change of a box (registered, refused, revoked, let back, moved) and hold the bound over any
history of issuance times.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from lanlock import pki
from lanlock.cloud import admin, throttle
from lanlock.cloud.models import Box, Subscription
from lanlock.cloud.throttle import IssuanceBudget
from lanlock.store import Store
from tests.boxes import Customer
from tests.cloud.test_first_look import Device, ask, code_of, service


def kept_and_counted(store: Store, customer: Customer) -> tuple[int, int]:
    """The subscription's kept count of active boxes, and its active boxes counted."""
    with store.transaction() as session:
        kept = session.scalar(
            select(Subscription.active_boxes).where(Subscription.code == customer.code)
        )
        counted = session.scalar(
            select(func.count())
            .select_from(Box)
            .where(Box.subscription_code == customer.code, Box.state == "active")
        )
    return kept, counted


def test_the_kept_count_of_active_boxes_follows_every_change_and_holds_the_quota(store):
    cloud = service(store)
    customer, other = Customer.create(store, iot_boxes=2), Customer.create(store, iot_boxes=2)
    first, second = Device(customer), Device(customer)
    for device in (first, second):
        assert ask(cloud, device.body()).status == 200
    assert kept_and_counted(store, customer) == (2, 2)
    third = Device(customer)
    assert code_of(ask(cloud, third.body())) == "box_quota_exceeded"
    refused = Device(customer)  # registered, then the CA refuses: its slot goes back
    admin.set_box_state(store, second.box_id, "revoked")
    assert kept_and_counted(store, customer) == (1, 1)
    assert code_of(ask(service(store, refuse=True), refused.body())) == "issuance_failed"
    assert kept_and_counted(store, customer) == (1, 1)
    assert ask(cloud, third.body()).status == 200  # the revoked box's slot
    assert kept_and_counted(store, customer) == (2, 2)
    admin.set_box_state(store, second.box_id, "active")  # the operator lets it back, over quota
    admin.set_box_state(store, second.box_id, "active")  # twice: counted once
    assert kept_and_counted(store, customer) == (3, 3)
    first.customer = other  # it presents another subscription's code: it moves, with its slot
    assert ask(cloud, first.body()).status == 200
    assert kept_and_counted(store, customer) == (2, 2)
    assert kept_and_counted(store, other) == (1, 1)
    assert code_of(ask(cloud, Device(customer).body())) == "box_quota_exceeded"


def test_two_revocations_at_once_count_once(store):
    """Two operators (or one, retrying) revoke the same box at the same moment: on PostgreSQL
    both read the box before either wrote, and both took its slot back (kept -1, counted 0: a
    slot past the quota for good) until the box's row was locked first."""
    cloud = service(store)
    customer = Customer.create(store, iot_boxes=3)
    device = Device(customer)
    assert ask(cloud, device.body()).status == 200
    both_read = threading.Barrier(2, timeout=1)

    def after_reading_the_box(_conn, _cursor, statement, *_args) -> None:
        # Each revocation waits here for the other (a second at most: locked out, it cannot come).
        if statement.startswith("UPDATE subscriptions SET active_boxes"):
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait()

    event.listen(store.engine, "before_cursor_execute", after_reading_the_box)
    try:
        revocations = [
            threading.Thread(target=admin.set_box_state, args=(store, device.box_id, "revoked"))
            for _ in range(2)
        ]
        for revocation in revocations:
            revocation.start()
        for revocation in revocations:
            revocation.join(30)
    finally:
        event.remove(store.engine, "before_cursor_execute", after_reading_the_box)
    assert kept_and_counted(store, customer) == (0, 0)


def test_a_box_revoked_while_it_moves_is_counted_where_it_is(store):
    """The operator revokes a box after its request to move read it and before it locked the
    new subscription: its slot was taken back twice from the old subscription, and given to the
    new one for a revoked box, until the move read the box again under the lock."""
    cloud = service(store)
    old, new = Customer.create(store, iot_boxes=3), Customer.create(store, iot_boxes=3)
    device = Device(old)
    assert ask(cloud, device.body()).status == 200
    revoked = []

    def revoke_before_the_lock(_conn, _cursor, statement, *_args) -> None:
        if not revoked and "FROM subscriptions" in statement and "FOR UPDATE" in statement:
            revoked.append(admin.set_box_state(store, device.box_id, "revoked"))

    device.customer = new
    event.listen(store.engine, "before_cursor_execute", revoke_before_the_lock)
    try:
        ask(cloud, device.body())
    finally:
        event.remove(store.engine, "before_cursor_execute", revoke_before_the_lock)
    # SQLite sends no row lock (its write lock, taken first, covers the move): nothing to race.
    assert bool(revoked) == (not store.is_sqlite)
    for customer in (old, new):
        kept, counted = kept_and_counted(store, customer)
        assert kept == counted, customer


@pytest.mark.parametrize("budget_hit", [False, True])
def test_the_subscriptions_budget_is_exact_whether_or_not_the_bound_is_reached(store, budget_hit):
    # Three certificates a window for one slot: the bound (a period's count) decides alone
    # until it reaches three, then the window's certificates are counted one by one.
    cloud = service(store, issuance=IssuanceBudget(per_box=100, per_box_slot=3))
    device = Device(Customer.create(store, iot_boxes=1))
    for _ in range(3 if budget_hit else 2):
        device.tls_key = pki.new_private_key()
        assert ask(cloud, device.body()).status == 200
    device.tls_key = pki.new_private_key()
    answer = ask(cloud, device.body())
    if budget_hit:
        assert answer.status == 429 and code_of(answer) == "issuance_limited", answer
        assert "got 3 new certificates" in answer.body["detail"]
    else:
        assert answer.status == 200, answer


def test_a_new_box_counts_no_rows(store):
    """Its quota and its subscription's budget come from the kept counts: no statement of its
    request counts boxes or certificates, however many the subscription has."""
    cloud = service(store)
    customer = Customer.create(store, iot_boxes=50)
    for _ in range(3):
        assert ask(cloud, Device(customer).body()).status == 200
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert ask(cloud, Device(customer).body()).status == 200
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert any("INSERT INTO certificates" in s for s in statements)  # it was heard
    assert [s for s in statements if "count(" in s.lower()] == []


WINDOW = 3600.0
START = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=3 * WINDOW), min_size=1, max_size=25),
    later=st.floats(min_value=0, max_value=3 * WINDOW),
    asked_window=st.floats(min_value=60, max_value=4 * WINDOW),
)
# Three periods, then a window four times as long: it reaches back past the last period.
@example(gaps=[0.0, 1.5 * WINDOW, 1.5 * WINDOW], later=0.0, asked_window=4 * WINDOW)
def test_the_two_periods_never_count_fewer_than_the_window_holds(store, gaps, later, asked_window):
    """Whatever the times of a subscription's certificates, the bound read at any later moment
    is at least the number issued in the window ending then — also for a window the operator
    has made longer or shorter since (the bound then says when it cannot tell)."""
    budget = IssuanceBudget(window=WINDOW)
    customer = Customer.create(store, iot_boxes=1)
    issued, now = [], START
    for gap in gaps:
        now += dt.timedelta(seconds=gap)
        with store.transaction() as session:
            throttle.count_issued(session, budget, customer.code, now)
        issued.append(now)
        assert bound(store, customer, now, WINDOW) >= in_window(issued, now, WINDOW)
    asked_at = now + dt.timedelta(seconds=later)
    for window in (WINDOW, asked_window):
        assert bound(store, customer, asked_at, window) >= in_window(issued, asked_at, window)


def bound(store: Store, customer: Customer, now: dt.datetime, window: float) -> float:
    since = now - dt.timedelta(seconds=window)
    with store.transaction() as session:
        return throttle.issued_bound(session, customer.code, since)


def in_window(issued: list[dt.datetime], now: dt.datetime, window: float) -> int:
    since = now - dt.timedelta(seconds=window)
    return sum(1 for at in issued if since < at <= now)
