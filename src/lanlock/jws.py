"""A box's signed requests (docs/design.md §3), made by the box and checked by the cloud and the
console.

The envelope is ACME's: a flattened JWS, ES256, the device key as ``jwk`` in the protected
header. The box signs with ``josepy``. The receivers verify with ``cryptography`` directly, by
hand, because they accept exactly one shape — ES256 over P-256, the key only in the protected
header — and josepy's general JOSE object model (every header field decoded into objects, any
algorithm) cost about three times the signature check itself on the cloud's busiest path
(BENCHMARKS.md, "the request path's profile"). What the payload must hold is each receiver's own
business; the identity check is a ``box_id`` that is the one the key derives.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import josepy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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


BASE64URL = re.compile(r"[A-Za-z0-9_-]*")  # RFC 7515 §2: unpadded
P256_BYTES = 32
ES256 = ec.ECDSA(hashes.SHA256())  # immutable: one for every check


@dataclass(frozen=True)
class Envelope:
    """A flattened JWS as read, before its signature is checked (:func:`signing_key` does)."""

    header: dict[str, Any]  # the protected header
    payload: bytes
    signature: bytes
    signing_input: bytes  # what the signature covers: protected "." payload, as sent


def parse_envelope(body: bytes) -> Envelope:
    """The JWS of a request body; MalformedRequest when it is not one."""
    try:
        document = json.loads(body)
    except NOT_JSON:
        raise MalformedRequest("the body is not JSON (or is nested too deeply)") from None
    return envelope_of(document)


def envelope_of(document: Any) -> Envelope:
    """The JWS of a body already read as JSON; MalformedRequest when it is not one."""
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), str) for k in ("protected", "payload", "signature")
    ):
        raise MalformedRequest(
            "the body must be a flattened JWS: an object with protected, payload and signature"
        )
    if document.get("header"):
        raise MalformedRequest("the JWS has an unprotected header; put alg and jwk in 'protected'")
    protected, payload = document["protected"], document["payload"]
    header_bytes = _decoded("protected", protected)
    try:
        header = json.loads(header_bytes)
    except RecursionError:
        raise MalformedRequest("the JWS's protected header is nested too deeply") from None
    except NOT_JSON:
        raise MalformedRequest(
            "the JWS cannot be decoded: its protected header is not JSON"
        ) from None
    if not isinstance(header, dict):
        raise MalformedRequest("the JWS cannot be decoded: its protected header is not an object")
    return Envelope(
        header=header,
        payload=_decoded("payload", payload),
        signature=_decoded("signature", document["signature"]),
        signing_input=f"{protected}.{payload}".encode("ascii"),
    )


def signing_key(envelope: Envelope) -> ec.EllipticCurvePublicKey:
    """The device key of the protected header, once the signature verifies with it."""
    alg = envelope.header.get("alg")
    if alg != "ES256":
        raise Unauthorized(f"the JWS algorithm must be ES256, not {str(alg)[:20]}")
    if "crit" in envelope.header:  # RFC 7515 §4.1.11: extensions a verifier must understand
        raise Unauthorized("the JWS names critical header extensions; none are supported")
    key = _p256_key(envelope.header.get("jwk"))
    if not _signature_holds(key, envelope):
        raise Unauthorized("the JWS signature does not verify with the jwk of its header")
    return key


def _decoded(field: str, text: str) -> bytes:
    if not BASE64URL.fullmatch(text):
        raise MalformedRequest(f"the JWS cannot be decoded: {field} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedRequest(f"the JWS cannot be decoded: {field} is not base64url") from None


def _p256_key(jwk: Any) -> ec.EllipticCurvePublicKey:
    """The key of an EC P-256 JWK (RFC 7518 §6.2: both coordinates at full length).

    Another kind of key is Unauthorized (401); a P-256 JWK that does not decode is malformed
    (400), as it was when josepy decoded it.
    """
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise Unauthorized("the protected header must carry the device key as an EC P-256 jwk")
    broken = MalformedRequest("the JWS cannot be decoded: its jwk is not a P-256 point")
    coordinates = [jwk.get("x"), jwk.get("y")]
    if not all(isinstance(c, str) and BASE64URL.fullmatch(c) for c in coordinates):
        raise broken
    x, y = (_decoded("jwk", c) for c in coordinates)
    if len(x) != P256_BYTES or len(y) != P256_BYTES:
        raise broken
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError:  # not a point of the curve
        raise broken from None


def _signature_holds(key: ec.EllipticCurvePublicKey, envelope: Envelope) -> bool:
    """ES256 signs with R and S as two 32-byte big-endian numbers (RFC 7518 §3.4)."""
    signature = envelope.signature
    if len(signature) != 2 * P256_BYTES:
        return False
    r = int.from_bytes(signature[:P256_BYTES], "big")
    s = int.from_bytes(signature[P256_BYTES:], "big")
    try:
        key.verify(encode_dss_signature(r, s), envelope.signing_input, ES256)
    except InvalidSignature:
        return False
    return True


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
