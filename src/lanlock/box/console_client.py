"""The box's side of the console protocol (docs/console-protocol.md): pairing and status reports."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import pki
from lanlock.box.settings import BoxConfig
from lanlock.console_wire import (
    BOX_HEADER,
    SIGNATURE_HEADER,
    STATUS_PATH,
    TIME_HEADER,
    PairAnswer,
    PairPayload,
    StatusReport,
)
from lanlock.jws import MalformedRequest, signed_body
from lanlock.links import body_signature

log = logging.getLogger("lanlock.box.console")
TIMEOUT = 10.0
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class PairingError(Exception):
    """Pairing did not work; the message says why and what to do."""


@dataclass(frozen=True)
class Pairing(PairAnswer):
    """The console's answer, as the box keeps it."""

    def store_in(self, config: BoxConfig) -> None:
        """What pairing gives the box. Its own ``--cloud``, when given, still wins over the
        console's cloud: the agent reads the flag before the stored URL."""
        config.console_url, config.name = self.console_url, self.name
        config.db_uuid, config.enterprise_code = self.db_uuid, self.enterprise_code
        config.token = self.token
        config.cloud_url = self.cloud_url  # None: none of a previous console's, either


def check_url(url: str, what: str) -> None:
    """HTTPS, or plain HTTP to loopback only (development, tests, the demo)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise PairingError(f"{url!r} is not a URL") from exc
    if parsed.scheme == "https" or (parsed.scheme == "http" and parsed.host in LOOPBACK_HOSTS):
        return
    raise PairingError(f"the {what} URL must be https:// (plain http only on loopback): {url}")


def pair(
    link: str,
    device_key: ec.EllipticCurvePrivateKey,
    name: str,
    address: str,
    version: str,
    verify: Any = True,
) -> Pairing:
    """Redeem a one-time pairing link made by the console."""
    check_url(link, "pairing link")
    body = _pairing_request(link, device_key, name, address, version)
    try:
        response = httpx.post(
            link,
            content=body,
            headers={"Content-Type": "application/jose+json"},
            timeout=TIMEOUT,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        raise PairingError(f"cannot reach the console: {type(exc).__name__}: {exc}") from None
    answer = _json(response)
    if response.status_code != 200:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise PairingError(detail or f"the console answered HTTP {response.status_code}")
    try:
        pairing = Pairing.from_json(answer)
    except MalformedRequest as exc:
        raise PairingError(str(exc)) from None
    check_url(pairing.console_url, "console")
    if pairing.cloud_url is not None:
        check_url(str(pairing.cloud_url), "cloud")
    return pairing


def _pairing_request(
    link: str, device_key: ec.EllipticCurvePrivateKey, name: str, address: str, version: str
) -> bytes:
    """Signed by the device key (the console binds the box_id to it) for this one link (a copy
    captured on its way cannot pair through another); the link's code itself, a secret, is named
    by its SHA-256 only, as the console keeps it."""
    code = httpx.URL(link).path.rsplit("/", 1)[-1]
    payload = PairPayload(
        box_id=pki.box_id_for(device_key.public_key()),
        name=name,
        address=address,
        version=version,
        link_code_sha256=hashlib.sha256(code.encode()).hexdigest(),
    )
    return signed_body(device_key, payload.to_json())


def report(console_url: str, token: str, status: StatusReport, verify: Any = True) -> str:
    """Send one signed status report; "ok", "removed" (forget the console) or "failed"."""
    body = json.dumps(status.to_json(), separators=(",", ":")).encode()
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        BOX_HEADER: status.box_id,
        TIME_HEADER: str(now),
        SIGNATURE_HEADER: body_signature(bytes.fromhex(token), now, body),
    }
    try:
        response = httpx.post(
            console_url.rstrip("/") + STATUS_PATH,
            content=body,
            headers=headers,
            timeout=TIMEOUT,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        log.warning("status report to the console failed: %s: %s", type(exc).__name__, exc)
        return "failed"
    if response.status_code == 410:
        return "removed"
    if response.status_code != 200:
        log.warning("the console refused the status report: HTTP %s", response.status_code)
        return "failed"
    return "ok"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
