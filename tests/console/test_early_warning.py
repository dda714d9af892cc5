"""The early warning of a real console (issue #10 item 7): boxes report over the wire, signed as
docs/console-protocol.md §2 says, and the card, the box's page and ``lanlock console boxes`` flag
a certificate with less than a third of its lifetime left that the box is not renewing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from lanlock import errors, pki
from lanlock.console.expiry import NOT_RENEWING_ADVICE, SILENT_ADVICE
from lanlock.console.models import PairedBox
from lanlock.store.types import utcnow
from tests.console.running import (
    RunningConsole,
    make_link,
    pair,
    paired,
    plain,
    report,
    text_of,
)

DAY = dt.timedelta(days=1)
# Whole hours beyond whole days, so that the seconds a test takes never change the days shown.
HOUR = dt.timedelta(hours=1)
URLS = [
    "https://10-0-0-7.abcdefghijklmnop.iot.test:8943/",
    "https://fd00--7.abcdefghijklmnop.iot.test:8943/",
    "https://192-168-1-7.abcdefghijklmnop.iot.test:8943/",
]


def certificate(lived: dt.timedelta | None, left: dt.timedelta) -> dict[str, Any]:
    """A report's validity: ``lived`` since notBefore (None: an older box that omits it),
    ``left`` until notAfter (negative once expired)."""
    now = utcnow()
    return {
        "not_before": None if lived is None else (now - lived).isoformat(),
        "not_after": (now + left).isoformat(),
    }


def reporting_box(
    console: RunningConsole, admin: httpx.Client, fields: dict[str, Any], name: str = "Till"
) -> str:
    """A newly paired box that has sent one report with ``fields``: its ``box_id``."""
    box_id, token = paired(console, admin, name)
    with console.client() as http:
        answer = report(http, box_id, token, {"name": name, **fields})
    assert answer.status_code == 200, answer.text
    return box_id


def card_html(admin: httpx.Client, box_id: str) -> str:
    page = admin.get("/iot").text
    return page[page.index(f'id="box-{box_id}"') :].split("</article>")[0]


def listed(console: RunningConsole, box_id: str) -> dict[str, Any]:
    [row] = [row for row in console.cli_json("boxes") if row["box_id"] == box_id]
    return row


def test_a_fresh_valid_certificate_is_not_flagged(console: RunningConsole, admin: httpx.Client):
    box_id = reporting_box(console, admin, certificate(10 * DAY, 80 * DAY))
    card = card_html(admin, box_id)
    assert "HTTPS ready" in card
    assert "early-warning" not in card and "Certificate expir" not in card
    assert 'id="early-warning"' not in admin.get(f"/iot/boxes/{box_id}").text
    assert listed(console, box_id)["warning"] is None


def test_a_valid_box_past_two_thirds_is_flagged_as_not_renewing(
    console: RunningConsole, admin: httpx.Client
):
    box_id = reporting_box(console, admin, certificate(70 * DAY, 20 * DAY + HOUR))
    card = text_of(card_html(admin, box_id))
    assert "Certificate expiring" in card  # the badge
    assert "Certificate expires in 20 days, not renewing" in card
    assert plain(NOT_RENEWING_ADVICE.meaning) in card
    for step in NOT_RENEWING_ADVICE.fix:
        assert plain(step) in card
    page = admin.get(f"/iot/boxes/{box_id}").text
    assert 'id="early-warning"' in page
    assert "Certificate expires in 20 days, not renewing" in text_of(page)
    warning = listed(console, box_id)["warning"]
    assert (warning["cause"], warning["code"], warning["reason"]) == ("not_renewing", None, None)


@pytest.mark.parametrize(
    ("state", "code", "reason", "fix"),
    [
        (
            "error",
            errors.LOAD_REQUEST_EXCEPTION,
            None,
            errors.box_error(errors.LOAD_REQUEST_EXCEPTION).fix,
        ),
        # A box keeps serving its certificate while renewal fails: "valid", with the code.
        (
            "valid",
            errors.status_code(503),
            None,
            errors.box_error(errors.LOAD_REQUEST_STATUS).fix,
        ),
        # With the cloud's reason, the reason's steps are what to do.
        (
            "error",
            errors.LOAD_REQUEST_NO_RESULT,
            errors.SUBSCRIPTION_NOT_IN_PROGRESS,
            errors.refusal(errors.SUBSCRIPTION_NOT_IN_PROGRESS).fix,
        ),
    ],
)
def test_a_failing_box_with_less_than_a_third_left_is_flagged_with_the_fix_of_its_error(
    console: RunningConsole,
    admin: httpx.Client,
    state: str,
    code: str,
    reason: str | None,
    fix: tuple[str, ...],
):
    fields = {"state": state, "code": code, "reason": reason}
    box_id = reporting_box(console, admin, fields | certificate(60 * DAY - HOUR, 29 * DAY + HOUR))
    card = text_of(card_html(admin, box_id))
    assert "Certificate expires in 29 days, renewal failing" in card
    assert code in card and (reason is None or reason in card)
    for step in fix:
        assert plain(step) in card

    page = admin.get(f"/iot/boxes/{box_id}").text
    assert 'id="early-warning"' in page and 'href="#error"' in page
    assert "Certificate expires in 29 days, renewal failing" in text_of(page)

    warning = listed(console, box_id)["warning"]
    assert (warning["cause"], warning["code"], warning["reason"]) == ("error", code, reason)
    assert warning["fix"] == list(fix)
    assert warning["expired"] is False and warning["lifetime_known"] is True
    seconds = (29 * DAY + HOUR).total_seconds()
    assert seconds - 120 < warning["expires_in_seconds"] <= seconds


def test_a_failing_box_with_more_than_a_third_left_shows_its_error_but_no_warning(
    console: RunningConsole, admin: httpx.Client
):
    fields = {"state": "valid", "code": errors.LOAD_REQUEST_EXCEPTION}
    box_id = reporting_box(console, admin, fields | certificate(60 * DAY - HOUR, 30 * DAY + HOUR))
    card = card_html(admin, box_id)
    assert "HTTPS ready, renewal failing" in card and "early-warning" not in card
    assert plain(errors.box_error(errors.LOAD_REQUEST_EXCEPTION).meaning) in text_of(card)
    assert listed(console, box_id)["warning"] is None


def test_an_expired_certificate_is_flagged_as_expired(console: RunningConsole, admin: httpx.Client):
    fields = {"state": "valid", "code": errors.LOAD_REQUEST_EXCEPTION}
    box_id = reporting_box(console, admin, fields | certificate(100 * DAY, -(10 * DAY + HOUR)))
    card = text_of(card_html(admin, box_id))
    assert "Certificate expired" in card and "HTTPS ready" not in card
    assert "Certificate expired 10 days ago, renewal failing" in card
    # The served certificate is no longer valid: the page must not say it "stays valid".
    assert "stays valid" not in text_of(admin.get(f"/iot/boxes/{box_id}").text)
    warning = listed(console, box_id)["warning"]
    assert warning["expired"] is True and warning["expires_in_seconds"] < -10 * 86400


def test_an_older_box_without_not_before_is_flagged_only_in_its_last_week(
    console: RunningConsole, admin: httpx.Client
):
    older = {"state": "valid", "urls": None}  # what a box before not_before and urls sends
    calm = reporting_box(console, admin, older | certificate(None, 7 * DAY + HOUR))
    late = reporting_box(console, admin, older | certificate(None, 6 * DAY + HOUR))
    assert "early-warning" not in card_html(admin, calm)
    assert listed(console, calm)["warning"] is None

    card = card_html(admin, late)
    assert "Certificate expires in 6 days, not renewing" in text_of(card)
    assert "does not report when its certificate began" in text_of(card)
    assert "warns once less than 7 days are left" in text_of(card)
    assert f'href="{URLS[0]}"' in card  # an older box's one URL: its url
    row = listed(console, late)
    assert row["not_before"] is None and row["urls"] == [URLS[0]]
    assert row["warning"]["lifetime_known"] is False


def test_a_box_that_stopped_reporting_is_flagged_when_its_certificate_runs_out(
    console: RunningConsole, admin: httpx.Client
):
    box_id = reporting_box(console, admin, certificate(70 * DAY, 20 * DAY + HOUR))
    store = console.store()
    try:
        with store.transaction() as session:
            box = session.get(PairedBox, box_id)
            assert box is not None
            box.last_seen_at = utcnow() - dt.timedelta(minutes=10)  # three reports missed
    finally:
        store.dispose()
    card = text_of(card_html(admin, box_id))
    assert "no report since" in card
    assert "Certificate expires in 20 days, no report from the box" in card
    for line in (SILENT_ADVICE.meaning, *SILENT_ADVICE.fix):
        assert plain(line) in card
    assert listed(console, box_id)["warning"]["cause"] == "silent"


def test_every_url_of_the_box_is_a_link(console: RunningConsole, admin: httpx.Client):
    box_id = reporting_box(console, admin, {"urls": URLS})
    card = card_html(admin, box_id)
    page = admin.get(f"/iot/boxes/{box_id}").text
    for url in URLS:
        assert f'href="{url}"' in card and f'href="{url}"' in page
    assert "HTTPS URLs" in text_of(card)
    assert listed(console, box_id)["urls"] == URLS


def test_boxes_lists_the_warning_in_json_and_marks_it_in_text(
    console: RunningConsole, admin: httpx.Client
):
    fresh = reporting_box(console, admin, certificate(DAY, 89 * DAY), name="Fresh")
    failing = {"state": "error", "code": errors.LOAD_REQUEST_EXCEPTION}
    flagged = reporting_box(console, admin, failing | certificate(80 * DAY - HOUR, 10 * DAY + HOUR))

    row = listed(console, flagged)
    warning = row["warning"]
    assert set(warning) == {
        "cause",
        "code",
        "reason",
        "meaning",
        "fix",
        "expires_at",
        "expires_in_seconds",
        "warns_within_seconds",
        "expired",
        "lifetime_known",
        "summary",
    }
    assert warning["meaning"] == errors.box_error(errors.LOAD_REQUEST_EXCEPTION).meaning
    assert warning["expires_at"] == row["not_after"]
    assert warning["warns_within_seconds"] == 30 * 86400  # a third of 90 days
    assert warning["summary"] == "Certificate expires in 10 days, renewal failing"

    lines = {line.split()[0]: line for line in console.cli("boxes").stdout.splitlines()}
    assert lines[flagged].endswith("  ! Certificate expires in 10 days, renewal failing")
    assert "!" not in lines[fresh]


def test_pairing_again_clears_the_warning_and_the_urls(
    console: RunningConsole, admin: httpx.Client
):
    device_key = pki.new_private_key()
    box_id = pki.box_id_for(device_key.public_key())
    with console.client() as http:
        token = pair(http, make_link(admin), device_key).json()["token"]
        fields = {"urls": URLS} | certificate(70 * DAY, 20 * DAY)
        assert report(http, box_id, token, fields).status_code == 200
        assert listed(console, box_id)["warning"] is not None
        assert pair(http, make_link(admin), device_key).status_code == 200
    row = listed(console, box_id)
    assert (row["warning"], row["urls"], row["not_before"]) == (None, [], None)


def test_a_flagged_box_shows_neither_its_token_nor_the_code(
    console: RunningConsole, admin: httpx.Client
):
    box_id, token = paired(console, admin)
    fields = {"state": "error", "code": errors.LOAD_REQUEST_EXCEPTION}
    fields |= certificate(80 * DAY, DAY + HOUR / 2)
    with console.client() as http:
        assert report(http, box_id, token, fields).status_code == 200
    pages = [admin.get("/iot").text, admin.get(f"/iot/boxes/{box_id}").text]
    listing = console.cli("boxes").stdout + console.cli("boxes", "--json").stdout
    for shown in [*pages, listing]:
        assert token not in shown
        assert console.settings().enterprise_code not in shown
    assert all("Certificate expires in 24 h, renewal failing" in text_of(p) for p in pages)
