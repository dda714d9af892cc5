"""Paired boxes: their signed status reports (docs/console-protocol.md §2), the cards the IoT app
shows, removal, and the signed "Download logs" links (§3)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from lanlock import errors
from lanlock.console import protocol
from lanlock.console.expiry import EarlyWarning, early_warning
from lanlock.console.models import PairedBox
from lanlock.console.protocol import refusal
from lanlock.console_wire import BOX_ID, StatusReport
from lanlock.links import body_signature_is_valid, sign_link
from lanlock.store import Store
from lanlock.store.types import utcnow

LOG_DOWNLOAD_PATH = "/logs/download"
LOG_LINK_SECONDS = 300
# Boxes report every minute: three missed reports make a card say so.
QUIET_AFTER = dt.timedelta(minutes=3)
UNAUTHENTICATED = "unknown box, bad signature, or a time more than 300 s off"


@dataclass(frozen=True)
class BoxCard:
    """What the IoT app shows of a box: never its token."""

    box_id: str
    name: str
    address: str | None
    url: str | None
    urls: tuple[str, ...]  # every HTTPS URL of the box, ``url`` first
    state: str
    code: str | None
    reason: str | None
    not_after: dt.datetime | None
    not_before: dt.datetime | None
    version: str | None
    paired_at: dt.datetime
    last_seen_at: dt.datetime
    removed: bool

    @classmethod
    def of(cls, box: PairedBox) -> BoxCard:
        return cls(
            box_id=box.box_id,
            name=box.name,
            address=box.address,
            url=box.url,
            # A row an older box last wrote has no list: its one URL is ``url``.
            urls=tuple(box.urls or ([box.url] if box.url else [])),
            state=box.state,
            code=box.code,
            reason=box.reason,
            not_after=box.not_after,
            not_before=box.not_before,
            version=box.version,
            paired_at=box.paired_at,
            last_seen_at=box.last_seen_at,
            removed=box.removed_at is not None,
        )

    @property
    def help(self) -> dict[str, Any] | None:
        """The catalogue entry of the box's error (the text the box and its CLI show)."""
        if not self.code and not self.reason:
            return None
        return errors.describe(self.code, self.reason)

    @property
    def https_ready(self) -> bool:
        return self.state == "valid" and bool(self.url)

    def quiet_for(self, now: dt.datetime | None = None) -> dt.timedelta | None:
        """How long the box has been silent, once that is longer than its reports allow."""
        silence = (now or utcnow()) - self.last_seen_at
        return silence if silence > QUIET_AFTER else None

    def warning(self, now: dt.datetime | None = None) -> EarlyWarning | None:
        """The early warning when the certificate runs out unrenewed (:mod:`.expiry`)."""
        return early_warning(self, now)

    def as_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        data = asdict(self)
        for key in ("not_after", "not_before", "paired_at", "last_seen_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["urls"] = list(self.urls)
        warning = self.warning(now)
        data["warning"] = warning.as_dict() if warning else None
        return data


def record_status(
    store: Store, box_id: str | None, timestamp: str | None, signature: str | None, body: bytes
) -> tuple[int, dict[str, Any]]:
    """``POST /iot/status``: ``(status, JSON body)``; refusals before any change as ApiError.

    The signature is checked before anything else is read or answered, and before a removed box
    is forgotten: only the box itself learns that it was removed, and a forger cannot make the
    console forget a box before the box has heard it.
    """
    if not box_id or not BOX_ID.fullmatch(box_id):
        raise refusal(401, UNAUTHENTICATED)
    with store.transaction() as session:
        box = session.get(PairedBox, box_id, with_for_update=True)
        if box is None or not body_signature_is_valid(
            bytes.fromhex(box.token), timestamp, body, signature
        ):
            raise refusal(401, UNAUTHENTICATED)
        if box.removed_at is not None:
            session.delete(box)
            return 410, {"removed": True}
        report = protocol.status_report(body)
        if report.box_id != box_id:
            raise refusal(400, "box_id differs from the X-Lanlock-Box header")
        moment = int(timestamp or 0)
        if box.reported_at is None or moment >= box.reported_at:
            _apply(box, report, moment)  # an older or replayed report changes nothing
    return 200, {"ok": True}


def _apply(box: PairedBox, report: StatusReport, moment: int) -> None:
    box.reported_at, box.last_seen_at = moment, utcnow()
    box.name = report.name or box.name
    box.address, box.url, box.state = report.address, report.url, report.state
    box.code, box.reason, box.not_after = report.code, report.reason, report.not_after_time()
    box.not_before, box.urls = report.not_before_time(), list(report.urls)
    box.version = report.version


def cards(store: Store) -> list[BoxCard]:
    with store.transaction() as session:
        rows = session.execute(select(PairedBox).order_by(PairedBox.name, PairedBox.box_id))
        return [BoxCard.of(box) for box in rows.scalars()]


def card_with_logs_link(
    store: Store, box_id: str, now: float | None = None
) -> tuple[BoxCard, str | None] | None:
    """A box's card and a "Download logs" link on its HTTPS URL (None without one)."""
    with store.transaction() as session:
        box = session.get(PairedBox, box_id)
        if box is None:
            return None
        card = BoxCard.of(box)
        if not card.url or card.removed:
            return card, None
        signed = sign_link(bytes.fromhex(box.token), LOG_DOWNLOAD_PATH, LOG_LINK_SECONDS, now)
        return card, card.url.rstrip("/") + signed


def remove(store: Store, box_id: str) -> bool:
    """Mark a box removed: its next report hears 410 and the row goes (docs §2)."""
    with store.transaction() as session:
        box = session.get(PairedBox, box_id, with_for_update=True)
        if box is None:
            return False
        box.removed_at = box.removed_at or utcnow()
        return True


def forget(store: Store, box_id: str) -> bool:
    """Delete a box's row now, for a removed box that never reports again."""
    with store.transaction() as session:
        box = session.get(PairedBox, box_id, with_for_update=True)
        if box is None:
            return False
        session.delete(box)
        return True
