"""The box's lifecycle over simulated weeks (bench/simulated_month.py, issue #10 item 1).

The real cloud service and real boxes, in one process, on an injected clock (time-machine) moved
from one box's next check to the next: no sleeps. Asserted for 6-day and 47-day certificates over
a month and for certificates of minutes over hours, from docs/design.md §8's rule (renew at two
thirds of the validity, or ten days before notAfter, whichever comes first; a valid box checks
again at least 60 s later): never a moment without a valid certificate after the first, every
renewal inside the certificate's validity after its half, one request per certificate and never
two within the box's 60-s floor (no storm), and as many renewals as the rule makes.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lanlock.renewal import CHECK_IN
from tests import benchscripts

pytest.importorskip("time_machine", reason="the simulated month needs time-machine")

DAY = 86400.0
FLOOR = 60.0  # docs/design.md §8: after `valid`, the next check is at least 60 s away
JITTER = 0.05  # ... at the renewal time, less up to 5 % of the time left
RENEW_FRACTION = 2 / 3  # the renewal time: two thirds of the validity after notBefore,
RENEW_MARGIN = 10 * DAY  # or ten days before notAfter, whichever comes first


@pytest.fixture(scope="module")
def month() -> ModuleType:
    return benchscripts.load("simulated_month")


def _renewal_offset(certificate: dict[str, float]) -> float:
    """Seconds from a certificate's installation to its renewal time, by the documented rule."""
    validity = certificate["not_after"] - certificate["not_before"]
    due = certificate["not_before"] + min(
        validity * RENEW_FRACTION, validity - min(RENEW_MARGIN, validity / 3)
    )
    return due - certificate["at"]


def _assert_lifecycle(report: dict[str, Any]) -> None:
    span = report["days"] * DAY
    for box in report["per_box"]:
        name = f"box {box['box']}"
        certificates = box["certificates"]
        assert certificates, f"{name} never got a certificate: {box['codes']}"
        assert not box["codes"], f"{name} saw errors: {box['codes']}"

        # Never a moment without a valid certificate after the first.
        assert box["invalid_seconds"] == 0, f"{name}: {box['invalid_seconds']} s without one"
        assert box["least_remaining_seconds"] > 0, name

        # Every renewal inside the old certificate's validity, after its half, before its end.
        for renewal in box["renewal_details"]:
            assert 0.5 <= renewal["validity_fraction"] < 1, (name, renewal)
            assert renewal["remaining_seconds"] > 0, (name, renewal)

        # No storm: one request per certificate and a check-in a day at most, never two
        # within the box's floor.
        check_ins = math.ceil(span / CHECK_IN.total_seconds())
        assert len(certificates) <= box["requests"] <= len(certificates) + check_ins, (
            name,
            box["requests"],
            len(certificates),
        )
        if box["min_request_interval_seconds"] is not None:
            assert box["min_request_interval_seconds"] >= FLOOR, (name, box)

        # As many renewals as the rule makes: each certificate renewed at its renewal time (less
        # up to the jitter), and no later than one floor after it.
        offset = _renewal_offset(certificates[0])
        shortest = max(FLOOR, offset * (1 - JITTER))
        longest = max(FLOOR, offset) + FLOOR
        lived = span - box["first_valid_after_seconds"]
        assert math.floor(lived / longest) - 1 <= box["renewals"] <= math.ceil(lived / shortest), (
            name,
            box["renewals"],
            lived / longest,
            lived / shortest,
        )
        for renewal in box["renewal_details"]:
            assert shortest - 1 <= renewal["interval_seconds"] <= longest + 1, (name, renewal)

        # Requests per simulated day bounded by the same rule (one more for the first).
        per_day_most = math.ceil(min(DAY, span) / shortest) + 1
        assert max(box["requests_per_day"]) <= per_day_most, (name, box["requests_per_day"])


CASES = [
    pytest.param(dt.timedelta(days=6), 30, 3, id="6-day certificates, 30 days"),
    pytest.param(dt.timedelta(days=47), 30, 3, id="47-day certificates, 30 days"),
    pytest.param(dt.timedelta(days=47), 100, 2, id="47-day certificates, 100 days"),
    pytest.param(dt.timedelta(minutes=10), 6 / 24, 2, id="10-minute certificates, 6 hours"),
    pytest.param(dt.timedelta(minutes=3), 1 / 24, 2, id="3-minute certificates, 1 hour"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("lifetime", "days", "boxes"), CASES)
def test_the_boxes_renew_in_time_without_a_storm(
    month: ModuleType, tmp_path: Path, lifetime: dt.timedelta, days: float, boxes: int
) -> None:
    report = month.simulate(lifetime, days, boxes, tmp_path)
    assert report["boxes"] == boxes
    assert report["totals"]["invalid_seconds"] == 0
    _assert_lifecycle(report)


@pytest.mark.timeout(120)
def test_a_month_of_six_day_certificates_renews_about_every_four_days(
    month: ModuleType, tmp_path: Path
) -> None:
    """The headline figure: days / (2/3 · lifetime) renewals per box, give or take one."""
    lifetime = dt.timedelta(days=6)
    report = month.simulate(lifetime, 30, 2, tmp_path)
    expected = 30 * DAY / (RENEW_FRACTION * lifetime.total_seconds())
    for box in report["per_box"]:
        assert abs(box["renewals"] - expected) <= 1, (box["renewals"], expected)


def test_the_jitter_spreads_boxes_whose_certificates_came_together(
    month: ModuleType, tmp_path: Path
) -> None:
    """Four boxes get their first certificates at the same instant (a fleet re-keyed at once):
    the jitter (up to 5 % of the time left, hours for 6-day certificates) should spread their
    renewals over more than the box's 60-s floor."""
    report = month.simulate(dt.timedelta(days=6), 5, 4, tmp_path, start_spread=0)
    firsts = [box["renewal_details"][0]["at"] for box in report["per_box"]]
    assert max(firsts) - min(firsts) > FLOOR, firsts
