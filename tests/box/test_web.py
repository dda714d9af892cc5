"""The box's homepage and its actions, against real running boxes and a real cloud."""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import hmac
import html
import re
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from lanlock import errors
from lanlock.box.settings import change_config, load_config
from lanlock.cloud.models import cloud_store
from lanlock.store import Store
from tests.box.clients import (
    UNREACHABLE_CONSOLE,
    admin_client,
    admin_password,
    by_ip,
    by_name,
    cloud_root,
    fresh_form,
    post,
    start_valid_box,
    text_of,
)
from tests.boxes import Customer
from tests.servers import (
    RunningBox,
    RunningCloud,
    lanlock_command,
    running_cloud,
    start_box,
)

BOX_NAME = "Front desk <1>"
SAFE_NAME = "Front_desk_1"
ACTIONS = ("/credentials", "/log-level", "/restart", "/logs/download")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("web-cloud"), "--failure-limit", "10000") as running:
        yield running


@pytest.fixture(scope="module")
def store(cloud: RunningCloud) -> Iterator[Store]:
    opened = cloud_store(cloud.store_url, pool_size=2)
    yield opened
    opened.dispose()


@pytest.fixture(scope="module")
def root(cloud: RunningCloud) -> Path:
    return cloud_root(cloud)


@pytest.fixture(scope="module")
def valid_box(
    cloud: RunningCloud, store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBox]:
    """A named, connected box with credentials and a console token: valid once started."""
    box = start_valid_box(tmp_path_factory.mktemp("valid-box"), cloud, store, name=BOX_NAME)
    yield box
    box.stop()


@contextlib.contextmanager
def box_out_of_the_box(folder: Path, cloud: RunningCloud) -> Iterator[RunningBox]:
    """A box as it comes out of the box: no console, no credentials, no token."""
    box = start_box(folder, "--cloud", cloud.url)
    try:
        box.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
def bare_box(cloud: RunningCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    """Shared by the tests that leave it as it is."""
    with box_out_of_the_box(tmp_path_factory.mktemp("bare-box"), cloud) as box:
        yield box


@pytest.fixture
def own_bare_box(cloud: RunningCloud, tmp_path: Path) -> Iterator[RunningBox]:
    """A test's own: it takes credentials and a console, which no other test may see."""
    with box_out_of_the_box(tmp_path / "bare-box", cloud) as box:
        yield box


# --- helpers ---------------------------------------------------------------------------------


def plain(catalogue_text: str) -> str:
    return " ".join(catalogue_text.replace("`", "").split())


def config_bytes(box: RunningBox) -> bytes:
    return (box.data_dir / "config.toml").read_bytes()


def log_text(box: RunningBox) -> str:
    return (box.data_dir / "logs" / "lanlock-box.log").read_text(encoding="utf-8")


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} never held")


def assert_refused_each_way(box: RunningBox, root: Path, path: str, good: dict[str, str]) -> None:
    """The action is refused (403, nothing changed) without password, with a wrong one, without
    or with a forged form token, with an expired one, and from a foreign origin."""
    secret = load_config(box.data_dir).form_secret
    old = int(time.time()) - 3 * 3600
    old_mac = hmac.new(secret.encode(), f"form\n{old}".encode(), hashlib.sha256).hexdigest()
    expired = f"{old}.{old_mac}"  # well made, but older than 2 hours
    now = int(time.time())
    attempts = [
        ({k: v for k, v in good.items() if k != "password"}, {}, "password"),
        (good | {"password": "wrong-" + good["password"]}, {}, "password"),
        ({k: v for k, v in good.items() if k != "csrf"}, {}, "expired"),
        (good | {"csrf": f"{now}.{'0' * 64}"}, {}, "expired"),
        (good | {"csrf": "garbage"}, {}, "expired"),
        (good | {"csrf": expired}, {}, "expired"),
        (good, {"Origin": "http://evil.example"}, "another site"),
        (good, {"Origin": box.http_url.replace("127.0.0.1", "127.0.0.2")}, "another site"),
        (good, {"Referer": "http://evil.example/page"}, "another site"),
    ]
    before = config_bytes(box)
    for fields, headers, why in attempts:
        answer = post(box, root, path, fields, headers)
        assert answer.status_code == 403, (path, fields.keys(), headers, answer.text)
        assert why in text_of(answer.text), (why, text_of(answer.text))
        assert "changed nothing" in text_of(answer.text)
        assert "content-disposition" not in answer.headers
        assert config_bytes(box) == before


