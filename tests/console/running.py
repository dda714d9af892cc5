"""The real ``lanlock console serve`` on a free loopback port, and what tests do with it."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import html
import json
import re
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from lanlock import pki
from lanlock.console import record
from lanlock.console.models import Base, ConsoleRecord, console_store
from lanlock.jws import signed_body
from lanlock.links import body_signature
from lanlock.store import Store
from tests.servers import (
    free_port,
    lanlock_command,
    stop_process,
    wait_until_answering,
    with_fresh_ports,
)
from tests.threads import run_together

# How `serve` showed its first password before it only said where the password is kept.
PASSWORD_LINE = re.compile(r"Admin password: (\S+)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class RunningConsole:
    url: str
    data_dir: Path
    store_url: str
    process: subprocess.Popen[bytes]
    log: Path
    verify: ssl.SSLContext | bool = True
    admin_password: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``lanlock console <args>`` on this console's data folder and store."""
        return subprocess.run(
            lanlock_command(
                "console", *args, "--data", str(self.data_dir), "--store", self.store_url
            ),
            check=check,
            capture_output=True,
            text=True,
        )

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def password(self) -> str:
        """As ``lanlock console password`` shows it (``serve`` only says where it is kept)."""
        if not self.admin_password:
            self.admin_password = self.cli("password").stdout.strip()
        return self.admin_password

    def printed_passwords(self) -> list[str]:
        return PASSWORD_LINE.findall(self.log_text())

    def settings(self) -> ConsoleRecord:
        store = self.store()
        try:
            return record.load(store)
        finally:
            store.dispose()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, verify=self.verify)

    def logged_in(self, password: str | None = None) -> httpx.Client:
        """A client holding a fresh login session."""
        http = self.client()
        answer = log_in(http, password or self.password())
        assert answer.status_code == 303, answer.text
        return http

    def store(self) -> Store:
        return console_store(self.store_url, pool_size=1)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the console's tables but the sessions: to tell that nothing changed."""
        store = self.store()
        try:
            with store.transaction() as session:
                return {
                    table.name: sorted(map(tuple, session.execute(select(table)).all()))
                    for table in Base.metadata.sorted_tables
                    if table.name != "console_sessions"
                }
        finally:
            store.dispose()

    def stop(self) -> None:
        stop_process(self.process)


