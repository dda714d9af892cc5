"""The messages between a box and its console (docs/console-protocol.md), defined once for both.

The box writes its pairing request and its status reports with these classes and reads the
console's pairing answer with one; the console reads the request and the reports and writes the
answer with the same ones, as :mod:`lanlock.wire` does for the x509 exchange. A field renamed,
added or bounded anew here changes both sides at once: they cannot drift apart.

Everything a box sends ends up on the console admin's pages, so reading it is strict: strings of
bounded length without control characters, a ``box_id`` shaped as docs/design.md §3 makes it, an
HTTPS URL that can only be an origin (it becomes a link, and the base of the signed log link), an
ISO-8601 ``not_after``. A rule broken is a :class:`~lanlock.jws.MalformedRequest` whose text names
it (the console answers 400 with it). Unknown fields are ignored, so that newer boxes can add some.

``lanlock box`` loads this module: it imports nothing beyond the standard library and the floor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import SplitResult, urlsplit

from lanlock.jws import MalformedRequest

STATUS_PATH = "/iot/status"
BOX_HEADER = "X-Lanlock-Box"
TIME_HEADER = "X-Lanlock-Time"
SIGNATURE_HEADER = "X-Lanlock-Signature"
TOKEN_BYTES = 32  # the per-box token, sent as twice as many hex characters

BOX_ID = re.compile(r"[a-z2-7]{26}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_CHARS = 200
SHORT_CHARS = 64
STATE_CHARS = 32
URL_CHARS = 300
MAX_URLS = 16  # a box's LAN addresses: a few interfaces, each with an IPv4 and an IPv6 or two


@dataclass(frozen=True)
class PairPayload:
    """What a box signs to pair through one link: the JWS payload of ``POST <link>`` (§1)."""

    box_id: str
    name: str
    address: str | None
    version: str | None
    # The SHA-256 (hex) of the code of the link it was signed for: it pairs through that one only.
    link_code_sha256: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> PairPayload:
        link_code_sha256 = fields.get("link_code_sha256")
        if not isinstance(link_code_sha256, str) or not SHA256_HEX.fullmatch(link_code_sha256):
            raise MalformedRequest(
                "link_code_sha256: the SHA-256 (lower-case hex) of the link's code"
            )
        return cls(
            box_id=_box_id(fields),
            name=_text(fields, "name", NAME_CHARS) or "",
            address=_text(fields, "address", SHORT_CHARS),
            version=_text(fields, "version", SHORT_CHARS),
            link_code_sha256=link_code_sha256,
        )


@dataclass(frozen=True)
class PairAnswer:
    """What the console answers a pairing that worked (§1)."""

    console_url: str
    db_uuid: str
    enterprise_code: str
    name: str
    token: str  # hex of TOKEN_BYTES random bytes, shared by this box and the console only
    cloud_url: str | None = None  # the cloud the console names for its boxes, if it names one

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, answer: Any) -> Self:
        """The answer, once it holds every field and a token; else MalformedRequest."""
        required = [f.name for f in dataclasses.fields(cls) if f.name != "cloud_url"]
        try:
            values = {name: answer[name] for name in required}
        except (KeyError, TypeError):  # a field missing, or not a JSON object at all
            raise MalformedRequest("the console's answer lacks what pairing needs") from None
        token = values["token"]
        if not (isinstance(token, str) and len(token) == 2 * TOKEN_BYTES):
            raise MalformedRequest("the console's answer has no valid token")
        return cls(**values, cloud_url=answer.get("cloud_url") or None)


@dataclass(frozen=True)
class StatusReport:
    """What a box reports of its state: the body of ``POST /iot/status`` (§2)."""

    box_id: str
    name: str
    address: str | None
    url: str | None  # https://<address-label>.<scope>.<zone>[:port]/ once the box has one
    state: str  # valid | error | checking
    code: str | None
    reason: str | None
    not_after: str | None  # ISO 8601
    version: str | None
    # With not_after, the certificate's lifetime: the console judges "a third left" from both.
    not_before: str | None = None  # ISO 8601
    # One https://<address-label>.<scope>.<zone>[:port]/ per LAN address the box has (IPv4 and
    # IPv6); ``url`` is the first of them, kept for consoles that read only it.
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["urls"] = list(self.urls)
        return fields

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> StatusReport:
        state = _text(fields, "state", STATE_CHARS)
        if not state:
            raise MalformedRequest("state: a non-empty string is required")
        return cls(
            box_id=_box_id(fields),
            name=_text(fields, "name", NAME_CHARS) or "",
            address=_text(fields, "address", SHORT_CHARS),
            url=_https_origin(_text(fields, "url", URL_CHARS)),
            state=state,
            code=_text(fields, "code", SHORT_CHARS),
            reason=_text(fields, "reason", SHORT_CHARS),
            not_after=_iso_time("not_after", _text(fields, "not_after", SHORT_CHARS)),
            version=_text(fields, "version", SHORT_CHARS),
            not_before=_iso_time("not_before", _text(fields, "not_before", SHORT_CHARS)),
            urls=_https_origins(fields.get("urls")),
        )

    def not_after_time(self) -> dt.datetime | None:
        """``not_after`` as an aware time (UTC when the box wrote none)."""
        return _aware(self.not_after)

    def not_before_time(self) -> dt.datetime | None:
        """``not_before`` as an aware time (UTC when the box wrote none)."""
        return _aware(self.not_before)


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


def _box_id(fields: dict[str, Any]) -> str:
    value = fields.get("box_id")
    if not isinstance(value, str) or not BOX_ID.fullmatch(value):
        raise MalformedRequest("box_id: 26 lower-case base32 characters are required")
    return value


def _text(fields: dict[str, Any], key: str, limit: int) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or CONTROL.search(value):
        raise MalformedRequest(f"{key}: a string of at most {limit} printable characters, or null")
    return value.strip() or None


def _https_origin(value: str | None) -> str | None:
    """``https://host[:port]/``, the only shape a box's URL has (docs/design.md §2)."""
    if value is None:
        return None
    parts = plain_url(value, ("https",))
    if parts is None or parts.path not in ("", "/"):
        raise MalformedRequest("url: an https://host[:port]/ URL, or null")
    return f"https://{parts.netloc}/"


def _https_origins(value: Any) -> tuple[str, ...]:
    """A list of at most ``MAX_URLS`` box URLs; absent (an older box) is none."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_URLS:
        raise MalformedRequest(f"urls: a list of at most {MAX_URLS} https://host[:port]/ URLs")
    origins = []
    for item in value:
        if not isinstance(item, str) or len(item) > URL_CHARS or CONTROL.search(item):
            raise MalformedRequest(f"urls: strings of at most {URL_CHARS} printable characters")
        origin = _https_origin(item)
        if origin is not None and origin not in origins:
            origins.append(origin)
    return tuple(origins)


def _iso_time(key: str, value: str | None) -> str | None:
    if value is not None:
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            raise MalformedRequest(f"{key}: an ISO-8601 time, or null") from None
    return value


def _aware(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    moment = dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
