"""No secret in any log or page: a real console pairs a real box, at log level INFO and at DEBUG.

The secrets are the ones a reader of a log (or of the box's public homepage) could use: the
pairing links and their codes, the signatures of "Download logs" links, the per-box tokens, the
subscription code, both admin passwords and the console's session cookie. The test does what an
admin does — pairs the box through its homepage, downloads its log through the console's signed
link and with the password, sets the credentials — once at INFO and once at DEBUG, then reads
every log file in the box's and the console's data folders and every page it fetched.

The console's own pages for its logged-in admin show a pairing link (the page that makes it)
and a signed "Download logs" link (the box's page): that is what they are for, so only those
two kinds of secret are allowed there, and only there. The console starts here for the first
time, so its first-start output (captured in its data folder) is read too.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lanlock import errors
from lanlock.box.settings import load_config
from lanlock.cloud import admin as cloud_admin
from lanlock.cloud.models import cloud_store
from lanlock.console import sessions
from tests.box.clients import admin_password, by_ip, by_name, cloud_root, form_token, text_of
from tests.console.running import RunningConsole, csrf_of, make_link, running_console
from tests.servers import RunningBox, RunningCloud, running_cloud, start_box

CODE = "SUB-2026-SECRET-7731"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")


@dataclass
class Seen:
    """Every page fetched (box's and console's), and every secret met on the way."""

    box_pages: list[tuple[str, str]] = field(default_factory=list)
    console_pages: list[tuple[str, str]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    shown_by_console: set[str] = field(default_factory=set)  # what its pages are there to show

    def box_hook(self, response: httpx.Response) -> None:
        response.read()
        self.box_pages.append((f"box {response.request.method} {response.url}", response.text))

    def console_hook(self, response: httpx.Response) -> None:
        response.read()
        where = f"console {response.request.method} {response.url}"
        self.console_pages.append((where, response.text))

    def secret(self, what: str, value: str | None, shown_by_console: bool = False) -> None:
        assert value, what
        self.secrets[what] = value
        if shown_by_console:
            self.shown_by_console.add(what)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("secrets-cloud")) as running:
        yield running


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    with running_console(tmp_path_factory.mktemp("secrets-console")) as running:
        yield running


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def admin(console: RunningConsole, cloud: RunningCloud, seen: Seen) -> Iterator[httpx.Client]:
    """The console's admin, logged in, with the subscription code set; the cloud knows both."""
    http = console.logged_in()
    http.event_hooks = {"response": [seen.console_hook]}
    page = http.get("/settings").text
    assert http.post("/settings", data={"csrf": csrf_of(page), "code": CODE}).status_code == 303
    store = cloud_store(cloud.store_url, pool_size=1)
    db_uuid = console.settings().db_uuid
    cloud_admin.add_database(store, db_uuid, "shop", "production")
    cloud_admin.add_subscription(store, CODE, db_uuid, "in_progress", 3)
    store.dispose()
    seen.secret("console session cookie", http.cookies.get(sessions.COOKIE))
    seen.secret("console admin password", console.password())
    seen.secret("subscription code", CODE)
    yield http
    http.close()


@pytest.fixture(scope="module")
def box(cloud: RunningCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    running = start_box(tmp_path_factory.mktemp("secrets-box"), "--cloud", cloud.url)
    running.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)
    yield running
    running.stop()


# --- what the admin does ---------------------------------------------------------------------


def pair_through_the_homepage(box: RunningBox, admin: httpx.Client, seen: Seen, tag: str) -> None:
    link = make_link(admin, "Front desk")
    seen.secret(f"pairing link ({tag})", link, shown_by_console=True)
    seen.secret(f"pairing code ({tag})", link.rsplit("/", 1)[1], shown_by_console=True)
    with by_ip(box, event_hooks={"response": [seen.box_hook]}) as http:
        fields = {"csrf": form_token(http.get("/").text), "password": admin_password(box)}
        answer = http.post("/connect", data=fields | {"link": link})
    assert answer.status_code == 303, text_of(answer.text)
    box.wait_for(lambda s: s.get("state") == "valid" and not s.get("code"))
    seen.secret(f"box token ({tag})", load_config(box.data_dir).token)


