"""A box as the tests drive it: a real device key, real CSRs, real signed requests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import pki
from lanlock.box.cloud_client import CloudAnswer, read_answer, signed_body, x509_payload
from lanlock.cloud import admin
from lanlock.store import Store


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
        return httpx.post(
            self.cloud_url + "/iot/x509",
            content=body,
            headers={"Content-Type": content_type},
            timeout=30,
        )

    def ask(self, customer: Customer, **override: Any) -> CloudAnswer:
        body = signed_body(self.device_key, self.payload(customer, **override))
        return read_answer(self.post_body(body))
