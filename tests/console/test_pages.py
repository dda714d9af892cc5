"""The admin's pages of a real console: login, sessions, form tokens, headers, settings."""

from __future__ import annotations

import re
import ssl
import time
from urllib.parse import urlencode

import httpx
import pytest

from tests.console.conftest import CODE
from tests.console.running import (
    RunningConsole,
    csrf_of,
    log_in,
    new_box_id,
    paired,
    running_console,
    text_of,
)
from tests.servers import make_tls_files

PAGES = ("/iot", "/iot/pairing", "/settings", "/iot/boxes/{box_id}")


@pytest.fixture(scope="module")
def box_id(console: RunningConsole, admin: httpx.Client) -> str:
    """A paired box, for the pages and forms that are about one box."""
    box_id, _ = paired(console, admin)
    return box_id


def forms(box_id: str) -> dict[str, dict[str, str]]:
    """Every form of the console that needs a session, with fields that would change things."""
    return {
        "/settings": {"code": "EVIL-CODE-0000", "cloud_url": "https://evil.example"},
        "/iot/pairing": {"name": "planted"},
        f"/iot/boxes/{box_id}/remove": {},
        f"/iot/boxes/{box_id}/forget": {},
        "/logout": {},
    }


def test_every_page_and_form_needs_a_login(console: RunningConsole, box_id: str):
    before = console.rows()
    with console.client() as http:
        for page in PAGES:
            path = page.format(box_id=box_id)
            answer = http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/login?" + urlencode({"next": path})
        for path, fields in forms(box_id).items():
            answer = http.post(path, data=fields)
            assert (answer.status_code, answer.headers["location"]) == (303, "/login"), path
        http.cookies.set("lanlock_console", "made-up-session")
        assert http.get("/iot").status_code == 303
    assert console.rows() == before


def test_a_wrong_password_is_refused(console: RunningConsole):
    with console.client() as http:
        for password in ("wrong", "", console.password() + "x"):
            answer = log_in(http, password)
            assert answer.status_code == 403
            assert "Wrong password" in answer.text
            assert "set-cookie" not in answer.headers
        assert http.get("/iot").status_code == 303


def test_login_gives_an_httponly_lax_cookie_and_goes_back_only_within_the_site(
    console: RunningConsole,
):
    with console.client() as http:
        token = csrf_of(http.get("/login?next=/settings").text)
        answer = http.post(
            "/login", data={"csrf": token, "password": console.password(), "next": "/settings"}
        )
        assert (answer.status_code, answer.headers["location"]) == (303, "/settings")
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # served over plain HTTP
        assert http.get("/settings").status_code == 200
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        with console.client() as http:
            token = csrf_of(http.get("/login").text)
            answer = http.post(
                "/login", data={"csrf": token, "password": console.password(), "next": target}
            )
            assert answer.headers["location"] == "/iot", target


def test_every_form_needs_its_token_and_its_own_origin(
    console: RunningConsole, admin: httpx.Client, box_id: str
):
    good = csrf_of(admin.get("/iot").text)
    other = console.logged_in()
    stolen = csrf_of(other.get("/iot").text)  # a real token, of another session
    login_token = csrf_of(httpx.get(console.url + "/login").text)
    now = int(time.time())
    before = console.rows()
    for path, fields in forms(box_id).items():
        attempts = [
            (fields, {}),
            (fields | {"csrf": f"{now}.{'0' * 64}"}, {}),
            (fields | {"csrf": "garbage"}, {}),
            (fields | {"csrf": stolen}, {}),
            (fields | {"csrf": login_token}, {}),
            (fields | {"csrf": good}, {"Origin": "http://evil.example"}),
            (fields | {"csrf": good}, {"Referer": "http://evil.example/page"}),
        ]
        for data, headers in attempts:
            answer = admin.post(path, data=data, headers=headers)
            assert answer.status_code == 403, (path, data, headers)
            assert "changed nothing" in text_of(answer.text)
    assert console.rows() == before
    assert admin.get("/iot").status_code == 200  # the refused logouts did not log out
    for data in ({"password": console.password()}, {"password": console.password(), "csrf": good}):
        with console.client() as http:
            assert http.post("/login", data=data).status_code == 403
    other.close()


def test_settings_show_the_uuid_and_only_a_masked_code(
    console: RunningConsole, admin: httpx.Client
):
    page = admin.get("/settings").text
    assert console.settings().db_uuid in page
    assert "••••••7731" in page and CODE not in page

    saved = admin.post(
        "/settings",
        data={"csrf": csrf_of(page), "code": "NEW-CODE-4242", "cloud_url": "https://cloud.example"},
    )
    assert (saved.status_code, saved.headers["location"]) == (303, "/settings?saved=1")
    page = admin.get("/settings?saved=1").text
    assert "••••••4242" in page and "NEW-CODE-4242" not in page
    assert console.settings().cloud_url == "https://cloud.example"

    before = console.rows()
    for fields in ({"cloud_url": "ftp://x"}, {"code": "a\x01b", "cloud_url": ""}):
        refused = admin.post("/settings", data={"csrf": csrf_of(page)} | fields)
        assert refused.status_code == 400 and "nothing was changed" in text_of(refused.text)
    assert console.rows() == before

    restored = admin.post("/settings", data={"csrf": csrf_of(page), "code": CODE, "cloud_url": ""})
    assert restored.status_code == 303
    assert console.settings().cloud_url is None


def test_the_pairing_page_shows_the_link_a_copy_button_and_the_command(admin: httpx.Client):
    page = admin.post("/iot/pairing", data={"csrf": csrf_of(admin.get("/iot/pairing").text)})
    link = re.search(r'id="pair-link" readonly value="([^"]+)"', page.text)
    assert link
    assert f'value="lanlock box connect {link.group(1)}"' in page.text
    assert 'data-copy="pair-link"' in page.text
    assert "15 minutes" in page.text
    script = admin.get("/static/console.js")
    assert script.status_code == 200 and "clipboard" in script.text


def test_pages_carry_the_security_headers_and_no_inline_script_or_style(
    console: RunningConsole, admin: httpx.Client, box_id: str
):
    answers = [admin.get(page.format(box_id=box_id)) for page in PAGES]
    answers.append(httpx.get(console.url + "/login"))
    answers.append(admin.get("/iot/boxes/" + new_box_id()))  # a 404 page
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", answer.text) == []
        assert "<style" not in answer.text and " style=" not in answer.text
        assert 'name="viewport"' in answer.text  # readable on a phone


def test_logout_ends_the_session_for_good(console: RunningConsole):
    http = console.logged_in()
    cookie = http.cookies["lanlock_console"]
    answer = http.post("/logout", data={"csrf": csrf_of(http.get("/iot").text)})
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    http.close()
    with console.client() as replay:
        replay.cookies.set("lanlock_console", cookie)
        assert replay.get("/iot").status_code == 303


def test_over_https_the_session_cookie_is_secure(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    with running_console(
        tmp_path / "console",
        *("--tls-cert", str(tls.cert), "--tls-key", str(tls.key)),
        verify=ssl.create_default_context(cafile=str(tls.ca)),
        host_name="localhost",
    ) as console:
        assert console.url.startswith("https://")
        with console.client() as http:
            answer = log_in(http, console.password())
        assert answer.status_code == 303
        assert "secure" in answer.headers["set-cookie"].lower()
        assert console.settings().public_url.startswith("https://")
