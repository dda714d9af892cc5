"""POST /iot/x509 against the real cloud, with real JWS, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time

import josepy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import func, select

from lanlock import names, pki
from lanlock.box.cloud_client import signed_body
from lanlock.cloud import admin
from lanlock.cloud.models import Box, Certificate
from lanlock.store import Store
from tests.boxes import Customer, TestBox, audit_of


def counts(store: Store) -> tuple[int, int]:
    with store.transaction() as session:
        return (
            session.scalar(select(func.count()).select_from(Box)),
            session.scalar(select(func.count()).select_from(Certificate)),
        )


# --- granted ------------------------------------------------------------------------------------


def test_granted_certificate_verifies_for_the_box_name_only(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    answer = box.ask(customer)
    assert answer.status == 200 and answer.result, answer
    result = answer.result
    scope = result.scope
    assert names.is_scope_label(scope)
    assert result.subject_cn == f"*.{scope}.{cloud.zone}"
    assert result.zone == cloud.zone
    leaf = pki.certificate_from_pem(result.x509_pem)
    chain = pki.certificates_from_pem(result.chain_pem)
    assert leaf.public_key() == box.tls_key.public_key()
    root = pki.certificate_from_pem(cloud.root_pem())

    pki.verify_server_chain(leaf, chain, [root], f"10-0-0-7.{scope}.{cloud.zone}")
    pki.verify_server_chain(leaf, chain, [root], f"{scope}.{cloud.zone}")
    other_scope = names.new_scope()
    for wrong in (f"10-0-0-7.{other_scope}.{cloud.zone}", f"a.10-0-0-7.{scope}.{cloud.zone}"):
        with pytest.raises(pki.VerificationError):
            pki.verify_server_chain(leaf, chain, [root], wrong)
    assert audit_of(cloud_store, box.box_id) == [("issued", None)]


def test_same_key_reuses_the_certificate_and_a_new_key_gets_a_new_one(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    first = box.ask(customer).result
    again = box.ask(customer).result
    assert again == first
    box.tls_key = pki.new_private_key()
    renewed = box.ask(customer).result
    assert renewed.scope == first.scope
    assert renewed.x509_pem != first.x509_pem
    leaf = pki.certificate_from_pem(renewed.x509_pem)
    assert leaf.public_key() == box.tls_key.public_key()
    assert [o for o, _ in audit_of(cloud_store, box.box_id)] == ["issued", "reused", "issued"]


def test_csr_naming_the_box_scope_is_accepted(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    scope = box.ask(customer).result.scope
    box.tls_key = pki.new_private_key()
    csr = pki.build_csr(box.tls_key, names.certificate_names(scope, cloud.zone))
    answer = box.ask(customer, csr_pem=pki.csr_pem(csr))
    assert answer.result and answer.result.scope == scope


def test_box_keeps_its_scope_and_one_slot_across_requests(cloud, cloud_store):
    customer = Customer.create(cloud_store, iot_boxes=1)
    box = TestBox(cloud.url)
    scopes = set()
    for _ in range(3):
        box.tls_key = pki.new_private_key()
        scopes.add(box.ask(customer).result.scope)
    assert len(scopes) == 1


# --- refusals, each from its real condition -----------------------------------------------------


def assert_refused(answer, code: str) -> None:
    assert answer.status == 200, answer
    assert answer.result is None
    assert answer.refusal_code == code, answer
    assert answer.message


def test_unknown_database_and_wrong_code_are_indistinguishable(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    unknown = box.ask(Customer("no-such-database", customer.code))
    wrong = box.ask(Customer(customer.db_uuid, "SUB-wrong"))
    other = Customer.create(cloud_store)
    not_its_own = box.ask(Customer(customer.db_uuid, other.code))
    for answer in (unknown, wrong, not_its_own):
        assert_refused(answer, "invalid_credentials")
    assert unknown.message == wrong.message == not_its_own.message


@pytest.mark.parametrize("kind", ["staging", "development", "duplicate"])
def test_database_that_is_not_production(cloud, cloud_store, kind):
    assert_refused(
        TestBox(cloud.url).ask(Customer.create(cloud_store, kind=kind)), "database_not_production"
    )


@pytest.mark.parametrize("state", ["draft", "paused", "closed"])
def test_subscription_not_in_progress(cloud, cloud_store, state):
    assert_refused(
        TestBox(cloud.url).ask(Customer.create(cloud_store, state=state)),
        "subscription_not_in_progress",
    )


def test_subscription_without_iot_box_line(cloud, cloud_store):
    assert_refused(
        TestBox(cloud.url).ask(Customer.create(cloud_store, iot_boxes=0)), "no_iot_box_line"
    )


def test_quota_full_refuses_a_new_box_but_not_a_registered_one(cloud, cloud_store):
    customer = Customer.create(cloud_store, iot_boxes=2)
    first, second = TestBox(cloud.url), TestBox(cloud.url)
    assert first.ask(customer).result and second.ask(customer).result
    assert_refused(TestBox(cloud.url).ask(customer), "box_quota_exceeded")
    first.tls_key = pki.new_private_key()
    assert first.ask(customer).result


def test_revoked_box_is_refused_and_frees_its_slot(cloud, cloud_store):
    customer = Customer.create(cloud_store, iot_boxes=1)
    box = TestBox(cloud.url)
    assert box.ask(customer).result
    admin.set_box_state(cloud_store, box.box_id, "revoked")
    assert_refused(box.ask(customer), "box_revoked")
    assert TestBox(cloud.url).ask(customer).result


def test_order_of_eligibility_checks(cloud, cloud_store):
    """A staging database with a closed subscription reports the first failed rule."""
    customer = Customer.create(cloud_store, kind="staging", state="closed", iot_boxes=0)
    assert_refused(TestBox(cloud.url).ask(customer), "database_not_production")


def weak_rsa_csr() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return pki.csr_pem(pki.build_csr(key))


def p521_csr() -> str:
    return pki.csr_pem(pki.build_csr(ec.generate_private_key(ec.SECP521R1())))


@pytest.mark.parametrize(
    "make_csr, why",
    [
        (weak_rsa_csr, "1024 bits"),
        (p521_csr, "secp521r1"),
        (
            lambda: (
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            ),
            "can be parsed",
        ),
        (
            lambda: pki.csr_pem(pki.build_csr(pki.new_private_key(), ["www.example.com"])),
            "www.example.com",
        ),
        (
            lambda: pki.csr_pem(
                pki.build_csr(pki.new_private_key(), [f"*.{names.new_scope()}.iot.test"])
            ),
            "a CSR names",
        ),
    ],
)
def test_unusable_csr(cloud, cloud_store, make_csr, why):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    before = counts(cloud_store)
    answer = box.ask(customer, csr_pem=make_csr())
    assert_refused(answer, "invalid_csr")
    assert why in answer.message
    assert counts(cloud_store) == before
    assert audit_of(cloud_store, box.box_id) == [("refused", "invalid_csr")]


def test_refusals_store_nothing_but_their_audit_entry(cloud, cloud_store):
    customer = Customer.create(cloud_store, iot_boxes=0)
    box = TestBox(cloud.url)
    before = counts(cloud_store)
    assert_refused(box.ask(customer), "no_iot_box_line")
    assert counts(cloud_store) == before
    assert audit_of(cloud_store, box.box_id) == [("refused", "no_iot_box_line")]


# --- malformed and unauthenticated requests -----------------------------------------------------


def test_malformed_json_and_missing_fields_are_400(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    assert box.post_body(b"{not json").status_code == 400
    assert box.post_body(b'{"protected": "x"}').status_code == 400
    payload = box.payload(customer)
    del payload["csr_pem"]
    response = box.post_body(signed_body(box.device_key, payload))
    assert response.status_code == 400
    assert "csr_pem" in response.json()["detail"]
    response = box.post_body(signed_body(box.device_key, box.payload(customer, iat="now")))
    assert response.status_code == 400
    assert box.ask(customer).result  # and the same box still gets its certificate


def test_plain_json_content_type_is_accepted_and_others_are_not(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    body = signed_body(box.device_key, box.payload(customer))
    assert box.post_body(body, "application/json").json()["result"]
    assert box.post_body(body, "text/plain").status_code == 415


def test_bad_signature_is_401(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    document = json.loads(signed_body(box.device_key, box.payload(customer)))
    other = json.loads(signed_body(pki.new_private_key(), box.payload(customer)))
    document["signature"] = other["signature"]
    assert box.post_body(json.dumps(document).encode()).status_code == 401


def test_payload_swapped_under_a_signature_is_401(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    document = json.loads(signed_body(box.device_key, box.payload(customer)))
    tampered = box.payload(customer, address="10.9.9.9")
    document["payload"] = josepy.b64.b64encode(json.dumps(tampered).encode()).decode()
    assert box.post_body(json.dumps(document).encode()).status_code == 401


def test_box_id_that_does_not_match_the_key_is_401(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box, victim = TestBox(cloud.url), TestBox(cloud.url)
    assert victim.ask(customer).result
    response = box.post_body(
        signed_body(box.device_key, box.payload(customer, box_id=victim.box_id))
    )
    assert response.status_code == 401
    assert "box_id" in response.json()["detail"]


# Clear of the 300 s window by more than a request's time on a loaded machine (the iat is
# whole seconds: 301 s ahead is 299.5 s ahead by the time a slow request is verified).
@pytest.mark.parametrize("offset", [-330, 330, -86400])
def test_stale_or_future_iat_is_401(cloud, cloud_store, offset):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    response = box.post_body(
        signed_body(box.device_key, box.payload(customer, iat=int(time.time()) + offset))
    )
    assert response.status_code == 401
    assert "clock" in response.json()["detail"]


def test_replayed_nonce_is_401(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    body = signed_body(box.device_key, box.payload(customer))
    assert box.post_body(body).status_code == 200
    replay = box.post_body(body)
    assert replay.status_code == 401
    assert "nonce" in replay.json()["detail"]


def test_hs256_or_unprotected_jwk_is_refused(cloud, cloud_store):
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    payload = json.dumps(box.payload(customer)).encode()
    hmac_key = josepy.JWKOct(key=b"0" * 32)
    forged = josepy.JWS.sign(
        payload, key=hmac_key, alg=josepy.HS256, include_jwk=False, protect=frozenset(["alg"])
    )
    assert box.post_body(forged.json_dumps().encode()).status_code == 401
    unprotected = josepy.JWS.sign(
        payload,
        key=josepy.JWKEC(key=box.device_key),
        alg=josepy.ES256,
        include_jwk=True,
        protect=frozenset(["alg"]),
    )
    assert box.post_body(unprotected.json_dumps().encode()).status_code == 400


def test_oversized_body_is_413(cloud, cloud_store):
    box = TestBox(cloud.url)
    assert box.post_body(b"{" + b" " * (65 * 1024) + b"}").status_code == 413


def test_health_and_metrics(cloud, cloud_store):
    import httpx

    customer = Customer.create(cloud_store)
    TestBox(cloud.url).ask(customer)
    assert httpx.get(cloud.url + "/healthz").json()["status"] == "ok"
    metrics = cloud.metrics()
    assert 'lanlock_x509_requests_total{code="",outcome="issued"}' in metrics
    assert "lanlock_issuance_seconds_bucket" in metrics
    assert 'lanlock_certificates_issued_total{issuer="local"}' in metrics


def test_a_forged_csr_for_a_registered_boxs_key_is_refused_not_reused(cloud, cloud_store):
    """The cloud skips the signature check of the very CSR a certificate was issued for (the
    box signs it deterministically). Someone holding a box's device key but not its TLS key can
    copy the public CSR's key and names, not its signature: the same key with any other bytes
    is checked, and refused, over the wire; and the box's own CSR still gets its certificate."""
    customer = Customer.create(cloud_store)
    box = TestBox(cloud.url)
    issued = box.ask(customer)
    assert issued.result
    der = bytearray(pki.build_csr(box.tls_key).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte
    body = base64.b64encode(bytes(der)).decode()
    forged = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
    answer = box.ask(customer, csr_pem=forged)
    assert_refused(answer, "invalid_csr")
    assert "signature does not verify" in answer.message
    again = box.ask(customer)
    assert again.result and again.result.x509_pem == issued.result.x509_pem
