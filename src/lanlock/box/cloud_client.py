"""The box's side of the x509 request (docs/design.md §3, §4): sign, send, read the answer.

The request is a flattened JWS (``lanlock.jws``), as an ACME client makes one: ES256, the device
key as ``jwk`` in the protected header, a fresh ``iat`` and random ``nonce`` inside.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import pki
from lanlock.jws import signed_body
from lanlock.wire import X509Payload, X509Result, retry_after_seconds


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode("ascii").rstrip("=")


def x509_payload(
    device_key: ec.EllipticCurvePrivateKey,
    db_uuid: str,
    enterprise_code: str,
    csr_pem: str,
    address: str | None,
) -> dict[str, Any]:
    return X509Payload(
        box_id=pki.box_id_for(device_key.public_key()),
        db_uuid=db_uuid,
        enterprise_code=enterprise_code,
        csr_pem=csr_pem,
        iat=int(time.time()),
        nonce=new_nonce(),
        address=address,
    ).to_json()


@dataclass(frozen=True)
class CloudAnswer:
    """The cloud's answer to one request: a result, a refusal, or an HTTP status."""

    status: int
    result: X509Result | None = None
    refusal_code: str | None = None
    message: str | None = None
    hint: dict[str, str] | None = None  # a refusal's extra fields, e.g. the box's scope and zone
    retry_after: float | None = None  # seconds the cloud asks the box to wait (429, 503)


def post_x509(
    client: httpx.Client,
    cloud_url: str,
    device_key: ec.EllipticCurvePrivateKey,
    payload: dict[str, Any],
) -> CloudAnswer:
    """Send one signed request; network and TLS errors propagate as ``httpx.HTTPError``."""
    response = client.post(
        cloud_url.rstrip("/") + "/iot/x509",
        content=signed_body(device_key, payload),
        headers={"Content-Type": "application/jose+json"},
    )
    return read_answer(response)


def _short_code(code: object) -> str | None:
    """A status answer's ``code`` (``issuance_limited``), shown on the homepage as the reason:
    kept only when it is a short printable word."""
    if isinstance(code, str) and 0 < len(code) <= 64 and code.isascii() and code.isprintable():
        return code
    return None


def read_answer(response: httpx.Response) -> CloudAnswer:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        return CloudAnswer(
            response.status_code,
            refusal_code=_short_code(body.get("code") if isinstance(body, dict) else None),
            message=detail if isinstance(detail, str) else None,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        hint = {k: v for k, v in error.items() if k in ("scope", "zone") and isinstance(v, str)}
        return CloudAnswer(
            200,
            refusal_code=str(error.get("code")),
            message=error.get("message"),
            hint=hint or None,
        )
    sent = body.get("result") if isinstance(body, dict) else None
    result = X509Result.from_json(sent)
    if result is None and sent is not None:
        return CloudAnswer(200, message="the cloud's answer is incomplete")
    return CloudAnswer(200, result=result)
