"""The whole system in a real browser: Playwright driving Debian's chromium
(docs/design.md §14, issue 5).

The browser trusts only the demo's root CA (an NSS database in a temporary HOME), so a page that
loads over HTTPS proves the trust comes from our CA; the same page in a browser without that
root must fail with ERR_CERT_AUTHORITY_INVALID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from lanlock import errors, pki
from lanlock.box.settings import load_config
from lanlock.box.tls_store import TLSStore
from lanlock.cloud.models import Database, cloud_store
from lanlock.store.types import utcnow
from tests.console.running import pair, report
from tests.realparts import require
from tests.servers import RunningBox, free_port, lanlock_command, start_box
from tests.test_demo import running_demo

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The demo's names under iot.localhost, straight to loopback: this module's tests are about
# trust and pages, not resolution (tests/test_browser_dns.py resolves through lanlock dns).
DEMO_RESOLVER = "--host-resolver-rules=MAP *.iot.localhost 127.0.0.1"


@dataclass
class DemoSystem:
    data: Path
    console: str
    password: str
    box_url: str
    box_ip_url: str
    root: Path
    cloud: str


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[DemoSystem]:
    require(shutil.which("chromium") is not None, "Debian's chromium is not installed")
    require(shutil.which("certutil") is not None, "certutil (libnss3-tools) is not installed")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    data = tmp_path_factory.mktemp("demo")
    ports = [free_port() for _ in range(5)]
    with running_demo(data, ports) as output:
        console, password = re.search(r"console\s+(\S+)\s+\(password: (\S+)\)", output).groups()
        yield DemoSystem(
            data=data,
            console=console.rstrip("/"),
            password=password,
            box_url=re.search(r"box by name\s+(\S+)", output).group(1),
            box_ip_url=re.search(r"box by IP\s+(\S+)", output).group(1),
            root=Path(re.search(r"demo root CA\s+(\S+)", output).group(1)),
            cloud=re.search(r"cloud\s+(http://\S+)/healthz", output).group(1),
        )


@contextlib.contextmanager
def chromium(
    home: Path, trusted_root: Path | None, resolver: tuple[str, ...] = (DEMO_RESOLVER,)
) -> Iterator[object]:
    """Chromium whose only extra trust anchor is ``trusted_root`` (or none at all)."""
    from playwright.sync_api import sync_playwright

    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
        check=True,
        capture_output=True,
    )
    if trusted_root:
        subprocess.run(
            [
                "certutil",
                "-A",
                "-d",
                f"sql:{nssdb}",
                "-n",
                "lanlock demo root",
                "-t",
                "C,,",
                "-i",
                str(trusted_root),
            ],
            check=True,
            capture_output=True,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[*CHROMIUM_FLAGS, *resolver],
            env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: object, name: str, tmp_path: Path) -> None:
    """Kept in docs/ when LANLOCK_UPDATE_SCREENSHOTS=1 (the README shows them); else in tmp."""
    folder = (
        ROOT / "docs" / "screenshots"
        if os.environ.get("LANLOCK_UPDATE_SCREENSHOTS") == "1"
        else tmp_path
    )
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def log_in(page: object, system: DemoSystem) -> None:
    page.goto(system.console + "/login")  # type: ignore[attr-defined]
    page.fill("#password", system.password)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/iot$"))  # type: ignore[attr-defined]


def pairing_link(page: object, system: DemoSystem) -> str:
    """Make a pairing link in the console's page."""
    page.goto(system.console + "/iot/pairing")  # type: ignore[attr-defined]
    page.click("form[action='/iot/pairing'] button[type=submit]")  # type: ignore[attr-defined]
    return page.input_value("#pair-link")  # type: ignore[attr-defined]


