"""Boundary: no body makes the cloud fail; a request that is not one gets 400 and a reason.

The attacker is anyone who reaches ``POST /iot/x509``: JSON nested deeper than Python's parser
recurses (in the body, in the JWS's protected header, in its signed payload) used to escape as
``RecursionError``, a 500 and a traceback in the log. Every one must be a 400 that names the
problem, the server must stay up, and its log must hold no traceback.
"""

from __future__ import annotations

import base64
import json

import httpx
import josepy
import pytest

from lanlock import pki
from tests.servers import running_cloud

NESTED = b"[" * 30_000 + b"]" * 30_000  # 60,000 bytes: under the 64 KiB body limit


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed_nested_payload() -> bytes:
    """A genuine signature over a payload that is nothing but nesting."""
    jws = josepy.JWS.sign(
        NESTED[:20_000] + NESTED[-20_000:],
        key=josepy.JWKEC(key=pki.new_private_key()),
        alg=josepy.ES256,
        include_jwk=True,
        protect=frozenset(["alg", "jwk"]),
    )
    return jws.json_dumps().encode()


def null_coordinate_header() -> bytes:
    """A protected header whose jwk has ``"x": null`` (josepy raised AttributeError on it)."""
    header = {"alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": None, "y": "AA"}}
    return json.dumps(
        {"protected": b64(json.dumps(header).encode()), "payload": "e30", "signature": "AA"}
    ).encode()


BODIES = {
    "jwk with a null coordinate": null_coordinate_header(),
    "nested body": NESTED,
    "nested protected header": json.dumps(
        {"protected": b64(NESTED[:22_000] + NESTED[-22_000:]), "payload": "e30", "signature": "AA"}
    ).encode(),
    "nested signed payload": signed_nested_payload(),
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with running_cloud(tmp_path_factory.mktemp("nested")) as running:
        yield running


@pytest.mark.parametrize("name", sorted(BODIES))
def test_nesting_gets_400_and_no_traceback(cloud, name):
    body = BODIES[name]
    assert len(body) < 64 * 1024
    answer = httpx.post(
        cloud.url + "/iot/x509",
        content=body,
        headers={"Content-Type": "application/jose+json"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"]
    assert httpx.get(cloud.url + "/healthz", timeout=10).status_code == 200
    assert "Traceback" not in cloud.log.read_text()
