"""Verification of a box's signed x509 request (docs/design.md §3, §4).

The envelope and the identity check are ``lanlock.jws``'s (the console checks a box's pairing
request the same way); this module adds what the x509 request must hold: its fields, and a
fresh ``iat``. (The nonce's freshness needs the store: ``x509`` checks it.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from lanlock.jws import (
    MalformedRequest,
    Unauthorized,
    check_box_id,
    parse_envelope,
    payload_object,
    signing_key,
)

__all__ = ["MalformedRequest", "SignedRequest", "Unauthorized", "verify_request"]

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
    jws = parse_envelope(body)
    device_key = signing_key(jws)
    payload = _parse_payload(jws.payload)
    check_box_id(payload["box_id"], device_key)
    if abs(now - payload["iat"]) > IAT_WINDOW_SECONDS:
        raise Unauthorized(
            f"iat is more than {IAT_WINDOW_SECONDS} seconds from the cloud's clock; "
            "set the box's clock"
        )
    return SignedRequest(device_key=device_key, **payload)


def _parse_payload(raw: bytes) -> dict[str, Any]:
    payload = payload_object(raw)
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
