"""The boxes' API of a real console (docs/console-protocol.md): pairing, status reports, and the
signed "Download logs" link the box's form shows."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import update

from lanlock import errors, pki
from lanlock.console.models import THE_CONSOLE, ConsoleRecord, PairingCode
from lanlock.links import link_is_valid
from lanlock.store.types import utcnow
from tests.console.conftest import CODE
from tests.console.running import (
    RunningConsole,
    csrf_of,
    make_link,
    new_box_id,
    pair,
    paired,
    pairing_body,
    plain,
    post_pairing,
    race_for,
    report,
    status_fields,
    text_of,
)

HEX64 = re.compile(r"[0-9a-f]{64}")
BOX_URL = status_fields("x")["url"]


def set_code(console: RunningConsole, code: str | None) -> None:
    store = console.store()
    try:
        with store.transaction() as session:
            session.execute(
                update(ConsoleRecord)
                .where(ConsoleRecord.id == THE_CONSOLE)
                .values(enterprise_code=code)
            )
    finally:
        store.dispose()


# --- pairing -----------------------------------------------------------------------------------


def test_pairing_answers_the_documented_fields_once(console: RunningConsole, admin: httpx.Client):
    link = make_link(admin)
    assert re.fullmatch(re.escape(console.url) + r"/iot/pair/[A-Za-z0-9_-]{43}", link)
    with console.client() as http:
        answer = pair(http, link, name="Front desk")
        again = pair(http, link)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"console_url", "db_uuid", "enterprise_code", "name", "token", "cloud_url"}
    assert body["console_url"] == console.url
    assert body["db_uuid"] == console.settings().db_uuid
    assert body["enterprise_code"] == CODE
    assert body["name"] == "Front desk"
    assert HEX64.fullmatch(body["token"])
    assert again.status_code == 410 and again.json()["detail"]


def test_the_admin_names_the_box_on_the_pairing_page(console: RunningConsole, admin: httpx.Client):
    with console.client() as http:
        answer = pair(http, make_link(admin, "Till 2"), name="raspberrypi")
    assert answer.json()["name"] == "Till 2"


def test_unknown_and_malformed_codes_are_404(console: RunningConsole):
    with console.client() as http:
        for code in (secrets.token_urlsafe(32), "short", "x" * 43 + "!"):
            answer = pair(http, f"/iot/pair/{code}")
            assert answer.status_code == 404, code
            assert answer.json()["detail"]


def test_a_link_expires_after_15_minutes(console: RunningConsole, admin: httpx.Client):
    link = make_link(admin)
    code_hash = hashlib.sha256(link.rsplit("/", 1)[1].encode()).hexdigest()
    store = console.store()
    try:
        with store.transaction() as session:
            made = session.get(PairingCode, code_hash)
            assert made is not None and made.expires_at - made.created_at == dt.timedelta(
                minutes=15
            )
            made.expires_at = utcnow() - dt.timedelta(seconds=1)
    finally:
        store.dispose()
    with console.client() as http:
        assert pair(http, link).status_code == 410


def test_without_a_subscription_code_pairing_is_409_and_the_link_survives(
    console: RunningConsole, admin: httpx.Client
):
    link = make_link(admin)
    set_code(console, None)
    try:
        with console.client() as http:
            refused = pair(http, link)
            assert refused.status_code == 409
            assert "subscription code" in refused.json()["detail"]
            assert "set the subscription code" in text_of(admin.get("/iot/pairing").text).lower()
    finally:
        set_code(console, CODE)
    with console.client() as http:
        assert pair(http, link).status_code == 200


def test_boxes_racing_for_one_link_get_one_pairing(console: RunningConsole, admin: httpx.Client):
    assert race_for(console, make_link(admin)) == [200, 410, 410, 410]


def test_pairing_again_replaces_the_token(console: RunningConsole, admin: httpx.Client):
    device_key = pki.new_private_key()  # the same box: the same device key
    box_id = pki.box_id_for(device_key.public_key())
    with console.client() as http:
        old_token = pair(http, make_link(admin), device_key).json()["token"]
        new_token = pair(http, make_link(admin), device_key).json()["token"]
        assert new_token != old_token
        assert report(http, box_id, old_token).status_code == 401
        assert report(http, box_id, new_token).status_code == 200


# --- status reports ----------------------------------------------------------------------------


def test_a_signed_report_updates_the_card(console: RunningConsole, admin: httpx.Client):
    box_id, token = paired(console, admin, "Kitchen printer")
    fields = {
        "name": "Kitchen printer",
        "state": "error",
        "code": errors.LOAD_REQUEST_NO_RESULT,
        "reason": errors.BOX_QUOTA_EXCEEDED,
    }
    with console.client() as http:
        answer = report(http, box_id, token, fields)
    assert answer.status_code == 200 and answer.json() == {"ok": True}

    card_html = admin.get("/iot").text
    card_html = card_html[card_html.index(f'id="box-{box_id}"') :].split("</article>")[0]
    card = text_of(card_html)
    assert "Kitchen printer" in card
    assert errors.LOAD_REQUEST_NO_RESULT in card and errors.BOX_QUOTA_EXCEEDED in card
    assert plain(errors.box_error(errors.LOAD_REQUEST_NO_RESULT).meaning) in card
    assert f'href="{BOX_URL}"' in card_html
    assert "2027-02-23 12:00 UTC" in card  # valid until
    assert "just now" in card  # last seen

    page = text_of(admin.get(f"/iot/boxes/{box_id}").text)
    described = errors.describe(errors.LOAD_REQUEST_NO_RESULT, errors.BOX_QUOTA_EXCEEDED)
    for line in [described["meaning"], *described["causes"], *described["fix"]]:
        assert plain(line) in page
    reason = described["reason"]
    for line in [reason["meaning"], *reason["causes"], *reason["fix"]]:
        assert plain(line) in page


def test_reports_that_do_not_prove_the_box_are_401(console: RunningConsole, admin: httpx.Client):
    box_id, token = paired(console, admin)
    now = int(time.time())
    before = console.rows()
    with console.client() as http:
        attempts = [
            report(http, box_id, secrets.token_hex(32)),  # signed with another token
            # Clear of the 300 s window by more than a slow request takes (whole seconds).
            report(http, box_id, token, at=now - 330),  # stale
            report(http, box_id, token, at=now + 330),  # from the future
            report(http, new_box_id(), token),  # unknown box
            http.post("/iot/status", json=status_fields(box_id)),  # no headers at all
            http.post(
                "/iot/status",
                json=status_fields(box_id),
                headers={
                    "X-Lanlock-Box": box_id,
                    "X-Lanlock-Time": "soon",
                    "X-Lanlock-Signature": "00",
                },
            ),
        ]
    for answer in attempts:
        assert answer.status_code == 401, answer.text
        assert answer.json()["detail"]
    assert console.rows() == before


def test_signed_reports_with_bad_fields_are_400(console: RunningConsole, admin: httpx.Client):
    box_id, token = paired(console, admin)
    before = console.rows()
    with console.client() as http:
        bad = [
            {"url": "javascript:alert(1)"},
            {"url": "http://10-0-0-7.abcdefghijklmnop.iot.test/"},
            {"url": "https://user@10-0-0-7.abcdefghijklmnop.iot.test/"},
            {"url": "https://10-0-0-7.abcdefghijklmnop.iot.test/x?y"},
            {"not_after": "next year"},
            {"not_before": "last year"},
            {"urls": "https://10-0-0-7.abcdefghijklmnop.iot.test/"},  # not a list
            {"urls": ["javascript:alert(1)"]},
            {"urls": [5]},
            {"urls": ["https://10-0-0-7.abcdefghijklmnop.iot.test/"] * 17},
            {"state": ""},
            {"name": "a\nb"},
            {"name": "x" * 201},
            {"code": 5},
            {"box_id": new_box_id()},  # not the box of the header
        ]
        answers = [report(http, box_id, token, fields) for fields in bad]
        answers += [report(http, box_id, token, body=body) for body in (b"{", b"[]", b"\xff")]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]
    assert console.rows() == before


def test_an_older_report_never_overwrites_a_newer_one(console: RunningConsole, admin: httpx.Client):
    box_id, token = paired(console, admin)
    now = int(time.time())
    with console.client() as http:
        assert report(http, box_id, token, {"state": "valid"}, at=now).status_code == 200
        late = report(
            http, box_id, token, {"state": "error", "code": errors.CHECK_NO_SERVER}, at=now - 60
        )
        assert late.status_code == 200
    assert errors.CHECK_NO_SERVER not in admin.get(f"/iot/boxes/{box_id}").text


def test_a_removed_box_hears_410_once_and_is_forgotten(
    console: RunningConsole, admin: httpx.Client
):
    box_id, token = paired(console, admin)
    page = admin.get(f"/iot/boxes/{box_id}").text
    removed = admin.post(f"/iot/boxes/{box_id}/remove", data={"csrf": csrf_of(page)})
    assert removed.status_code == 303
    assert "Removing" in admin.get("/iot").text
    with console.client() as http:
        # A forger learns nothing and cannot make the console forget the box before it heard.
        assert report(http, box_id, secrets.token_hex(32)).status_code == 401
        gone = report(http, box_id, token)
        assert (gone.status_code, gone.json()) == (410, {"removed": True})
        assert report(http, box_id, token).status_code == 401
    assert box_id not in admin.get("/iot").text
    assert admin.get(f"/iot/boxes/{box_id}").status_code == 404


def test_bodies_that_are_not_the_protocol_are_refused_without_a_crash(
    console: RunningConsole, admin: httpx.Client
):
    link = make_link(admin)
    huge = b'{"box_id": "' + b"a" * (70 * 1024) + b'"}'

    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    with console.client() as http:
        for body in (
            b"",
            b"not json",
            b"[1, 2]",
            b'{"box_id": 5}',
            b'{"box_id": "ABC"}',
            b"\xff\xfe",
            b"[" * 60000,  # nested deeper than the parser's recursion
        ):
            answer = http.post(link, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, body
            assert answer.json()["detail"] and "Traceback" not in answer.text
        assert pair(http, link, name="n" * 201).status_code == 400
        not_for_a_link = pairing_body(pki.new_private_key(), link, link_code_sha256="x")
        assert post_pairing(http, link, not_for_a_link).status_code == 400
        for path in (link, "/iot/status"):
            assert http.post(path, content=huge).status_code == 413
            assert http.post(path, content=chunks()).status_code == 413  # no Content-Length
        assert pair(http, link).status_code == 200  # the 400s did not use it
    assert console.process.poll() is None
    assert "Traceback" not in console.log_text()


# --- Download logs -----------------------------------------------------------------------------


def test_the_download_logs_link_is_signed_with_the_boxs_token(
    console: RunningConsole, admin: httpx.Client
):
    box_id, token = paired(console, admin)
    with console.client() as http:
        assert report(http, box_id, token, {"url": None, "state": "temporary"}).status_code == 200
        assert "Download logs" not in admin.get(f"/iot/boxes/{box_id}").text  # no HTTPS URL yet
        assert report(http, box_id, token).status_code == 200
    page = admin.get(f"/iot/boxes/{box_id}").text
    match = re.search(r'id="download-logs" href="([^"]+)"', page)
    assert match, page
    link = urlsplit(html.unescape(match.group(1)))
    assert f"{link.scheme}://{link.netloc}/" == BOX_URL
    assert link.path == "/logs/download"
    query = {key: values[0] for key, values in parse_qs(link.query).items()}
    expires, signature = query["expires"], query["signature"]
    assert abs(int(expires) - (time.time() + 300)) < 30
    key = bytes.fromhex(token)
    assert link_is_valid(key, "/logs/download", expires, signature)
    expected = hmac.new(key, f"/logs/download\n{expires}".encode(), hashlib.sha256).hexdigest()
    assert signature == expected


def test_the_token_and_the_code_never_appear_on_a_page(
    console: RunningConsole, admin: httpx.Client
):
    box_id, token = paired(console, admin)
    with console.client() as http:
        report(http, box_id, token)
    pages = [
        admin.get(path).text
        for path in ("/iot", f"/iot/boxes/{box_id}", "/settings", "/iot/pairing", "/login")
    ]
    pages.append(admin.post("/iot/pairing", data={"csrf": csrf_of(pages[0])}).text)
    for page in pages:
        assert token not in page
        assert CODE not in page
    assert any("••••••7731" in page for page in pages)


def test_a_pairing_link_opened_in_a_browser_is_not_used(
    console: RunningConsole, admin: httpx.Client
):
    link = make_link(admin)
    with console.client() as http:
        opened = http.get(link)
        assert opened.status_code == 200 and "pairing link" in opened.text
        assert pair(http, link).status_code == 200
