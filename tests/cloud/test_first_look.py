"""The issuing path's transactions, in process, on SQLite and PostgreSQL (issue #13, item 1).

A new box is decided in one transaction (nonce, eligibility, registration, the lease step and,
with the embedded CA, the certificate itself): these pin what that must not change. Every
refusal or limit met after the box was registered in that transaction gives the slot back and
keeps the nonce and the audit line, as when each step had a transaction of its own; a slow
issuer (ACME) and a CA budget take the older way, between transactions, with the same answers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import event, func, select

from lanlock import pki
from lanlock.box.cloud_client import signed_body, x509_payload
from lanlock.cloud.ca_budget import CABudget
from lanlock.cloud.issuance import ScopeLease
from lanlock.cloud.issuers import IssuanceError
from lanlock.cloud.issuers.local import LocalIssuer
from lanlock.cloud.models import Box, Certificate, IssuanceLease
from lanlock.cloud.server import CloudSettings, threads_for
from lanlock.cloud.throttle import IssuanceBudget
from lanlock.cloud.x509 import Answer, X509Service, X509Settings
from lanlock.store import Store
from tests.boxes import Customer, audit_of

ZONE = "iot.test"
CA = pki.CertificateAuthority.create(ZONE)


class SlowIssuer:
    """The embedded CA as a slow issuer looks to the request path (an ACME CA): not instant."""

    name = "slow"
    requires_csr_names = False
    names_replaced = False

    def __init__(self, refuse: bool = False) -> None:
        self.local = LocalIssuer(CA, ZONE, dt.timedelta(days=90))
        self.refuse = refuse

    def issue(self, csr: x509.CertificateSigningRequest, scope: str, replacing: Any = None) -> Any:
        if self.refuse:
            raise IssuanceError("the CA says no")
        return self.local.issue(csr, scope)

    def renewal_advice(self, leaf: x509.Certificate) -> Any:
        return self.local.renewal_advice(leaf)


class RefusingLocalIssuer(LocalIssuer):
    def issue(self, csr: x509.CertificateSigningRequest, scope: str, replacing: Any = None) -> Any:
        raise IssuanceError("the CA says no")


# The ways a certificate is issued: in the first transaction, between two, the lease apart.
WAYS = ["instant", "slow", "ca_budget"]


def service(
    store: Store, way: str = "instant", refuse: bool = False, **settings: Any
) -> X509Service:
    issuer: Any
    if way == "instant":
        issuer = (RefusingLocalIssuer if refuse else LocalIssuer)(CA, ZONE, dt.timedelta(days=90))
    else:
        issuer = SlowIssuer(refuse)
    if way == "ca_budget":
        settings["ca_budget"] = CABudget({}, ZONE, "test")  # no limits: its own transaction
    return X509Service(store, issuer, X509Settings(zone=ZONE, **settings))


class Device:
    def __init__(self, customer: Customer) -> None:
        self.customer = customer
        self.key = pki.new_private_key()
        self.tls_key = pki.new_private_key()
        self.box_id = pki.box_id_for(self.key.public_key())

    def body(self) -> bytes:
        csr_pem = pki.csr_pem(pki.build_csr(self.tls_key))
        payload = x509_payload(
            self.key, self.customer.db_uuid, self.customer.code, csr_pem, "10.0.0.7"
        )
        return signed_body(self.key, payload)


def ask(cloud: X509Service, body: bytes) -> Answer:
    return cloud.handle(body, "192.0.2.10")


def code_of(answer: Answer) -> str | None:
    error = answer.body.get("error")
    return error["code"] if error else answer.body.get("code")


def count(store: Store, model: Any, *where: Any) -> int:
    with store.transaction() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def commits_of(store: Store, body: bytes, cloud: X509Service) -> tuple[Answer, int]:
    commits = []

    def counted(_conn: Any) -> None:
        commits.append(1)

    event.listen(store.engine, "commit", counted)
    try:
        answer = ask(cloud, body)
    finally:
        event.remove(store.engine, "commit", counted)
    return answer, len(commits)


@pytest.mark.parametrize("way", WAYS)
def test_a_new_box_is_registered_and_issued_and_nothing_is_left_behind(store, way):
    cloud = service(store, way)
    device = Device(Customer.create(store))
    answer, commits = commits_of(store, device.body(), cloud)
    assert answer.status == 200 and answer.body["result"]["x509_pem"], answer
    # One commit with the embedded CA; the slow issuer's record is a second, a CA budget's
    # lease step a third.
    assert commits == {"instant": 1, "slow": 2, "ca_budget": 3}[way]
    assert audit_of(store, device.box_id) == [("issued", None)]
    assert count(store, Box, Box.box_id == device.box_id) == 1
    assert count(store, Certificate, Certificate.box_id == device.box_id) == 1
    assert count(store, IssuanceLease) == 0
    again = ask(cloud, device.body())  # the same key: the express lane
    assert again.body["result"]["x509_pem"] == answer.body["result"]["x509_pem"]


@pytest.mark.parametrize("way", WAYS)
def test_a_new_box_over_its_subscriptions_budget_takes_no_slot_and_keeps_its_nonce(store, way):
    budget = IssuanceBudget(per_box=10, per_box_slot=1)  # two certificates for two slots
    cloud = service(store, way, issuance=budget)
    customer = Customer.create(store, iot_boxes=2)
    first = Device(customer)
    assert ask(cloud, first.body()).status == 200
    first.tls_key = pki.new_private_key()
    assert ask(cloud, first.body()).status == 200  # the subscription's second certificate
    second = Device(customer)
    body = second.body()
    limited = ask(cloud, body)
    assert limited.status == 429 and code_of(limited) == "issuance_limited", limited
    assert "subscription" in limited.body["detail"]
    assert int(limited.headers["Retry-After"]) > 0
    assert count(store, Box, Box.box_id == second.box_id) == 0
    assert audit_of(store, second.box_id) == [("limited", "issuance_limited")]
    assert ask(cloud, body).status == 401  # the nonce was kept
    assert count(store, IssuanceLease) == 0


@pytest.mark.parametrize("way", WAYS)
def test_a_refusal_by_the_ca_gives_the_new_boxs_slot_back(store, way):
    cloud = service(store, way, refuse=True)
    device = Device(Customer.create(store, iot_boxes=1))
    body = device.body()
    refused = ask(cloud, body)
    assert code_of(refused) == "issuance_failed", refused
    assert "the CA says no" in refused.body["error"]["message"]
    assert count(store, Box, Box.box_id == device.box_id) == 0
    assert audit_of(store, device.box_id) == [("refused", "issuance_failed")]
    assert ask(cloud, body).status == 401
    assert count(store, IssuanceLease) == 0
    other = Device(device.customer)  # the one slot is free
    assert ask(service(store, way), other.body()).status == 200


def test_a_full_subscription_refuses_in_the_first_look_and_keeps_the_nonce(store):
    cloud = service(store)
    customer = Customer.create(store, iot_boxes=1)
    assert ask(cloud, Device(customer).body()).status == 200
    late = Device(customer)
    body = late.body()
    answer, commits = commits_of(store, body, cloud)
    assert code_of(answer) == "box_quota_exceeded" and commits == 1
    assert count(store, Box, Box.box_id == late.box_id) == 0
    assert audit_of(store, late.box_id) == [("refused", "box_quota_exceeded")]
    assert ask(cloud, body).status == 401


@pytest.mark.parametrize("way", WAYS)
def test_a_registered_box_waits_for_a_lease_another_holds(store, way):
    cloud = service(store, way, lease_wait_seconds=0.3)
    device = Device(Customer.create(store))
    assert ask(cloud, device.body()).status == 200
    with store.transaction() as session:
        scope = session.scalar(select(Box.scope).where(Box.box_id == device.box_id))
    other = ScopeLease(store, 60)  # another replica, issuing for this scope
    with store.transaction() as session:
        assert other.acquire_in(session, scope)
    device.tls_key = pki.new_private_key()  # a renewal: a new key, a new certificate
    body = device.body()
    busy = ask(cloud, body)
    assert busy.status == 503 and busy.headers["Retry-After"] == "10", busy
    assert ask(cloud, body).status == 401  # its nonce was kept
    other.release(scope)
    renewed = ask(cloud, device.body())
    assert renewed.status == 200, renewed
    assert count(store, Certificate, Certificate.box_id == device.box_id) == 2
    assert count(store, IssuanceLease) == 0
    # The 503 has no audit line (the CA's or the lease's wait is no verdict); the replay has.
    assert [o for o, _ in audit_of(store, device.box_id)] == ["issued", "unauthorized", "issued"]


@pytest.mark.parametrize("way", ["instant", "slow"])
def test_a_worker_hands_its_work_to_one_thread_only_where_nothing_waits_on_a_network(
    store, way, tmp_path
):
    """SQLite and the embedded CA: one thread (a second only fights over the interpreter lock);
    PostgreSQL or an issuer that is not instant: two, so that one request's round trips do not
    hold the next; ``--threads`` over either."""
    cloud = service(store, way)
    default = threads_for(CloudSettings(tmp_path), cloud)
    assert default == (1 if store.is_sqlite and way == "instant" else 2)
    assert threads_for(CloudSettings(tmp_path, threads=5), cloud) == 5
