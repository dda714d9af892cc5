"""The early warning: a box whose certificate runs out while it does not renew it (issue #10).

A box renews at two thirds of its certificate's lifetime at the latest (``lanlock.renewal``),
and reports at every change and every minute (docs/console-protocol.md §2). So once less than a
third of the lifetime is left, a box that renews has already reported its next certificate: a
last report that still names this one means the box is not renewing it — it reports an error
(the catalogue of ``lanlock.errors`` says why and what to do), it reports ``valid`` and does
not try, or it has stopped reporting. An expired certificate is flagged the same way. (A CA's
renewal information, ACME ARI, may move a box's renewal later, up to nine tenths of the
lifetime: such a box is flagged from two thirds until it renews.)

A box that does not report ``not_before`` (an older box) has no known lifetime: it is flagged
only under :data:`UNKNOWN_LIFETIME_MARGIN` left. A certificate of 30 days or more (90 from the
embedded CA and Let's Encrypt) is renewed at least ten days before its end
(``lanlock.renewal.RENEW_MARGIN``), so such a box with less than seven days left has been failing
for three days. An older box with shorter certificates may be flagged before it renews (with
less than seven days' lifetime, always).

:func:`early_warning` is the one rule; the pages and ``lanlock console boxes`` show its result.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lanlock import renewal
from lanlock.store.types import utcnow

if TYPE_CHECKING:  # boxes.py imports this module to give each card its warning
    from lanlock.console.boxes import BoxCard

UNKNOWN_LIFETIME_MARGIN = dt.timedelta(days=7)
# The part of the lifetime still left when a box renews: a third.
LIFETIME_FRACTION_LEFT = 1 - renewal.RENEW_FRACTION

ERROR, SILENT, NOT_RENEWING = "error", "silent", "not_renewing"
CAUSE_WORDS = {
    ERROR: "renewal failing",
    SILENT: "no report from the box",
    NOT_RENEWING: "not renewing",
}


@dataclass(frozen=True)
class Advice:
    """What a warning means and what to do: an error's catalogue entry, else one written here
    for a box that reports no error (the catalogue holds only codes)."""

    meaning: str
    fix: tuple[str, ...]


SILENT_ADVICE = Advice(
    meaning=(
        "The box has stopped reporting to the console while its certificate runs out, so the "
        "console cannot tell whether it renews it."
    ),
    fix=(
        "Check that the box is switched on and connected to its network.",
        "Open the box's homepage: it shows the box's own state, and opening it makes the box "
        "check its certificate at once.",
        "If the box is on but still does not report, check that it reaches this console's "
        "URL; pairing it again from this console gives it that URL anew.",
    ),
)
NOT_RENEWING_ADVICE = Advice(
    meaning=(
        "The box reports a certificate past the time it renews it (two thirds of its lifetime) "
        "and no error: it has not asked for the next one."
    ),
    fix=(
        "Open the box's homepage: opening it makes the box check its certificate at once.",
        "Set the box's date and time, preferably from a time server (NTP): a box whose clock "
        "is behind renews late.",
        "Restart the box, and update its software if the warning stays.",
    ),
)


@dataclass(frozen=True)
class EarlyWarning:
    """A box's certificate runs out (or ran out) and the box is not renewing it."""

    cause: str  # ERROR, SILENT or NOT_RENEWING
    code: str | None  # the last report's error code, as the catalogue shows it
    reason: str | None  # the cloud's refusal reason the last report gave
    meaning: str
    fix: tuple[str, ...]
    expires_at: dt.datetime
    expires_in_seconds: int  # negative once expired
    warns_within_seconds: int  # the time left that starts the warning: a third of the lifetime
    lifetime_known: bool  # False: an older box, warned within UNKNOWN_LIFETIME_MARGIN

    @property
    def expired(self) -> bool:
        return self.expires_in_seconds <= 0

    @property
    def time_left(self) -> str:
        """``expires in 12 days``, ``expired 3 h ago``."""
        if self.expired:
            return f"expired {duration(-self.expires_in_seconds)} ago"
        return f"expires in {duration(self.expires_in_seconds)}"

    @property
    def summary(self) -> str:
        """One line for a heading or the CLI: ``Certificate expires in 12 days, not renewing``."""
        return f"Certificate {self.time_left}, {CAUSE_WORDS[self.cause]}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "code": self.code,
            "reason": self.reason,
            "meaning": self.meaning,
            "fix": list(self.fix),
            "expires_at": self.expires_at.isoformat(),
            "expires_in_seconds": self.expires_in_seconds,
            "warns_within_seconds": self.warns_within_seconds,
            "expired": self.expired,
            "lifetime_known": self.lifetime_known,
            "summary": self.summary,
        }


def early_warning(card: BoxCard, now: dt.datetime | None = None) -> EarlyWarning | None:
    """The box's warning, or None while its last report is a certificate with more than a third
    of its lifetime left (or no certificate at all, which its error already explains)."""
    if card.removed or card.not_after is None:
        return None
    now = now or utcnow()
    margin, lifetime_known = _warning_margin(card.not_before, card.not_after)
    left = card.not_after - now
    if left >= margin:
        return None
    described = card.help
    cause, advice = _cause(described, card, now)
    return EarlyWarning(
        cause=cause,
        code=described["code"] if described else None,
        reason=card.reason,
        meaning=advice.meaning,
        fix=advice.fix,
        expires_at=card.not_after,
        expires_in_seconds=int(left.total_seconds()),
        warns_within_seconds=int(margin.total_seconds()),
        lifetime_known=lifetime_known,
    )


def _warning_margin(
    not_before: dt.datetime | None, not_after: dt.datetime
) -> tuple[dt.timedelta, bool]:
    """How much time left starts the warning, and whether the lifetime is known."""
    if not_before is None or not_before >= not_after:
        return UNKNOWN_LIFETIME_MARGIN, False
    return (not_after - not_before) * LIFETIME_FRACTION_LEFT, True


def _cause(described: dict[str, Any] | None, card: BoxCard, now: dt.datetime) -> tuple[str, Advice]:
    # An error code is the best clue even from a box gone silent: it says what failed last.
    if described is not None:
        # With the cloud's reason, its entry is the one that says what to do (the code's steps
        # only say "follow the reason's").
        entry = described["reason"] or described
        return ERROR, Advice(entry["meaning"], tuple(entry["fix"]))
    if card.quiet_for(now) is not None:
        return SILENT, SILENT_ADVICE
    return NOT_RENEWING, NOT_RENEWING_ADVICE


def duration(seconds: int) -> str:
    """``40 s``, ``5 min``, ``3 h``, ``12 days``: the unit a reader needs at that size."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
