"""The x509 exchange between a box and the cloud (docs/design.md §4), defined once for both.

The box builds its request's payload and reads the cloud's result with these classes; the cloud
checks the payload and writes its result with the same ones. A field renamed, added or retyped
here changes both sides at once: they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import re
from dataclasses import dataclass
from typing import Any

from lanlock.jws import MalformedRequest

NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # 16 random bytes or more, base64url
MAX_ADDRESS_CHARS = 64
LATEST_IAT = 2**53  # beyond any clock, and still exact as a float (an int past it made a 500)
# The payload's required fields: their type and, for text, the most characters they may hold.
REQUIRED: dict[str, tuple[type, int]] = {
    "box_id": (str, 64),
    "db_uuid": (str, 64),
    "enterprise_code": (str, 128),
    "csr_pem": (str, 16384),
    "iat": (int, 0),
    "nonce": (str, 128),
}


@dataclass(frozen=True)
class X509Payload:
    """What a box signs when it asks for a certificate (the JWS payload)."""

    box_id: str
    db_uuid: str
    enterprise_code: str
    csr_pem: str
    iat: int  # seconds since the epoch, by the box's clock
    nonce: str
    address: str | None = None  # the box's LAN address, for the vendor's records

    def to_json(self) -> dict[str, Any]:
        # Its fields are scalars: a copy of them is dataclasses.asdict(self), which copies
        # deeply and cost the cloud about 40 µs on every request; this takes one.
        return dict(vars(self))

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> X509Payload:
        """The payload, once every field has its type and size; else MalformedRequest."""
        missing = [name for name in REQUIRED if name not in payload]
        if missing:
            raise MalformedRequest(f"the payload lacks {', '.join(missing)}")
        for name, (kind, longest) in REQUIRED.items():
            value = payload[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise MalformedRequest(f"payload field {name} must be a {kind.__name__}")
            if kind is str and not 0 < len(value) <= longest:
                raise MalformedRequest(f"payload field {name} is empty or too long")
            if kind is str and not _is_utf8(value):  # JSON's "\ud800" escapes make such text
                raise MalformedRequest(f"payload field {name} is not valid Unicode text")
        if not 0 <= payload["iat"] < LATEST_IAT:
            raise MalformedRequest("payload field iat must be a Unix time in seconds")
        if not NONCE_PATTERN.match(payload["nonce"]):
            raise MalformedRequest("nonce must be at least 16 random bytes in base64url")
        address = payload.get("address")
        if address is not None and not (
            isinstance(address, str)
            and len(address) <= MAX_ADDRESS_CHARS
            and address.isascii()
            and address.isprintable()
        ):
            raise MalformedRequest("payload field address must be a string (an IP address)")
        return cls(**{name: payload[name] for name in REQUIRED}, address=address)


@dataclass(frozen=True)
class X509Result:
    """What the cloud answers with a certificate: ``{"result": {...}}``."""

    x509_pem: str  # the leaf
    chain_pem: str  # the intermediates, leaf excluded
    subject_cn: str  # *.<scope>.<zone>
    scope: str
    zone: str
    not_after: str  # ISO 8601, UTC
    # ISO 8601, UTC: when the box should renew this certificate (lanlock.renewal); absent from
    # clouds before it, and then the box keeps to its own rule.
    renew_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, result: object) -> X509Result | None:
        """The result, or None when it lacks a field or a field is not text."""
        if not isinstance(result, dict):
            return None
        required = [f.name for f in dataclasses.fields(cls) if f.name != "renew_at"]
        if not all(isinstance(result.get(name), str) for name in required):
            return None
        renew_at = result.get("renew_at")
        return cls(
            **{name: result[name] for name in required},
            renew_at=renew_at if isinstance(renew_at, str) else None,
        )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header as seconds from now (RFC 9110 §10.2.3: seconds or an HTTP
    date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
