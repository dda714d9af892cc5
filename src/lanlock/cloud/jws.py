"""Verification of a box's signed x509 request (DESIGN §3, §4).

The envelope is ACME's: a flattened JWS, ES256, the device key as ``jwk`` in the protected header.
``josepy`` does the JOSE work; this module adds the rules that make it an identity check: only
ES256 over P-256, the key only in the protected header, the ``box_id`` derived from that key, a
fresh ``iat``. (The nonce's freshness needs the store: ``x509`` checks it.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import josepy
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock.pki import box_id_for

IAT_WINDOW_SECONDS = 300
MIN_NONCE_CHARS = 22  # 16 random bytes in base64url, unpadded
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")
PAYLOAD_FIELDS: dict[str, type] = {
    "box_id": str,
    "db_uuid": str,
    "enterprise_code": str,
    "csr_pem": str,
    "iat": int,
    "nonce": str,
}
MAX_FIELD_CHARS = {"box_id": 64, "db_uuid": 64, "enterprise_code": 128, "csr_pem": 16384}


class MalformedRequest(ValueError):
    """The body is not a well-formed signed request (answer 400)."""


class Unauthorized(ValueError):
    """The request is well-formed but its signature, key, time or nonce do not hold (401)."""


@dataclass(frozen=True)
class SignedRequest:
    box_id: str
    db_uuid: str
    enterprise_code: str
    csr_pem: str
    iat: int
    nonce: str
    address: str | None
    device_key: ec.EllipticCurvePublicKey


def verify_request(body: bytes, now: float) -> SignedRequest:
    """Parse and authenticate one request body; raise MalformedRequest or Unauthorized."""
    jws = _parse_envelope(body)
    signature = jws.signature
    header = signature.combined
    if signature.header.to_partial_json():
        raise MalformedRequest("the JWS has an unprotected header; put alg and jwk in 'protected'")
    if header.alg != josepy.ES256:
        raise Unauthorized(f"the JWS algorithm must be ES256, not {header.alg and header.alg.name}")
    jwk = header.jwk
    if not isinstance(jwk, josepy.JWKEC) or not isinstance(jwk.key.curve, ec.SECP256R1):
        raise Unauthorized("the protected header must carry the device key as an EC P-256 jwk")
    device_key = jwk.key if isinstance(jwk.key, ec.EllipticCurvePublicKey) else jwk.key.public_key()
    if not _signature_holds(jws):
        raise Unauthorized("the JWS signature does not verify with the jwk of its header")
    payload = _parse_payload(jws.payload)
    if payload["box_id"] != box_id_for(device_key):
        raise Unauthorized("box_id does not match the device key that signed the request")
    if abs(now - payload["iat"]) > IAT_WINDOW_SECONDS:
        raise Unauthorized(
            f"iat is more than {IAT_WINDOW_SECONDS} seconds from the cloud's clock; "
            "set the box's clock"
        )
    return SignedRequest(device_key=device_key, **payload)


def _parse_envelope(body: bytes) -> josepy.JWS:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest("the body is not JSON") from exc
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), str) for k in ("protected", "payload", "signature")
    ):
        raise MalformedRequest(
            "the body must be a flattened JWS: an object with protected, payload and signature"
        )
    try:
        return josepy.JWS.from_json(document)
    except (josepy.errors.Error, ValueError, TypeError, KeyError) as exc:
        raise MalformedRequest(f"the JWS cannot be decoded: {exc}") from exc


def _signature_holds(jws: josepy.JWS) -> bool:
    try:
        return bool(jws.verify())
    except (josepy.errors.Error, ValueError, TypeError):
        return False


def _parse_payload(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest("the JWS payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise MalformedRequest("the JWS payload must be a JSON object")
    missing = [k for k in PAYLOAD_FIELDS if k not in payload]
    if missing:
        raise MalformedRequest(f"the payload lacks {', '.join(missing)}")
    for name, kind in PAYLOAD_FIELDS.items():
        value = payload[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedRequest(f"payload field {name} must be a {kind.__name__}")
        if kind is str and not 0 < len(value) <= MAX_FIELD_CHARS.get(name, 128):
            raise MalformedRequest(f"payload field {name} is empty or too long")
    if not NONCE_PATTERN.match(payload["nonce"]):
        raise MalformedRequest("nonce must be at least 16 random bytes in base64url")
    address = payload.get("address")
    if address is not None and not (isinstance(address, str) and len(address) <= 64):
        raise MalformedRequest("payload field address must be a string (an IP address)")
    return {name: payload[name] for name in PAYLOAD_FIELDS} | {"address": address}
