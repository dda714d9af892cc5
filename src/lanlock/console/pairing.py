"""Pairing (docs/console-protocol.md §1): one-time links, and the box's call that uses one.

A link is ``<console URL>/iot/pair/<code>``, the code 32 random bytes (base64url); the store
keeps only the code's SHA-256, so that reading the store never yields a usable link. Using a link
and (re)writing the box's row with a fresh token happen in one transaction, with the link's row
locked: two boxes racing for one link get one success and one 410.

A link lets a box join, never take another box's place: the request is signed by the box's device
key (``lanlock.jws``, as the box signs its requests to the cloud) for that one link, its box_id is
the one the key derives, and the console keeps the key with the box.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lanlock import defaults, pki
from lanlock.console import protocol, record
from lanlock.console.models import ConsoleRecord, PairedBox, PairingCode
from lanlock.console.protocol import ApiError, refusal
from lanlock.console.record import SettingsError
from lanlock.console_wire import NAME_CHARS, TOKEN_BYTES, PairAnswer, PairPayload
from lanlock.jws import Unauthorized
from lanlock.store import Store
from lanlock.store.types import utcnow

log = logging.getLogger("lanlock.console")

LIFETIME = dt.timedelta(minutes=15)
PAIR_PATH = "/iot/pair/"
# Used and expired codes are kept a day, so that a late box hears "expired" (410), not 404.
KEPT_AFTER_EXPIRY = dt.timedelta(days=1)
_CODE = re.compile(r"[A-Za-z0-9_-]{43}")
NO_SUBSCRIPTION = "set the subscription code in the console's settings first"


@dataclass(frozen=True)
class PairingLink:
    url: str
    expires_at: dt.datetime

    def as_dict(self) -> dict[str, str]:
        return {"link": self.url, "expires_at": self.expires_at.isoformat()}


def new_link(store: Store, name: str | None = None) -> PairingLink:
    """A one-time link, valid 15 minutes, for the box that uses it first.

    ``name`` is the admin's name for that box; :class:`SettingsError` when it cannot be one.
    """
    name = checked_name(name)
    code = secrets.token_urlsafe(32)
    now = utcnow()
    expires_at = now + LIFETIME
    with store.transaction() as session:
        session.execute(delete(PairingCode).where(PairingCode.expires_at < now - KEPT_AFTER_EXPIRY))
        session.add(
            PairingCode(code_hash=_hash(code), name=name, created_at=now, expires_at=expires_at)
        )
        base = console_url(record.in_session(session))
    return PairingLink(base + PAIR_PATH + code, expires_at)


def checked_name(name: str | None) -> str | None:
    value = (name or "").strip()
    if len(value) > NAME_CHARS or not value.isprintable():
        raise SettingsError(f"a box's name has at most {NAME_CHARS} printable characters")
    return value or None


def console_url(console: ConsoleRecord) -> str:
    """The URL boxes reach the console at, as ``serve`` recorded it."""
    return console.public_url or defaults.CONSOLE_URL


def pair(store: Store, code: str, body: bytes) -> dict[str, Any]:
    """The box's ``POST /iot/pair/<code>``: the answer of §1, or an :class:`ApiError`.

    A body that is not a pairing request, and a console without a subscription code, leave the
    link unused. A request that does not prove the box it names, or names a box on record with
    another key, spends it: whoever holds a leaked link gets one try, and the admin makes a new
    link for the real box.
    """
    if not _CODE.fullmatch(code):
        raise _unknown_link()
    request = protocol.pair_request(body)
    now = utcnow()
    with store.transaction() as session:
        link = session.execute(
            select(PairingCode).where(PairingCode.code_hash == _hash(code)).with_for_update()
        ).scalar_one_or_none()
        if link is None:
            raise _unknown_link()
        if link.used_at is not None or link.expires_at <= now:
            raise refusal(410, "this pairing link expired or was used already; make a new one")
        console = record.in_session(session)
        if not console.enterprise_code:
            # Checked before the link is used: it works once the admin has set the code.
            raise refusal(409, NO_SUBSCRIPTION)
        link.used_at, link.used_by = now, request.payload.box_id
        try:
            device_key_der = _proven_key(request, link)
            box = _paired_box(session, request.payload, device_key_der, link.name, now)
        except ApiError as exc:
            refused = exc  # raised once the transaction has kept the link spent
        else:
            return PairAnswer(
                console_url=console_url(console),
                db_uuid=console.db_uuid,
                enterprise_code=console.enterprise_code,
                name=box.name,
                token=box.token,
                cloud_url=console.cloud_url,
            ).to_json()
    # The admin, whose box will hear "used already", learns why from the log.
    log.warning("a pairing link was spent by a refused request: %s", refused.body["detail"])
    raise refused


def _proven_key(request: protocol.PairRequest, link: PairingCode) -> bytes:
    """The device key (DER) that signed ``request`` for this very link; else a 401 refusal."""
    try:
        device_key = request.signer()
    except Unauthorized as exc:
        raise refusal(401, str(exc)) from None
    # A request captured on its way to another link must not pair through this one.
    if not secrets.compare_digest(request.payload.link_code_sha256, link.code_hash):
        raise refusal(401, "the request was signed for another pairing link than this one")
    return pki.public_key_der(device_key)


def _paired_box(
    session: Session,
    request: PairPayload,
    device_key_der: bytes,
    given_name: str | None,
    now: dt.datetime,
) -> PairedBox:
    """The box's row with its key and a fresh token; a box paired again starts over (docs §1).

    The box itself may pair again: it holds the key on record. A box_id is derived from its key,
    so another key on record means a record the console cannot vouch for: only the admin's
    removal clears it. A box on record without a key was paired before pairing was signed; the
    key that derives its box_id is its own.
    """
    box = session.get(PairedBox, request.box_id, with_for_update=True)
    if box is None:
        box = PairedBox(box_id=request.box_id)
        session.add(box)
    elif box.removed_at is None and box.device_key_der not in (None, device_key_der):
        raise refusal(
            409,
            f"box {request.box_id} is paired with this console under another device key; "
            "the console's admin must remove it before it can pair again",
        )
    box.device_key_der = device_key_der
    box.name = given_name or request.name or f"IoT box {request.box_id[:8]}"
    box.token = secrets.token_hex(TOKEN_BYTES)
    box.address, box.version = request.address, request.version
    box.state = "paired"
    box.url = box.urls = box.code = box.reason = None
    box.not_after = box.not_before = box.reported_at = box.removed_at = None
    box.paired_at = box.last_seen_at = now
    return box


def _unknown_link() -> ApiError:
    return refusal(404, "not a pairing link of this console")


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