@with_fresh_ports
def start_console(
    data_dir: Path,
    *extra: str,
    store_url: str | None = None,
    port: int | None = None,
    verify: ssl.SSLContext | bool = True,
    host_name: str = "127.0.0.1",
) -> RunningConsole:
    """``lanlock console serve`` on a free loopback port, waiting until it answers.

    ``host_name`` is how clients name it: ``localhost`` for a TLS certificate of that name.
    """
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    store_url = store_url or f"sqlite:///{data_dir / 'console.db'}"
    log = data_dir / f"console-{port}.log"
    process = subprocess.Popen(
        lanlock_command(
            "console",
            "serve",
            *("--data", str(data_dir), "--store", store_url, "--port", str(port)),
            *extra,
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    scheme = "https" if "--tls-cert" in extra else "http"
    console = RunningConsole(
        f"{scheme}://{host_name}:{port}", data_dir, store_url, process, log, verify
    )
    wait_until_answering("the console", process, log, console.url + "/healthz", verify)
    return console


@contextlib.contextmanager
def running_console(data_dir: Path, *extra: str, **kw: Any) -> Iterator[RunningConsole]:
    console = start_console(data_dir, *extra, **kw)
    try:
        yield console
    finally:
        console.stop()


# --- what a browser and a box do ---------------------------------------------------------------


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "no form token on the page"
    return match.group(1)


def log_in(http: httpx.Client, password: str) -> httpx.Response:
    token = csrf_of(http.get("/login").text)
    return http.post("/login", data={"csrf": token, "password": password, "next": "/iot"})


def new_box_id() -> str:
    """A ``box_id``-shaped value (docs/design.md §3): 26 lower-case base32 characters."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


def pairing_body(device_key: ec.EllipticCurvePrivateKey, link: str, **override: Any) -> bytes:
    """A box's pairing request as docs/console-protocol.md §1 describes it, signed by its device
    key for this one link; ``override`` changes fields of the payload (as a forger would)."""
    payload = {
        "box_id": pki.box_id_for(device_key.public_key()),
        "name": "Front desk",
        "address": "10.0.0.7",
        "version": "0.1.0",
        "link_code_sha256": hashlib.sha256(link.rsplit("/", 1)[-1].encode()).hexdigest(),
    }
    return signed_body(device_key, payload | override)


def post_pairing(http: httpx.Client, link: str, body: bytes) -> httpx.Response:
    return http.post(link, content=body, headers={"Content-Type": "application/jose+json"})


def pair(
    http: httpx.Client,
    link: str,
    device_key: ec.EllipticCurvePrivateKey | None = None,
    name: str = "Front desk",
) -> httpx.Response:
    """A box pairs through ``link``: a new box unless ``device_key`` is an existing one's."""
    key = device_key or pki.new_private_key()
    return post_pairing(http, link, pairing_body(key, link, name=name))


def report(
    http: httpx.Client,
    box_id: str,
    token_hex: str,
    fields: dict[str, Any] | None = None,
    at: int | None = None,
    body: bytes | None = None,
) -> httpx.Response:
    """A status report signed as docs/console-protocol.md §2 says."""
    moment = int(time.time()) if at is None else at
    payload = body if body is not None else json.dumps(status_fields(box_id, fields)).encode()
    return http.post(
        "/iot/status",
        content=payload,
        headers={
            "Content-Type": "application/json",
            "X-Lanlock-Box": box_id,
            "X-Lanlock-Time": str(moment),
            "X-Lanlock-Signature": body_signature(bytes.fromhex(token_hex), moment, payload),
        },
    )


def status_fields(box_id: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    base = {
        "box_id": box_id,
        "name": "Front desk",
        "address": "10.0.0.7",
        "url": "https://10-0-0-7.abcdefghijklmnop.iot.test:8943/",
        "state": "valid",
        "code": None,
        "reason": None,
        "not_after": "2027-02-23T12:00:00+00:00",
        "version": "0.1.0",
    }
    return base | (fields or {})


def set_subscription_code(admin: httpx.Client, code: str) -> None:
    """What the admin does on the settings page before pairing the first box."""
    page = admin.get("/settings").text
    assert admin.post("/settings", data={"csrf": csrf_of(page), "code": code}).status_code == 303


def make_link(admin: httpx.Client, name: str = "") -> str:
    """What the admin gets from the "Pair a box" page."""
    page = admin.post(
        "/iot/pairing", data={"csrf": csrf_of(admin.get("/iot/pairing").text), "name": name}
    )
    assert page.status_code == 200, page.text
    match = re.search(r'id="pair-link" readonly value="([^"]+)"', page.text)
    assert match, page.text
    return html.unescape(match.group(1))


def paired(console: RunningConsole, admin: httpx.Client, name: str = "") -> tuple[str, str]:
    """A freshly paired box: its ``box_id`` and token."""
    device_key = pki.new_private_key()
    with console.client() as http:
        answer = pair(http, make_link(admin, name), device_key)
    assert answer.status_code == 200, answer.text
    return pki.box_id_for(device_key.public_key()), answer.json()["token"]


def text_of(page: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    inline_dropped = re.sub(r"</?(code|a|strong|span)\b[^>]*>", "", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline_dropped)).split())


def plain(catalogue_text: str) -> str:
    return " ".join(catalogue_text.replace("`", "").split())


def race_for(console: RunningConsole, link: str, boxes: int = 4) -> list[int]:
    """``boxes`` boxes using one link at the same instant: their answers' statuses, sorted."""
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(console.client()) for _ in range(boxes)]
        answers, _ = run_together([functools.partial(pair, http, link) for http in clients], 60)
    return sorted(answer.status_code for answer in answers)
