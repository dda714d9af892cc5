"""A CSR is checked once (issue #13): a box signs its CSR deterministically, the cloud keeps the
digest of the CSR each certificate was issued for, and a box asking again with those very bytes
is answered without a second signature check; any other CSR is checked as before, so a CSR
whose signature does not hold is refused, never reused. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import textwrap
from typing import Any

from cryptography.hazmat.primitives import serialization

from lanlock import names, pki
from lanlock.box.cloud_client import signed_body, x509_payload
from lanlock.cloud.models import Certificate
from tests.boxes import Customer
from tests.cloud.test_first_look import ZONE, Device, ask, code_of, service


def test_a_box_makes_the_same_csr_for_the_same_key_and_names():
    key = pki.new_private_key()
    assert pki.csr_pem(pki.build_csr(key, ["a.iot.test"])) == pki.csr_pem(
        pki.build_csr(key, ["a.iot.test"])
    )
    assert pki.csr_pem(pki.build_csr(key)) != pki.csr_pem(pki.build_csr(key, ["a.iot.test"]))


def body_with(device: Device, csr_pem: str) -> bytes:
    customer = device.customer
    payload = x509_payload(device.key, customer.db_uuid, customer.code, csr_pem, "10.0.0.7")
    return signed_body(device.key, payload)


def checks_during(monkeypatch: Any, work: Any) -> tuple[Any, int]:
    checks = []
    check_csr = pki.check_csr

    def counted(csr: Any) -> Any:
        checks.append(1)
        return check_csr(csr)

    monkeypatch.setattr(pki, "check_csr", counted)
    try:
        return work(), len(checks)
    finally:
        monkeypatch.setattr(pki, "check_csr", check_csr)


def test_the_csr_a_certificate_was_issued_for_is_not_checked_again(store, monkeypatch):
    cloud = service(store)
    device = Device(Customer.create(store, iot_boxes=3))
    issued, checks = checks_during(monkeypatch, lambda: ask(cloud, device.body()))
    assert issued.status == 200 and checks == 1
    with store.transaction() as session:
        kept = session.query(Certificate.csr_sha256).filter_by(box_id=device.box_id).scalar()
    assert kept == pki.csr_digest(pki.build_csr(device.tls_key))

    again, checks = checks_during(monkeypatch, lambda: ask(cloud, device.body()))
    assert again.body["result"]["x509_pem"] == issued.body["result"]["x509_pem"]
    assert checks == 0

    # The box's names in its CSR now: other bytes for the same key, checked, and reused.
    scope = issued.body["result"]["scope"]
    named = pki.csr_pem(pki.build_csr(device.tls_key, names.certificate_names(scope, ZONE)))
    renamed, checks = checks_during(monkeypatch, lambda: ask(cloud, body_with(device, named)))
    assert renamed.body["result"]["x509_pem"] == issued.body["result"]["x509_pem"]
    assert checks == 1


def test_a_csr_for_the_boxs_key_whose_signature_does_not_hold_is_refused_not_reused(store):
    cloud = service(store)
    device = Device(Customer.create(store, iot_boxes=3))
    assert ask(cloud, device.body()).status == 200
    der = bytearray(pki.build_csr(device.tls_key).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte: the same key and names, a signature that fails
    forged = as_pem(bytes(der))

    answer = ask(cloud, body_with(device, forged))

    assert code_of(answer) == "invalid_csr", answer
    assert "signature does not verify" in answer.body["error"]["message"]


def as_pem(der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