def signed_link(token_hex: str, path: str, expires: int) -> str:
    signature = hmac.new(
        bytes.fromhex(token_hex), f"{path}\n{expires}".encode(), hashlib.sha256
    ).hexdigest()
    return f"/logs/download?expires={expires}&signature={signature}"


# --- the homepage ----------------------------------------------------------------------------


def test_homepage_of_a_box_without_console(bare_box: RunningBox) -> None:
    with by_ip(bare_box) as http:
        answer = http.get("/")
    assert answer.status_code == 200
    seen = text_of(answer.text)
    box_id = bare_box.status()["box_id"]
    assert box_id in seen
    assert "10.0.0.7" in seen
    assert "Not connected to a console" in seen
    assert errors.CHECK_NO_SERVER in seen
    entry = errors.box_error(errors.CHECK_NO_SERVER)
    assert plain(entry.meaning) in seen
    for step in entry.fix:
        assert plain(step) in seen
    assert "temporary self-signed certificate" in seen
    assert "rebinding" not in answer.text  # no valid certificate: nothing to check
    assert '<meta name="viewport"' in answer.text


def test_security_headers(bare_box: RunningBox) -> None:
    with by_ip(bare_box) as http:
        answers = [
            http.get("/"),
            http.get("/ping"),
            http.get("/status.json"),
            http.post("/restart", data={}),
            http.get("/logs/download"),
        ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
    page = answers[0].text
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    assert '<script src="/static/box.js"></script>' in page
    with by_ip(bare_box) as http:
        script = http.get("/static/box.js")
        sheet = http.get("/static/box.css")
        assert http.get("/static/nothing.js").status_code == 404
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "data-ping-url" in script.text
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")


def test_ping_allows_any_origin(bare_box: RunningBox) -> None:
    answer = httpx.get(bare_box.http_url + "/ping", headers={"Origin": "http://10.0.0.7"})
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"


def test_credentials_flow_shows_each_error_then_the_url(
    own_bare_box: RunningBox, store: Store, cloud: RunningCloud, root: Path
) -> None:
    staging = Customer.create(store, kind="staging")
    production = Customer.create(store)
    good = fresh_form(own_bare_box, root, db_uuid=staging.db_uuid, code=staging.code, action="save")
    assert_refused_each_way(own_bare_box, root, "/credentials", good)
    assert load_config(own_bare_box.data_dir).db_uuid is None

    # Connected, no credentials yet: the agent notices the new settings file and checks.
    subprocess.run(
        lanlock_command(
            "box",
            "credentials",
            "--data",
            str(own_bare_box.data_dir),
            "--console",
            UNREACHABLE_CONSOLE,
        ),
        check=True,
        capture_output=True,
    )
    own_bare_box.wait_for(lambda s: s.get("code") == errors.LOAD_NO_CREDENTIAL)
    with by_ip(own_bare_box) as http:
        seen = text_of(http.get("/").text)
    assert f"Connected to {UNREACHABLE_CONSOLE}" in seen
    assert errors.LOAD_NO_CREDENTIAL in seen

    # A non-production database: the cloud refuses, the page says why and what to do.
    fields = fresh_form(
        own_bare_box, root, db_uuid=staging.db_uuid, code=staging.code, action="save"
    )
    answer = post(own_bare_box, root, "/credentials", fields)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert own_bare_box.state_file()["reason"] == errors.DATABASE_NOT_PRODUCTION  # checked already
    with by_ip(own_bare_box) as http:
        page = http.get("/").text
    seen = text_of(page)
    assert errors.LOAD_REQUEST_NO_RESULT in seen
    assert errors.DATABASE_NOT_PRODUCTION in seen
    reason = errors.refusal(errors.DATABASE_NOT_PRODUCTION)
    assert plain(reason.meaning) in seen
    assert plain(reason.fix[0]) in seen
    assert plain(errors.box_error(errors.LOAD_REQUEST_NO_RESULT).meaning) in seen
    assert "Detail:" in seen
    assert staging.code not in page
    assert "••••••" + staging.code[-4:] in seen
    assert staging.db_uuid not in page  # masked too: the page is public
    assert "••••••" + staging.db_uuid[-4:] in seen

    # Production credentials, sent with a same-origin Origin as a browser would: valid at once.
    fields = fresh_form(own_bare_box, root, db_uuid=production.db_uuid, code=production.code)
    answer = post(own_bare_box, root, "/credentials", fields, {"Origin": own_bare_box.http_url})
    assert answer.status_code == 303
    state = own_bare_box.state_file()
    assert state["state"] == "valid" and not state["code"]
    with by_ip(own_bare_box) as http:
        page = http.get("/").text
    assert f'href="{state["url"]}"' in page
    assert 'id="error"' not in page
    assert production.code not in page

    # Either field left empty keeps its stored value; Clear forgets both.
    fields = fresh_form(own_bare_box, root, db_uuid=production.db_uuid)
    assert post(own_bare_box, root, "/credentials", fields).status_code == 303
    assert load_config(own_bare_box.data_dir).enterprise_code == production.code
    fields = fresh_form(own_bare_box, root, code=production.code)
    assert post(own_bare_box, root, "/credentials", fields).status_code == 303
    assert load_config(own_bare_box.data_dir).db_uuid == production.db_uuid
    answer = post(
        own_bare_box, root, "/credentials", fresh_form(own_bare_box, root, action="clear")
    )
    assert answer.status_code == 303
    config = load_config(own_bare_box.data_dir)
    assert config.db_uuid is None and config.enterprise_code is None
    assert config.console_url == UNREACHABLE_CONSOLE
    assert production.code not in log_text(own_bare_box)
    assert staging.code not in log_text(own_bare_box)


def test_homepage_of_a_valid_box(valid_box: RunningBox, cloud: RunningCloud, root: Path) -> None:
    state = valid_box.state_file()
    with by_ip(valid_box) as http:
        answer = http.get("/")
    page, seen = answer.text, text_of(answer.text)
    assert BOX_NAME in seen and "Front desk &lt;1&gt;" in page and BOX_NAME not in page
    assert state["box_id"] in seen and "10.0.0.7" in seen
    assert f"Connected to {UNREACHABLE_CONSOLE}" in seen
    assert f'<a id="https-url" href="{state["url"]}">' in page
    assert state["url"].startswith("https://10-0-0-7.") and f".{cloud.zone}:" in state["url"]
    assert "⚙ Advanced" in seen
    assert "Valid from" in seen and "Valid until" in seen
    assert state["not_after"][:10] in seen and state["not_before"][:10] in seen
    assert state["issuer"] in html.unescape(page)
    assert "ERR_IOT" not in page
    config = load_config(valid_box.data_dir)
    with by_name(valid_box, root) as https:
        admin_page = https.get("/").text
    for shown in (page, admin_page):
        assert config.enterprise_code not in shown
        assert config.token not in shown
        assert config.db_uuid not in shown
    assert "••••••" + config.enterprise_code[-4:] in text_of(admin_page)
    assert "••••••" + config.db_uuid[-4:] in text_of(admin_page)


def test_opened_by_ip_checks_that_the_name_resolves(valid_box: RunningBox, root: Path) -> None:
    url = valid_box.state_file()["url"]
    zone = load_config(valid_box.data_dir).zone
    for host in (None, f"127.0.0.1:{valid_box.http_port}", "10.0.0.7", "[::1]:8900"):
        with by_ip(valid_box) as http:
            answer = http.get("/", headers={"Host": host} if host else {})
        page, seen = answer.text, text_of(answer.text)
        assert f'data-ping-url="{url}ping"' in page, host
        assert "DNS rebinding protection" in seen
        assert f"rebind-domain-ok=/{zone}/" in seen
        assert f'private-domain: "{zone}"' in seen
        assert "public DNS resolver" in seen
        assert "<noscript>" in page
        origin = url.rstrip("/")
        assert f"connect-src {origin};" in answer.headers["content-security-policy"]

    # What the script fetches answers over HTTPS, under the name, with the CORS header.
    name = urlsplit(url).hostname
    context = ssl.create_default_context(cafile=str(root))
    with httpx.Client(verify=context, timeout=10) as https:
        ping = https.get(
            f"https://127.0.0.1:{valid_box.https_port}/ping",
            headers={"Host": urlsplit(url).netloc},
            extensions={"sni_hostname": name},
        )
    assert ping.status_code == 204
    assert ping.headers["access-control-allow-origin"] == "*"


def test_opened_by_name_does_not_check(valid_box: RunningBox) -> None:
    url = valid_box.state_file()["url"]
    with by_ip(valid_box) as http:
        answer = http.get("/", headers={"Host": urlsplit(url).netloc})
    assert answer.status_code == 200
    assert "data-ping-url" not in answer.text
    assert "DNS rebinding" not in answer.text
    assert "connect-src 'none'" in answer.headers["content-security-policy"]
    assert f'href="{url}"' in answer.text


# --- logs ------------------------------------------------------------------------------------


def test_signed_link_downloads_the_log(valid_box: RunningBox) -> None:
    token = load_config(valid_box.data_dir).token
    expires = int(time.time()) + 300
    with by_ip(valid_box) as http:
        answer = http.get(signed_link(token, "/logs/download", expires))
    assert answer.status_code == 200
    disposition = answer.headers["content-disposition"]
    pattern = rf'attachment; filename="lanlock-{SAFE_NAME}-(\d{{8}}T\d{{6}}Z)\.log"'
    match = re.fullmatch(pattern, disposition)
    assert match, disposition
    stamp = calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ"))  # UTC
    assert abs(stamp - time.time()) < 120
    on_disk = (valid_box.data_dir / "logs" / "lanlock-box.log").read_bytes()
    assert answer.content and on_disk.startswith(answer.content)
    assert b"log file downloaded through a link signed by the console" in answer.content
    assert token.encode() not in on_disk


def test_bad_links_are_refused(valid_box: RunningBox, bare_box: RunningBox) -> None:
    token = load_config(valid_box.data_dir).token
    now = int(time.time())
    good = signed_link(token, "/logs/download", now + 300)
    cases = {
        "expired": signed_link(token, "/logs/download", now - 5),
        "altered signature": good[:-1] + ("0" if good[-1] != "0" else "1"),
        "altered expiry": good.replace(f"expires={now + 300}", f"expires={now + 900}"),
        "other path": signed_link(token, "/logs/other", now + 300),
        "other token": signed_link(secrets.token_hex(32), "/logs/download", now + 300),
        "too long": signed_link(token, "/logs/download", now + 7200),
        "no signature": f"/logs/download?expires={now + 300}",
        "nothing": "/logs/download",
    }
    with by_ip(valid_box) as http:
        for why, link in cases.items():
            answer = http.get(link)
            assert answer.status_code == 403, why
            assert "content-disposition" not in answer.headers, why
            assert "Download refused" in answer.text, why
        assert "expired" in text_of(http.get(cases["expired"]).text)
        assert "altered" in text_of(http.get(cases["altered signature"]).text)
    # A box without a console token accepts no link at all, whatever it is signed with.
    with by_ip(bare_box) as http:
        answer = http.get(signed_link(token, "/logs/download", now + 300))
    assert answer.status_code == 403
    assert "not paired with a console" in text_of(answer.text)


def test_admin_downloads_the_log_with_the_password(valid_box: RunningBox, root: Path) -> None:
    assert_refused_each_way(valid_box, root, "/logs/download", fresh_form(valid_box, root))
    answer = post(valid_box, root, "/logs/download", fresh_form(valid_box, root))
    assert answer.status_code == 200
    assert f'filename="lanlock-{SAFE_NAME}-' in answer.headers["content-disposition"]
    assert b"log file downloaded by the admin" in answer.content
    # the refusals above are in the log, without the password that was tried
    assert b"log download refused: wrong admin password" in answer.content
    assert admin_password(valid_box).encode() not in answer.content


def test_the_log_is_not_on_the_homepage(valid_box: RunningBox, root: Path) -> None:
    """The log is the admin's (with the password) and the console's (a signed link)."""
    with by_ip(valid_box) as http, by_name(valid_box, root) as https:
        pages = [http.get("/").text, https.get("/").text]
    assert "certificate check: valid" in log_text(valid_box)
    for page in pages:
        assert "certificate check" not in page
        assert " INFO lanlock." not in page


# --- log level -------------------------------------------------------------------------------


def test_log_level_is_raised_then_falls_back(valid_box: RunningBox, root: Path) -> None:
    debug = fresh_form(valid_box, root, level="DEBUG")
    assert_refused_each_way(valid_box, root, "/log-level", debug)
    assert load_config(valid_box.data_dir).log_level is None

    # Origin: null is what browsers send for a form posted from a no-referrer page: accepted.
    answer = post(valid_box, root, "/log-level", debug, {"Origin": "null"})
    assert answer.status_code == 303
    config = load_config(valid_box.data_dir)
    assert config.log_level == "DEBUG"
    assert abs(config.log_level_until - (time.time() + 24 * 3600)) < 60
    with admin_client(valid_box, root) as http:
        page = http.get("/").text
    assert "DEBUG lanlock.box.web: homepage opened" in log_text(valid_box)
    assert "Now: DEBUG" in text_of(page)

    # Its time is up (as if 24 hours had passed): the agent puts the default back.
    past = time.time() - 1
    change_config(valid_box.data_dir, lambda config: setattr(config, "log_level_until", past))
    wait_until(
        lambda: "log level back to the default" in log_text(valid_box), what="log level reset"
    )
    config = load_config(valid_box.data_dir)
    assert config.log_level is None and config.log_level_until is None
    size = len(log_text(valid_box))
    with admin_client(valid_box, root) as http:
        assert "Now: INFO" in text_of(http.get("/").text)
    assert " DEBUG " not in log_text(valid_box)[size:]

    # Choosing the default level clears the setting at once.
    post(valid_box, root, "/log-level", fresh_form(valid_box, root, level="WARNING"))
    assert load_config(valid_box.data_dir).log_level == "WARNING"
    post(valid_box, root, "/log-level", fresh_form(valid_box, root, level="INFO"))
    config = load_config(valid_box.data_dir)
    assert config.log_level is None and config.log_level_until is None
    answer = post(valid_box, root, "/log-level", fresh_form(valid_box, root, level="TRACE"))
    assert answer.status_code == 400


def test_forms_are_refused_unless_they_are_forms(valid_box: RunningBox, root: Path) -> None:
    before = config_bytes(valid_box)
    fields = fresh_form(valid_box, root, level="DEBUG")
    with admin_client(valid_box, root) as http:
        as_json = http.post("/log-level", json=fields)
        huge = http.post("/log-level", data=fields | {"pad": "x" * 20000})
    assert as_json.status_code == 415
    assert huge.status_code == 413
    assert config_bytes(valid_box) == before


def test_secrets_are_never_shown(valid_box: RunningBox, root: Path) -> None:
    config = load_config(valid_box.data_dir)
    password = admin_password(valid_box)
    url = valid_box.state_file()["url"]
    with by_ip(valid_box) as http, by_name(valid_box, root) as https:
        shown = [
            http.get("/"),
            http.get("/", headers={"Host": urlsplit(url).netloc}),
            http.get("/status.json"),
            http.get("/logs/download"),
            https.get("/"),
            https.post("/credentials", data=fresh_form(valid_box, root) | {"password": "nope"}),
            https.post("/logs/download", data=fresh_form(valid_box, root)),  # the log itself
        ]
    assert shown[-1].status_code == 200
    for answer in shown:
        for secret in (config.enterprise_code, config.token, password):
            assert secret not in answer.text, answer.request.url
    assert "••••••" + config.enterprise_code[-4:] in text_of(shown[4].text)  # masked, not missing


# --- restart (last: the box comes back, but its listeners go away for a moment) ---------------


def test_restart_keeps_the_process_and_comes_back(valid_box: RunningBox, root: Path) -> None:
    assert_refused_each_way(valid_box, root, "/restart", fresh_form(valid_box, root))
    assert "restarting the agent" not in log_text(valid_box)

    answer = post(valid_box, root, "/restart", fresh_form(valid_box, root))
    assert answer.status_code == 200
    assert "Restarting" in answer.text
    assert '<meta http-equiv="refresh" content="5;url=/">' in answer.text
    wait_until(lambda: "restarting the agent" in log_text(valid_box), what="restart")
    assert valid_box.process.poll() is None  # the same process, restarted inside

    def answers() -> bool:
        try:
            return httpx.get(valid_box.http_url + "/status.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=20, what="the HTTP listener back")
    assert valid_box.process.poll() is None
    assert valid_box.status()["state"] == "valid"
    url = valid_box.state_file()["url"]
    context = ssl.create_default_context(cafile=str(root))
    with httpx.Client(verify=context, timeout=10) as https:  # and HTTPS, with its certificate
        ping = https.get(
            f"https://127.0.0.1:{valid_box.https_port}/ping",
            headers={"Host": urlsplit(url).netloc},
            extensions={"sni_hostname": urlsplit(url).hostname},
        )
    assert ping.status_code == 204
