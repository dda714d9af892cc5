"""The console with a real box and a real cloud: pairing by ``lanlock box connect``, the box's own
reports on its card, and a "Download logs" link that the box itself accepts."""

from __future__ import annotations

import html
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lanlock.cloud import admin as cloud_admin
from lanlock.cloud.models import cloud_store
from tests.console.conftest import CODE
from tests.console.running import RunningConsole, make_link, text_of
from tests.servers import (
    RunningCloud,
    lanlock_command,
    running_cloud,
    start_box,
)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("console-cloud")) as running:
        yield running


def wait_for_page(fetch: Callable[[], str], pattern: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        page = fetch()
        if re.search(pattern, page):
            return page
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never showed:\n{text_of(page)}")


def test_a_paired_box_gets_its_certificate_and_shows_on_its_card(
    console: RunningConsole, admin: httpx.Client, cloud: RunningCloud, tmp_path: Path
):
    register_console_database(console, cloud)
    box = start_box(tmp_path / "box", "--cloud", cloud.url)
    try:
        link = make_link(admin, "Front desk")
        connected = subprocess.run(
            lanlock_command("box", "connect", link, "--data", str(box.data_dir)),
            capture_output=True,
            text=True,
        )
        assert connected.returncode == 0, connected.stderr
        state = box.wait_for(lambda s: s.get("state") == "valid" and not s.get("code"))

        page = wait_for_page(lambda: admin.get(f"/iot/boxes/{state['box_id']}").text, "HTTPS ready")
        assert "Front desk" in page and f'href="{state["url"]}"' in page
        found = re.search(r'id="download-logs" href="([^"]+)"', page)
        assert found, text_of(page)
        signed = html.unescape(found.group(1)).removeprefix(state["url"].rstrip("/"))
        # A browser opens it on the box's HTTPS name; the box's HTTP port serves the same app,
        # and the signature covers only the path and the expiry.
        with httpx.Client(base_url=box.http_url, timeout=30) as http:
            downloaded = http.get(signed)
            assert downloaded.status_code == 200, downloaded.text
            assert "attachment" in downloaded.headers["content-disposition"]
            altered = signed[:-1] + ("1" if signed.endswith("0") else "0")
            assert http.get(altered).status_code == 403
    finally:
        box.stop()


def register_console_database(console: RunningConsole, cloud: RunningCloud) -> None:
    """The vendor knows this console's database and the subscription whose code the admin set."""
    store = cloud_store(cloud.store_url, pool_size=1)
    try:
        db_uuid = console.settings().db_uuid
        if db_uuid not in {row["uuid"] for row in cloud_admin.list_databases(store)}:
            cloud_admin.add_database(store, db_uuid, "shop", "production")
            cloud_admin.add_subscription(store, CODE, db_uuid, "in_progress", 5)
    finally:
        store.dispose()


def test_the_cloud_the_console_names_reaches_the_box_at_pairing(
    console: RunningConsole, admin: httpx.Client, cloud: RunningCloud, tmp_path: Path
):
    """A box started with no --cloud asks the cloud the console's settings name."""
    register_console_database(console, cloud)
    console.cli("settings", "--cloud", cloud.url)
    box = start_box(tmp_path / "box")  # no --cloud: the default would be 127.0.0.1:8700
    try:
        box.wait_for(lambda s: s.get("state") not in (None, "checking"))
        connected = subprocess.run(
            lanlock_command("box", "connect", make_link(admin), "--data", str(box.data_dir)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert connected.returncode == 0, connected.stderr
        state = box.wait_for(lambda s: s.get("state") == "valid" and not s.get("code"))
        assert state["url"].startswith("https://10-0-0-7.")
    finally:
        box.stop()
        console.cli("settings", "--cloud", "")


def test_a_box_started_with_cloud_keeps_its_own(
    console: RunningConsole, admin: httpx.Client, cloud: RunningCloud, tmp_path: Path
):
    """--cloud wins over the console's: here the console names a cloud that is not there."""
    register_console_database(console, cloud)
    console.cli("settings", "--cloud", "http://127.0.0.1:1")
    box = start_box(tmp_path / "box", "--cloud", cloud.url)
    try:
        connected = subprocess.run(
            lanlock_command("box", "connect", make_link(admin), "--data", str(box.data_dir)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert connected.returncode == 0, connected.stderr
        box.wait_for(lambda s: s.get("state") == "valid" and not s.get("code"))
    finally:
        box.stop()
        console.cli("settings", "--cloud", "")
