"""Each step of the x509 request on its own, in process, on a real SQLite store.

The whole request is tested over HTTP elsewhere (test_x509.py, test_concurrency.py, the security
modules); these pin each step's own rule, so that a change to one step shows where it broke.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanlock import errors, pki
from lanlock.cloud import admin, eligibility, express, limits, nonces, registration
from lanlock.cloud.audit import TokenBucket
from lanlock.cloud.issuance import ScopeLease
from lanlock.cloud.jws import SignedRequest, Unauthorized
from lanlock.cloud.models import Certificate, cloud_store
from lanlock.cloud.refusals import Refused
from lanlock.cloud.reuse import still_good
from lanlock.store import Store
from lanlock.wire import X509Payload

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = cloud_store(f"sqlite:///{tmp_path / 'store.db'}", pool_size=2)
    opened.migrate()
    yield opened
    opened.dispose()


def customer(store: Store, kind: str = "production", state: str = "in_progress", boxes: int = 1):
    db_uuid, code = str(uuid.uuid4()), "SUB-" + uuid.uuid4().hex
    admin.add_database(store, db_uuid, "test", kind)
    admin.add_subscription(store, code, db_uuid, state, boxes)
    return db_uuid, code


def request_of(db_uuid: str, code: str) -> SignedRequest:
    key = pki.new_private_key()
    return SignedRequest(
        box_id=pki.box_id_for(key.public_key()),
        db_uuid=db_uuid,
        enterprise_code=code,
        csr_pem="",
        iat=0,
        nonce=uuid.uuid4().hex,
        address="10.0.0.7",
        device_key=key.public_key(),
    )


def refusal(store: Store, request: SignedRequest) -> str | None:
    """What the eligibility checks say of a request, as the first look asks them."""
    failures = limits.FailureCounts(100, 60)
    try:
        with store.transaction() as session:
            conn = session.connection()
            row = express.look(conn, request.box_id, None)
            box = express.registered(request.box_id, row)
            eligibility.check(conn, request, row, box, "192.0.2.0/24", failures, NOW)
    except Refused as refused:
        return refused.code
    return None


def register(store: Store, request: SignedRequest) -> registration.RegisteredBox:
    """A new box's registration, in a transaction of its own."""
    with store.transaction() as session:
        slot = registration.register_in(
            session.connection(), request, "192.0.2.0/24", None, not store.is_sqlite
        )
    assert slot.is_new
    return slot.box


def test_eligibility_says_no_in_the_documented_order(store):
    staging_and_paused = customer(store, kind="staging", state="paused")
    assert refusal(store, request_of(*staging_and_paused)) == errors.DATABASE_NOT_PRODUCTION
    paused_without_lines = customer(store, state="paused", boxes=0)
    assert refusal(store, request_of(*paused_without_lines)) == errors.SUBSCRIPTION_NOT_IN_PROGRESS
    without_lines = customer(store, boxes=0)
    assert refusal(store, request_of(*without_lines)) == errors.NO_IOT_BOX_LINE
    db_uuid, _ = customer(store)
    assert refusal(store, request_of(db_uuid, "SUB-wrong")) == errors.INVALID_CREDENTIALS
    assert refusal(store, request_of(*customer(store))) is None


def test_registration_takes_one_slot_per_box(store):
    db_uuid, code = customer(store, boxes=1)
    first = register(store, request_of(db_uuid, code))
    assert first.source_network == "192.0.2.0/24"
    with pytest.raises(Refused) as refused:
        register(store, request_of(db_uuid, code))
    assert refused.value.code == errors.BOX_QUOTA_EXCEEDED
    registration.unregister(store, first.box_id)
    assert register(store, request_of(db_uuid, code)).box_id != first.box_id


def test_a_nonce_is_taken_once(store):
    with store.transaction() as session:
        nonces.remember(session.connection(), "n" * 22, NOW)
    with pytest.raises(Unauthorized), store.transaction() as session:
        nonces.remember(session.connection(), "n" * 22, NOW)


def take(lease: ScopeLease, scope: str) -> bool:
    """The lease in a transaction of its own, kept renewed: as the issuing path takes it."""
    with lease.store.transaction() as session:
        if not lease.acquire_in(session, scope):
            return False
    lease.hold(scope)
    return True


def test_one_lease_holder_per_scope_until_release_or_expiry(store):
    first, second = ScopeLease(store, 60), ScopeLease(store, 60)
    assert take(first, "a" * 16)
    assert not take(second, "a" * 16)
    assert take(second, "b" * 16)  # another scope is free
    first.release("a" * 16)
    assert take(second, "a" * 16)
    crashed = ScopeLease(store, -1)  # a lease that expired at once: its holder crashed
    assert take(crashed, "c" * 16)
    assert take(first, "c" * 16)


def test_a_living_holder_keeps_its_lease_past_its_first_expiry(store):
    """A short lease (a dead replica's frees soon) must hold through a long issuance."""
    holder, other = ScopeLease(store, 0.6), ScopeLease(store, 0.6)
    assert take(holder, "d" * 16)
    time.sleep(1.5)  # past two lease lengths: only renewal keeps it
    assert not take(other, "d" * 16)
    holder.release("d" * 16)
    assert take(other, "d" * 16)


def certificate(lifetime_days: float, left_days: float, renew_after=None) -> Certificate:
    not_after = NOW + dt.timedelta(days=left_days)
    return Certificate(
        not_before=not_after - dt.timedelta(days=lifetime_days),
        not_after=not_after,
        renew_after=renew_after,
    )


def test_reuse_until_the_renewal_time_the_rule_or_the_cas_advice_sets():
    assert still_good(certificate(90, 31), NOW)  # before its renewal time: the same one
    assert not still_good(certificate(90, 29), NOW)  # the box renews: it needs a new one
    assert not still_good(certificate(90, -1), NOW)
    advice = NOW + dt.timedelta(hours=1)
    assert still_good(certificate(90, 10, renew_after=advice), NOW)  # advice beats the fraction
    assert not still_good(certificate(90, 80, renew_after=NOW), NOW)


def test_the_garbage_audit_bucket_gives_a_burst_then_a_trickle():
    bucket = TokenBucket(burst=3, rate=0.0)
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]


def test_a_verified_request_carries_every_field_of_the_wire_payload():
    """SignedRequest is built from X509Payload's fields: a field added to lanlock.wire without
    it here would fail every request (TypeError, a 500)."""
    signed = {field.name for field in dataclasses.fields(SignedRequest)} - {"device_key"}
    assert signed == {field.name for field in dataclasses.fields(X509Payload)}