def pair_new_box(page: object, system: DemoSystem, data: Path, *extra: str) -> RunningBox:
    """Make a pairing link in the console's page, and connect a new box with it."""
    link = pairing_link(page, system)
    connect = subprocess.run(
        lanlock_command("box", "connect", link, "--data", str(data), "--address", "127.0.0.1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert connect.returncode == 0, connect.stderr
    return start_box(data, "--cloud", system.cloud, "--address", "127.0.0.1", *extra)


def wait_for_card(page: object, system: DemoSystem, box_id: str, text: str) -> object:
    card = f"#box-{box_id}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page.goto(system.console + "/iot")  # type: ignore[attr-defined]
        if page.locator(card).count() and text in page.inner_text(card):  # type: ignore[attr-defined]
            return page.locator(card)  # type: ignore[attr-defined]
        time.sleep(0.5)
    raise AssertionError(f"the card of {box_id} never showed {text!r}")


def test_box_https_url_loads_with_the_demo_root_and_fails_without(system, tmp_path):
    with chromium(tmp_path / "trusting", system.root) as browser:
        page = browser.new_page()
        response = page.goto(system.box_url)
        assert response.ok
        assert "lanlock box" in page.title()
        assert page.url.startswith("https://127-0-0-1.")
        screenshot(page, "box-homepage", tmp_path)
    with chromium(tmp_path / "untrusting", None) as browser:
        page = browser.new_page()
        with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(system.box_url)


def test_box_settings_are_on_its_https_page_and_work_there(system, tmp_path):
    """By IP the page checks the HTTPS name (its ping answers under that name) and links there
    instead of showing forms; under the name, the admin's forms work in a real browser."""
    box_password = subprocess.run(
        lanlock_command("box", "password", "--data", str(system.data / "box")),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with chromium(tmp_path / "home", system.root) as browser:
        page = browser.new_page()
        page.goto(system.box_ip_url)
        page.wait_for_selector("#rebinding-ok", state="visible", timeout=15000)
        assert page.locator("form").count() == 0
        assert page.locator(f"#on-https a[href='{system.box_url}']").count() == 1

        page.goto(system.box_url)
        for level in ("WARNING", "INFO"):
            page.click("#log-level summary")
            page.select_option("#level", level)
            page.fill("#level-password", box_password)
            with page.expect_navigation():
                page.click("#log-level button[type=submit]")
            assert page.url == system.box_url
            assert f"Now: {level}" in page.text_content("#log-level")
    assert load_config(system.data / "box").log_level is None


def test_console_pairs_a_box_shows_its_card_opens_it_and_downloads_its_logs(system, tmp_path):
    with chromium(tmp_path / "home", system.root) as browser:
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1100, "height": 900}
        )
        page = context.new_page()
        log_in(page, system)
        box = pair_new_box(page, system, tmp_path / "box2")
        try:
            box_id = box.wait_for(lambda s: s["state"] == "valid")["box_id"]
            card = wait_for_card(page, system, box_id, "https://127-0-0-1.")
            assert "Valid until" in card.inner_text()
            screenshot(page, "console-cards", tmp_path)
            url = card.locator("a[href^='https://']").get_attribute("href")
            with context.expect_page() as opened:
                card.locator("a[href^='https://']").click()
            homepage = opened.value
            homepage.wait_for_load_state()
            assert homepage.url == url and "lanlock box" in homepage.title()

            page.goto(f"{system.console}/iot/boxes/{box_id}")
            screenshot(page, "console-box", tmp_path)
            with page.expect_download() as download_info:
                page.click("#download-logs")
            download = download_info.value
            assert re.fullmatch(r"lanlock-.+-\d{8}T\d{6}Z\.log", download.suggested_filename)
            content = Path(download.path()).read_text()
            box_log = (tmp_path / "box2" / "logs" / "lanlock-box.log").read_text()
            assert "installed certificate" in content
            assert content.splitlines()[0] == box_log.splitlines()[0]
        finally:
            box.stop()


def test_box_of_a_database_that_is_not_production_shows_why(system, tmp_path):
    opened = cloud_store(f"sqlite:///{system.data / 'cloud' / 'cloud.db'}", pool_size=1)
    try:
        with opened.transaction() as session:
            session.execute(update(Database).values(kind="staging"))
        with chromium(tmp_path / "home", system.root) as browser:
            page = browser.new_page()
            log_in(page, system)
            box = pair_new_box(page, system, tmp_path / "box3")
            try:
                state = box.wait_for(lambda s: s.get("reason") == "database_not_production")
                page.goto(box.http_url + "/")
                body = page.inner_text("body")
                assert "ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT" in body
                assert "database_not_production" in body
                card = wait_for_card(
                    page, system, state["box_id"], "ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT"
                )
                assert "database_not_production" in card.inner_text()
            finally:
                box.stop()
    finally:
        with opened.transaction() as session:
            session.execute(update(Database).values(kind="production"))
        opened.dispose()


def test_removing_a_box_in_the_console_makes_it_forget_console_and_certificate(system, tmp_path):
    with chromium(tmp_path / "home", system.root) as browser:
        page = browser.new_page()
        log_in(page, system)
        data = tmp_path / "box4"
        box = pair_new_box(page, system, data, "--report-interval", "1")
        try:
            box_id = box.wait_for(lambda s: s["state"] == "valid")["box_id"]
            assert not TLSStore(data / "tls").current().temporary
            page.goto(f"{system.console}/iot/boxes/{box_id}")
            page.click("#remove summary")
            page.click("#remove button[type=submit]")
            box.wait_for(lambda s: s.get("code") == "ERR_IOT_HTTPS_CHECK_NO_SERVER")
            config = load_config(data)
            assert config.console_url is None and config.token is None
            assert config.db_uuid is None and config.enterprise_code is None
            assert TLSStore(data / "tls").current().temporary
            deadline = time.monotonic() + 30
            while page.goto(system.console + "/iot") and page.locator(f"#box-{box_id}").count():
                assert time.monotonic() < deadline, "the removed box stayed in the list"
                time.sleep(0.5)
        finally:
            box.stop()


# Two LAN addresses of one box, an IPv4 and an IPv6 (docs/design.md §2): two links on its card.
EARLY_WARNING_URLS = [
    "https://192-168-1-42.abcdefghijklmnop.iot.localhost/",
    "https://fd00--42.abcdefghijklmnop.iot.localhost/",
]


def a_box_failing_to_renew(page: object, system: DemoSystem) -> str:
    """A box paired through the console's page that reports, signed with its token, a certificate
    of 90 days with 12 left while it cannot reach the cloud: its ``box_id``."""
    device_key = pki.new_private_key()
    now = utcnow()
    fields = {
        "name": "Front till",
        "address": "192.168.1.42",
        "url": EARLY_WARNING_URLS[0],
        "urls": EARLY_WARNING_URLS,
        "state": "valid",  # it still serves the certificate it has
        "code": errors.LOAD_REQUEST_EXCEPTION,
        "not_before": (now - dt.timedelta(days=78)).isoformat(),
        "not_after": (now + dt.timedelta(days=12, hours=1)).isoformat(),
    }
    with httpx.Client(base_url=system.console, timeout=30) as http:
        answer = pair(http, pairing_link(page, system), device_key, name="Front till")
        assert answer.status_code == 200, answer.text
        box_id = pki.box_id_for(device_key.public_key())
        assert report(http, box_id, answer.json()["token"], fields).status_code == 200
    return box_id


def test_console_warns_of_a_certificate_that_runs_out_unrenewed(system, tmp_path):
    """The early warning on the card and on the box's page, with its code, what to do and the
    time left; the page is the README's screenshot."""
    summary = "Certificate expires in 12 days, renewal failing"
    fix = errors.box_error(errors.LOAD_REQUEST_EXCEPTION).fix
    with chromium(tmp_path / "home", system.root) as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        log_in(page, system)
        box_id = a_box_failing_to_renew(page, system)
        try:
            card = wait_for_card(page, system, box_id, summary)
            text = card.inner_text()
            assert "Certificate expiring" in text and errors.LOAD_REQUEST_EXCEPTION in text
            assert fix[0] in text  # the catalogue's first step, as the card shows it
            for url in EARLY_WARNING_URLS:
                assert card.locator(f"a[href='{url}']").count() == 1

            page.goto(f"{system.console}/iot/boxes/{box_id}")
            warning = page.locator("#early-warning")
            assert warning.is_visible() and summary in warning.inner_text()
            assert fix[0] in page.inner_text("#error")
            screenshot(page, "console-early-warning", tmp_path)
        finally:
            page.goto(f"{system.console}/iot/boxes/{box_id}")
            page.click("#remove summary")
            with page.expect_navigation():
                page.click("#remove button[type=submit]")
            page.click("#removing summary")
            with page.expect_navigation():
                page.click("#removing button[type=submit]")
