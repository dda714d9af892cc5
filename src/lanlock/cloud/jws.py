"""Verification of a box's signed x509 request (docs/design.md §3, §4).

The envelope and the identity check are ``lanlock.jws``'s (the console checks a box's pairing
request the same way); this module adds what the x509 request must hold: its fields (defined
with the box's side in :mod:`lanlock.wire`), and a fresh ``iat``. (The nonce's freshness needs
the store: ``x509`` checks it.)
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from lanlock.jws import (
    MalformedRequest,
    Unauthorized,
    check_box_id,
    parse_envelope,
    payload_object,
    signing_key,
)
from lanlock.wire import X509Payload

__all__ = ["MalformedRequest", "SignedRequest", "Unauthorized", "verify_request"]

IAT_WINDOW_SECONDS = 300


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
    payload = X509Payload.from_json(payload_object(jws.payload))
    check_box_id(payload.box_id, device_key)
    if abs(now - payload.iat) > IAT_WINDOW_SECONDS:
        raise Unauthorized(
            f"iat is more than {IAT_WINDOW_SECONDS} seconds from the cloud's clock; "
            "set the box's clock"
        )
    return SignedRequest(device_key=device_key, **payload.to_json())
