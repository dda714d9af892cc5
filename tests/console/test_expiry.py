"""The early warning's rule (lanlock.console.expiry) at its edges, at a fixed moment: a third of
the lifetime left, a lifetime the box did not report, and what a warning tells to do."""

from __future__ import annotations

import dataclasses
import datetime as dt

from lanlock import errors
from lanlock.console.boxes import BoxCard
from lanlock.console.expiry import (
    NOT_RENEWING_ADVICE,
    SILENT_ADVICE,
    UNKNOWN_LIFETIME_MARGIN,
    duration,
    early_warning,
)

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
LIFETIME = dt.timedelta(days=90)
SECOND = dt.timedelta(seconds=1)


def card(left: dt.timedelta, lifetime: dt.timedelta | None = LIFETIME, **fields) -> BoxCard:
    """A box that reported a moment ago a certificate with ``left`` to run."""
    not_after = NOW + left
    base = BoxCard(
        box_id="a" * 26,
        name="Till",
        address="10.0.0.7",
        url="https://10-0-0-7.abcdefghijklmnop.iot.test/",
        urls=("https://10-0-0-7.abcdefghijklmnop.iot.test/",),
        state="valid",
        code=None,
        reason=None,
        not_after=not_after,
        not_before=None if lifetime is None else not_after - lifetime,
        version="0.1.0",
        paired_at=NOW - dt.timedelta(days=100),
        last_seen_at=NOW - dt.timedelta(seconds=30),
        removed=False,
    )
    return dataclasses.replace(base, **fields)


def test_the_warning_starts_when_less_than_a_third_is_left():
    assert early_warning(card(LIFETIME / 3), NOW) is None
    warning = early_warning(card(LIFETIME / 3 - SECOND), NOW)
    assert warning is not None
    assert warning.cause == "not_renewing" and warning.fix == NOT_RENEWING_ADVICE.fix
    assert warning.expires_in_seconds == int((LIFETIME / 3 - SECOND).total_seconds())
    assert warning.lifetime_known and not warning.expired


def test_without_a_lifetime_the_warning_starts_in_the_last_seven_days():
    for lifetime in (None, dt.timedelta(0), -LIFETIME):  # not reported, or nonsense
        assert early_warning(card(UNKNOWN_LIFETIME_MARGIN, lifetime), NOW) is None
        warning = early_warning(card(UNKNOWN_LIFETIME_MARGIN - SECOND, lifetime), NOW)
        assert warning is not None and not warning.lifetime_known


def test_expired_certificates_are_flagged_whatever_the_box_reported():
    for lifetime in (LIFETIME, None):
        warning = early_warning(card(-SECOND, lifetime), NOW)
        assert warning is not None and warning.expired
        assert warning.summary == "Certificate expired 1 s ago, not renewing"
    assert early_warning(card(dt.timedelta(0)), NOW).expired  # type: ignore[union-attr]


def test_an_error_is_what_the_warning_explains_even_from_a_silent_box():
    silent = {"last_seen_at": NOW - dt.timedelta(hours=5)}
    failing = card(
        dt.timedelta(days=3),
        state="error",
        code=errors.LOAD_REQUEST_NO_RESULT,
        reason=errors.BOX_REVOKED,
        **silent,
    )
    warning = early_warning(failing, NOW)
    assert warning is not None
    assert (warning.cause, warning.code, warning.reason) == (
        "error",
        errors.LOAD_REQUEST_NO_RESULT,
        errors.BOX_REVOKED,
    )
    assert warning.meaning == errors.refusal(errors.BOX_REVOKED).meaning
    assert warning.fix == errors.refusal(errors.BOX_REVOKED).fix
    quiet = early_warning(card(dt.timedelta(days=3), **silent), NOW)
    assert quiet is not None and quiet.cause == "silent" and quiet.fix == SILENT_ADVICE.fix


def test_no_warning_without_a_certificate_or_for_a_box_being_removed():
    assert early_warning(card(-SECOND, removed=True), NOW) is None
    assert early_warning(card(-SECOND, not_after=None, not_before=None), NOW) is None


def test_durations_use_the_unit_a_reader_needs():
    shown = [duration(s) for s in (0, 59, 60, 3599, 3600, 2 * 86400 - 1, 2 * 86400, 90 * 86400)]
    assert shown == ["0 s", "59 s", "1 min", "59 min", "1 h", "47 h", "2 days", "90 days"]
