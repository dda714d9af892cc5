"""A box's signed requests (docs/design.md §3), made by the box and checked by the cloud and the
console.

The envelope is ACME's: a flattened JWS, ES256, the device key as ``jwk`` in the protected
header. ``josepy`` does the JOSE work; this module adds the rules that make it an identity
check: only ES256 over P-256, the key only in the protected header, and a ``box_id`` that is the
one that key derives. What the payload must hold is each receiver's own business.
"""

from __future__ import annotations

import json
from typing import Any

import josepy
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock.pki import box_id_for


class MalformedRequest(ValueError):
    """The body is not a well-formed signed request (answer 400)."""


class Unauthorized(ValueError):
    """The request is well-formed but does not prove the box it names (answer 401)."""


def signed_body(device_key: ec.EllipticCurvePrivateKey, payload: dict[str, Any]) -> bytes:
    """``payload`` as a flattened JWS signed with the device key (ES256, jwk protected)."""
    jws = josepy.JWS.sign(
        json.dumps(payload, separators=(",", ":")).encode(),
        key=josepy.JWKEC(key=device_key),
        alg=josepy.ES256,
        include_jwk=True,
        protect=frozenset(["alg", "jwk"]),
    )
    return jws.json_dumps().encode()


# What Python's JSON parser raises on bytes that are not JSON; RecursionError for nesting deeper
# than the interpreter recurses, which a 64 KiB body reaches easily.
NOT_JSON = (ValueError, UnicodeDecodeError, RecursionError)


def parse_envelope(body: bytes) -> josepy.JWS:
    """The JWS of a request body; MalformedRequest when it is not one."""
    try:
        document = json.loads(body)
    except NOT_JSON:
        raise MalformedRequest("the body is not JSON (or is nested too deeply)") from None
    return envelope_of(document)


def envelope_of(document: Any) -> josepy.JWS:
    """The JWS of a body already read as JSON; MalformedRequest when it is not one."""
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), str) for k in ("protected", "payload", "signature")
    ):
        raise MalformedRequest(
            "the body must be a flattened JWS: an object with protected, payload and signature"
        )
    try:
        jws = josepy.JWS.from_json(document)
    except RecursionError:  # the protected header is JSON too
        raise MalformedRequest("the JWS's protected header is nested too deeply") from None
    except (josepy.errors.Error, ValueError, TypeError, KeyError, AttributeError) as exc:
        # AttributeError: josepy decodes a null where it expects base64 text (a jwk's "x")
        raise MalformedRequest(f"the JWS cannot be decoded: {exc}") from exc
    if jws.signature.header.to_partial_json():
        raise MalformedRequest("the JWS has an unprotected header; put alg and jwk in 'protected'")
    return jws


def signing_key(jws: josepy.JWS) -> ec.EllipticCurvePublicKey:
    """The device key of the protected header, once the signature verifies with it."""
    header = jws.signature.combined
    if header.alg != josepy.ES256:
        raise Unauthorized(f"the JWS algorithm must be ES256, not {header.alg and header.alg.name}")
    jwk = header.jwk
    if not isinstance(jwk, josepy.JWKEC) or not isinstance(jwk.key.curve, ec.SECP256R1):
        raise Unauthorized("the protected header must carry the device key as an EC P-256 jwk")
    if not _signature_holds(jws):
        raise Unauthorized("the JWS signature does not verify with the jwk of its header")
    return jwk.key if isinstance(jwk.key, ec.EllipticCurvePublicKey) else jwk.key.public_key()


def payload_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except NOT_JSON:
        raise MalformedRequest("the JWS payload is not JSON (or is nested too deeply)") from None
    if not isinstance(payload, dict):
        raise MalformedRequest("the JWS payload must be a JSON object")
    return payload


def check_box_id(box_id: str, device_key: ec.EllipticCurvePublicKey) -> None:
    """The identity check: only the holder of a box's device key can speak for its box_id."""
    if box_id != box_id_for(device_key):
        raise Unauthorized("box_id does not match the device key that signed the request")


def _signature_holds(jws: josepy.JWS) -> bool:
    try:
        return bool(jws.verify())
    except (josepy.errors.Error, ValueError, TypeError):
        return False