def download_through_the_console(
    box: RunningBox, admin: httpx.Client, root: Path, seen: Seen, tag: str
) -> None:
    box_id = box.state_file()["box_id"]
    deadline = time.monotonic() + 60
    while True:
        found = re.search(
            r'id="download-logs" href="([^"]+)"', admin.get(f"/iot/boxes/{box_id}").text
        )
        if found:
            link = urlsplit(html.unescape(found.group(1)))
            with by_name(box, root, event_hooks={"response": [seen.box_hook]}) as https:
                answer = https.get(f"{link.path}?{link.query}")
            if answer.status_code == 200:  # signed with the token of the latest pairing
                break
        assert time.monotonic() < deadline, "the console never showed a working link"
        time.sleep(0.5)
    assert "attachment" in answer.headers["content-disposition"]
    signature = parse_qs(link.query)["signature"][0]
    seen.secret(f"log link signature ({tag})", signature, shown_by_console=True)


def use_the_admin_forms(box: RunningBox, root: Path, seen: Seen, **level: str) -> None:
    """Credentials, the admin's log download and (when given) a new log level, over HTTPS."""
    db_uuid = load_config(box.data_dir).db_uuid
    with by_name(box, root, event_hooks={"response": [seen.box_hook]}) as https:
        fields = {"csrf": form_token(https.get("/").text), "password": admin_password(box)}
        credentials = fields | {"db_uuid": db_uuid, "code": CODE, "action": "save"}
        assert https.post("/credentials", data=credentials).status_code == 303
        assert https.post("/logs/download", data=fields).status_code == 200
        if level:
            assert https.post("/log-level", data=fields | level).status_code == 303


def disconnect(box: RunningBox, root: Path, seen: Seen) -> None:
    with by_name(box, root, event_hooks={"response": [seen.box_hook]}) as https:
        fields = {"csrf": form_token(https.get("/").text), "password": admin_password(box)}
        assert https.post("/disconnect", data=fields).status_code == 303
    box.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)


# --- what is read after ------------------------------------------------------------------------


def log_files(*folders: Path) -> dict[str, str]:
    return {
        str(path): path.read_text(errors="replace")
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and (".log" in path.name or path.suffix == ".out")
    }


def leaks(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{what} in {where}: …{text[max(0, text.find(value) - 80) : text.find(value) + 40]!r}…"
        for where, text in texts.items()
        for what, value in secrets.items()
        if value in text
    ]


def test_no_secret_in_any_log_or_page_at_info_and_at_debug(
    box: RunningBox,
    console: RunningConsole,
    admin: httpx.Client,
    cloud: RunningCloud,
    seen: Seen,
) -> None:
    root = cloud_root(cloud)
    seen.secret("box admin password", admin_password(box))
    box_log = box.data_dir / "logs" / "lanlock-box.log"

    # At INFO (the default).
    pair_through_the_homepage(box, admin, seen, "INFO")
    download_through_the_console(box, admin, root, seen, "INFO")
    use_the_admin_forms(box, root, seen, level="DEBUG")
    at_info = box_log.read_text()

    # At DEBUG: everything again, from a new pairing (and so a new token) on.
    disconnect(box, root, seen)
    pair_through_the_homepage(box, admin, seen, "DEBUG")
    download_through_the_console(box, admin, root, seen, "DEBUG")
    use_the_admin_forms(box, root, seen)
    with by_ip(box, event_hooks={"response": [seen.box_hook]}) as http:
        http.get("/", headers={"Host": CODE})  # a secret typed where a name goes, logged at DEBUG
    at_debug = box_log.read_text()[len(at_info) :]

    logs = log_files(box.data_dir, console.data_dir)
    found = leaks(logs, seen.secrets)
    found += leaks(dict(seen.box_pages), seen.secrets)
    not_for_console = {k: v for k, v in seen.secrets.items() if k not in seen.shown_by_console}
    found += leaks(dict(seen.console_pages), not_for_console)
    assert not found, "\n".join(found)

    # Third-party libraries (httpx, httpcore, …) log at WARNING unless the level is DEBUG; the
    # box's request to the pairing link was logged at DEBUG, and redacted (above).
    third_party = [line for line in at_info.splitlines() if re.search(r" (httpx|httpcore)", line)]
    assert not third_party, third_party
    assert any("/iot/pair/" in line and " httpx: " in line for line in at_debug.splitlines())

    # The public homepage shows neither the log nor the database UUID.
    db_uuid = load_config(box.data_dir).db_uuid
    for where, text in seen.box_pages:
        if where.startswith("box GET") and "/logs/download" not in where:
            assert db_uuid not in text, where
            assert not LOG_LINE.search(html.unescape(text)), where
