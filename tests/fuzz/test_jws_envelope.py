"""The cloud's x509 endpoint under structure-aware fuzzing of its signed envelope, in process.

Each example starts from a genuine request of a registered customer's box and changes one
layer of it: the envelope's JSON, its base64url fields, the protected header (re-encoded, so
the header parses and the check after it is reached), the payload (re-signed with the device
key, so the signature holds and the payload's own checks are reached), or the signature. The
app must answer every one with 200, 400 or 401 and a JSON body, never a 500; the test
counts which answer each example reached and fails if the fuzzer stopped reaching any.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from lanlock import pki
from lanlock.box.cloud_client import x509_payload
from lanlock.cloud.app import create_app
from lanlock.cloud.server import CloudSettings, build_service
from lanlock.jws import signed_body
from tests.boxes import Customer
from tests.fuzz.strategies import ZONE, fuzz_settings

EVERY_ANSWER = {
    "400",
    "401",
    "200 result",
    "200 refused:invalid_csr",
    "200 refused:invalid_credentials",
}
DEVICE_KEY = pki.new_private_key()
OTHER_KEY = pki.new_private_key()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign(key: ec.EllipticCurvePrivateKey, protected: dict[str, Any], payload: bytes) -> dict:
    """A flattened JWS over any header and payload bytes (ES256, raw r||s)."""
    head = b64(json.dumps(protected).encode())
    body = b64(payload)
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return {"protected": head, "payload": body, "signature": b64(r.to_bytes(32) + s.to_bytes(32))}


def genuine(customer: Customer, nonce: str) -> dict[str, Any]:
    payload = x509_payload(
        DEVICE_KEY,
        customer.db_uuid,
        customer.code,
        pki.csr_pem(pki.build_csr(pki.new_private_key())),
        "10.0.0.7",
    )
    return payload | {"nonce": nonce}


def protected_header() -> dict[str, Any]:
    return json.loads(
        base64.urlsafe_b64decode(_pad(json.loads(signed_body(DEVICE_KEY, {}))["protected"]))
    )


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), 2**53]),  # past what a float holds
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["\ud800", "é" * 40, "\x00"]),  # lone surrogates come from JSON escapes
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@st.composite
def payload_changes(draw: st.DrawFn) -> Callable[[dict[str, Any]], dict[str, Any]]:
    field = draw(
        st.sampled_from(
            ["box_id", "db_uuid", "enterprise_code", "csr_pem", "iat", "nonce", "address", "extra"]
        )
    )
    kind = draw(st.sampled_from(["drop", "odd", "text", "keep"]))
    value = draw(ODD_VALUES) if kind == "odd" else draw(st.text(max_size=200))

    def change(payload: dict[str, Any]) -> dict[str, Any]:
        changed = dict(payload)
        if kind == "drop":
            changed.pop(field, None)
        elif kind in ("odd", "text"):
            changed[field] = value
        return changed

    return change


@st.composite
def header_changes(draw: st.DrawFn) -> Callable[[dict[str, Any]], dict[str, Any]]:
    kind = draw(st.sampled_from(["alg", "jwk-field", "jwk-drop", "extra", "drop"]))
    alg = draw(st.sampled_from(["none", "HS256", "RS256", "ES384", "ES256", "", "es256"]))
    jwk_field = draw(st.sampled_from(["kty", "crv", "x", "y", "d"]))
    value = draw(st.one_of(ODD_VALUES, st.sampled_from(["P-384", "RSA", "oct", "AAAA"])))
    extra = draw(st.sampled_from(["crit", "kid", "nonce", "url", "b64", "x5c"]))
    dropped = draw(st.sampled_from(["alg", "jwk"]))

    def change(header: dict[str, Any]) -> dict[str, Any]:
        changed = json.loads(json.dumps(header))
        if kind == "alg":
            changed["alg"] = alg
        elif kind == "jwk-field":
            changed["jwk"][jwk_field] = value
        elif kind == "jwk-drop":
            changed["jwk"].pop(jwk_field, None)
        elif kind == "extra":
            changed[extra] = value
        else:
            changed.pop(dropped, None)
        return changed

    return change


@st.composite
def envelope_changes(draw: st.DrawFn) -> Callable[[dict[str, Any]], Any]:
    field = draw(st.sampled_from(["protected", "payload", "signature"]))
    kind = draw(
        st.sampled_from(["drop", "odd", "cut", "pad", "bad-char", "flip", "header", "array"])
    )
    odd = draw(ODD_VALUES)
    cut = draw(st.integers(0, 200))
    char = draw(st.sampled_from(["+", "/", "=", "é", " ", "\x00", "."]))

    def change(envelope: dict[str, Any]) -> Any:
        changed = dict(envelope)
        text = changed[field]
        if kind == "drop":
            changed.pop(field)
        elif kind == "odd":
            changed[field] = odd
        elif kind == "cut":
            changed[field] = text[: cut % (len(text) + 1)]
        elif kind == "pad":
            changed[field] = text + "=="
        elif kind == "bad-char":
            at = cut % (len(text) + 1)
            changed[field] = text[:at] + char + text[at:]
        elif kind == "flip" and text:
            at = cut % len(text)
            changed[field] = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]
        elif kind == "header":
            changed["header"] = {"alg": "none"}
        elif kind == "array":
            return [changed]
        return changed

    return change


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Any, Any]:
    layer = draw(st.sampled_from(["genuine", "envelope", "header", "payload", "other-key"]))
    nonce = b64(draw(st.binary(min_size=16, max_size=16)))
    change = {
        "envelope": envelope_changes,
        "header": header_changes,
        "payload": payload_changes,
    }.get(layer)
    return layer, nonce, draw(change()) if change else None


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("fuzz-cloud")
    # One box asking with ever new keys: no failure or issuance limit may hide what lies behind.
    settings = CloudSettings(
        data_dir=data,
        zone=ZONE,
        failure_limit=1_000_000,
        box_issuance_limit=1_000_000,
        subscription_issuance_factor=1_000_000,
    )
    service = build_service(settings)
    with TestClient(create_app(service)) as test_client:
        yield test_client, Customer.create(service.store)
    service.store.dispose()


def body_of(customer: Customer, layer: str, nonce: str, change: Any) -> bytes:
    payload = genuine(customer, nonce)
    if layer == "payload":
        return signed_body(DEVICE_KEY, change(payload))
    if layer == "other-key":
        return signed_body(OTHER_KEY, payload)  # box_id is the device key's, not this one's
    header = protected_header()
    raw = json.dumps(payload).encode()
    if layer == "header":
        return json.dumps(sign(DEVICE_KEY, change(header), raw)).encode()
    envelope = sign(DEVICE_KEY, header, raw)
    return json.dumps(change(envelope) if layer == "envelope" else envelope).encode()


def test_every_fuzzed_request_is_answered_without_a_server_error(client):
    test_client, customer = client
    reached: Counter[str] = Counter()

    @fuzz_settings(1000)
    @given(request=requests())
    def one(request: tuple[str, str, Any]) -> None:
        body = body_of(customer, *request)
        response = test_client.post(
            "/iot/x509", content=body, headers={"Content-Type": "application/jose+json"}
        )
        assert response.status_code in (200, 400, 401), (response.status_code, body[:300])
        document = response.json()
        if response.status_code != 200:
            reached[str(response.status_code)] += 1
        elif "result" in document:
            reached["200 result"] += 1
        else:
            reached[f"200 refused:{document['error']['code']}"] += 1

    started = time.monotonic()
    one()
    print(
        f"\nx509 answers reached in {time.monotonic() - started:.0f} s:",
        dict(sorted(reached.items())),
    )
    assert set(reached) >= EVERY_ANSWER, f"never reached: {EVERY_ANSWER - set(reached)}"
