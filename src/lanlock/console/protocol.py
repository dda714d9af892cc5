"""The bodies boxes send to the console (docs/console-protocol.md), read strictly.

Everything a box sends ends up on the admin's pages, so every field is checked here: strings of
bounded length without control characters, a ``box_id`` shaped as docs/design.md §3 makes it, an
HTTPS URL that can only be an origin (it becomes a link, and the base of the signed log link), an
ISO-8601 ``not_after``. Unknown fields are ignored, so that newer boxes can add some.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import josepy
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import jws

BOX_ID = re.compile(r"[a-z2-7]{26}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_CHARS = 200
SHORT_CHARS = 64
URL_CHARS = 300


class ApiError(Exception):
    """An answer other than success: its HTTP status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def refusal(status: int, detail: str) -> ApiError:
    return ApiError(status, {"detail": detail})


@dataclass(frozen=True)
class PairRequest:
    """A pairing request as the box sent it; what it proves is :meth:`signer`'s to say."""

    box_id: str
    name: str
    address: str | None
    version: str | None
    # The SHA-256 (hex) of the code of the link it was signed for: it pairs through that one only.
    link_code_sha256: str
    envelope: josepy.JWS

    def signer(self) -> ec.EllipticCurvePublicKey:
        """The device key that signed the request, and whose box_id it names; else Unauthorized."""
        device_key = jws.signing_key(self.envelope)
        jws.check_box_id(self.box_id, device_key)
        return device_key


@dataclass(frozen=True)
class StatusReport:
    box_id: str
    name: str
    address: str | None
    url: str | None
    state: str
    code: str | None
    reason: str | None
    not_after: dt.datetime | None
    version: str | None


def pair_request(body: bytes) -> PairRequest:
    """The box's signed pairing request, read; its signature is not checked yet (see
    :meth:`PairRequest.signer`): a body that is not one is refused here, before any link is used."""
    try:
        envelope = jws.envelope_of(_object(body))
        fields = jws.payload_object(envelope.payload)
    except jws.MalformedRequest as exc:  # nesting too deep included (lanlock.jws.NOT_JSON)
        raise refusal(400, str(exc)) from None
    link_code_sha256 = fields.get("link_code_sha256")
    if not isinstance(link_code_sha256, str) or not SHA256_HEX.fullmatch(link_code_sha256):
        raise refusal(400, "link_code_sha256: the SHA-256 (lower-case hex) of the link's code")
    return PairRequest(
        box_id=_box_id(fields),
        name=_text(fields, "name", NAME_CHARS) or "",
        address=_text(fields, "address", SHORT_CHARS),
        version=_text(fields, "version", SHORT_CHARS),
        link_code_sha256=link_code_sha256,
        envelope=envelope,
    )


def status_report(body: bytes) -> StatusReport:
    fields = _object(body)
    state = _text(fields, "state", 32)
    if not state:
        raise refusal(400, "state: a non-empty string is required")
    return StatusReport(
        box_id=_box_id(fields),
        name=_text(fields, "name", NAME_CHARS) or "",
        address=_text(fields, "address", SHORT_CHARS),
        url=_https_origin(_text(fields, "url", URL_CHARS)),
        state=state,
        code=_text(fields, "code", SHORT_CHARS),
        reason=_text(fields, "reason", SHORT_CHARS),
        not_after=_moment(_text(fields, "not_after", SHORT_CHARS)),
        version=_text(fields, "version", SHORT_CHARS),
    )


def _object(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except jws.NOT_JSON:
        raise refusal(400, "the body is not JSON (or is nested too deeply)") from None
    if not isinstance(fields, dict):
        raise refusal(400, "the body must be a JSON object")
    return fields


def _box_id(fields: dict[str, Any]) -> str:
    value = fields.get("box_id")
    if not isinstance(value, str) or not BOX_ID.fullmatch(value):
        raise refusal(400, "box_id: 26 lower-case base32 characters are required")
    return value


def _text(fields: dict[str, Any], key: str, limit: int) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or CONTROL.search(value):
        raise refusal(400, f"{key}: a string of at most {limit} printable characters, or null")
    return value.strip() or None


def _https_origin(value: str | None) -> str | None:
    """``https://host[:port]/``, the only shape a box's URL has (docs/design.md §2)."""
    if value is None:
        return None
    parts = plain_url(value, ("https",))
    if parts is None or parts.path not in ("", "/"):
        raise refusal(400, "url: an https://host[:port]/ URL, or null")
    return f"https://{parts.netloc}/"


def plain_url(value: str, schemes: tuple[str, ...]) -> SplitResult | None:
    """``value`` split, if it is a URL of one of ``schemes`` with a host and nothing hidden in
    it (no user, query, fragment or control character); else None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if (
        parts.scheme not in schemes
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or CONTROL.search(value)
    ):
        return None
    return parts


def _moment(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise refusal(400, "not_after: an ISO-8601 time, or null") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
