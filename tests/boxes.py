"""A box as the tests drive it: a real device key, real CSRs, real signed requests."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from lanlock import pki
from lanlock.box.cloud_client import CloudAnswer, read_answer, signed_body, x509_payload
from lanlock.cloud import admin
from lanlock.cloud.models import SCHEMA, AuditEntry
from lanlock.store import Store
from tests.threads import Span, run_together


@dataclass
class Customer:
    """A database with one subscription, made in the store the way an operator would."""

    db_uuid: str
    code: str

    @classmethod
    def create(
        cls, store: Store, kind: str = "production", state: str = "in_progress", iot_boxes: int = 5
    ) -> Customer:
        customer = cls(str(uuid.uuid4()), "SUB-" + uuid.uuid4().hex)
        admin.add_database(store, customer.db_uuid, "test", kind)
        admin.add_subscription(store, customer.code, customer.db_uuid, state, iot_boxes)
        return customer


def customer_in(store_url: str, iot_boxes: int = 5) -> Customer:
    """A customer made in the store at ``store_url`` (a running cloud's), with its own pool."""
    store = Store(store_url, SCHEMA, pool_size=1)
    try:
        return Customer.create(store, iot_boxes=iot_boxes)
    finally:
        store.dispose()


def audit_of(store: Store, box_id: str) -> list[tuple[str, str | None]]:
    """The audit trail of one box, oldest first: (outcome, code)."""
    with store.transaction() as session:
        rows = session.execute(
            select(AuditEntry.outcome, AuditEntry.code)
            .where(AuditEntry.box_id == box_id)
            .order_by(AuditEntry.id)
        )
        return [(outcome, code) for outcome, code in rows]


@dataclass
class TestBox:
    __test__ = False  # not a test class, whatever its name

    cloud_url: str
    device_key: ec.EllipticCurvePrivateKey = field(default_factory=pki.new_private_key)
    tls_key: ec.EllipticCurvePrivateKey = field(default_factory=pki.new_private_key)

    @property
    def box_id(self) -> str:
        return pki.box_id_for(self.device_key.public_key())

    def payload(
        self, customer: Customer, csr_pem: str | None = None, **override: Any
    ) -> dict[str, Any]:
        csr = csr_pem or pki.csr_pem(pki.build_csr(self.tls_key))
        payload = x509_payload(self.device_key, customer.db_uuid, customer.code, csr, "10.0.0.7")
        return payload | override

    def post_body(self, body: bytes, content_type: str = "application/jose+json") -> httpx.Response:
        with httpx.Client(timeout=30) as http:
            return post_x509(http, self.cloud_url, body, content_type)

    def ask(self, customer: Customer, **override: Any) -> CloudAnswer:
        body = signed_body(self.device_key, self.payload(customer, **override))
        return read_answer(self.post_body(body))


def post_x509(
    http: httpx.Client, cloud_url: str, body: bytes, content_type: str = "application/jose+json"
) -> httpx.Response:
    """``POST /iot/x509`` as a box sends it."""
    return http.post(cloud_url + "/iot/x509", content=body, headers={"Content-Type": content_type})


def post_together(
    requests: Sequence[tuple[str, bytes]], seconds: float
) -> tuple[list[httpx.Response], list[Span]]:
    """Each (cloud URL, body) posted from its own thread, all released at one instant, within
    ``seconds``; the responses, and when each request was in flight."""
    with contextlib.ExitStack() as stack:
        # Made before the release: building a client's TLS context costs milliseconds of CPU.
        clients = [stack.enter_context(httpx.Client(timeout=seconds)) for _ in requests]
        calls = [
            functools.partial(post_x509, http, url, body)
            for http, (url, body) in zip(clients, requests, strict=True)
        ]
        return run_together(calls, seconds)
