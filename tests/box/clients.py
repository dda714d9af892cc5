"""How tests reach a running box: by IP over HTTP, by its HTTPS name, from another source address.

A box's HTTPS name (``10-0-0-7.<scope>.<zone>``) resolves nowhere in the tests: a client by name
connects to the loopback port and sends the name as TLS server name (checked against the
cloud's root) and as Host, as a browser on the box's network would.
"""

from __future__ import annotations

import functools
import html
import re
import secrets
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from lanlock.box.settings import BoxConfig, change_config
from lanlock.store import Store
from tests.boxes import Customer
from tests.servers import RunningBox, RunningCloud, lanlock_command, start_box

UNREACHABLE_CONSOLE = "http://127.0.0.1:1"  # a console URL is what makes a box "connected"
FORM_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


@functools.cache
def _password_of(data_dir: Path) -> str:
    return subprocess.run(
        lanlock_command("box", "password", "--data", str(data_dir)),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def admin_password(box: RunningBox) -> str:
    """What `lanlock box password` prints (asked once per box)."""
    return _password_of(box.data_dir)


def form_token(page: str) -> str:
    match = FORM_TOKEN.search(page)
    assert match, "no form token on the page"
    return match.group(1)


def text_of(page: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    inline_dropped = re.sub(r"</?(code|a|strong|span)\b[^>]*>", "", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline_dropped)).split())


def by_ip(box: RunningBox, source: str | None = None, **kw: object) -> httpx.Client:
    """The box's HTTP listener, from ``source`` (another 127.x address) when given."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    return httpx.Client(base_url=box.http_url, timeout=30, transport=transport, **kw)  # type: ignore[arg-type]


class _ServerName(httpx.HTTPTransport):
    """Sends ``name`` as the TLS server name of every connection (SNI and certificate check)."""

    def __init__(self, name: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.name = name

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["sni_hostname"] = self.name
        return super().handle_request(request)


def by_name(box: RunningBox, root: Path, source: str | None = None, **kw: object) -> httpx.Client:
    """The box's HTTPS listener under its name, trusting only the cloud's ``root``."""
    parts = urlsplit(box.state_file()["url"])
    assert parts.hostname, "the box has no HTTPS name yet"
    transport = _ServerName(
        parts.hostname,
        verify=ssl.create_default_context(cafile=str(root)),
        local_address=source,
    )
    return httpx.Client(
        base_url=f"https://127.0.0.1:{box.https_port}",
        headers={"Host": parts.netloc},
        transport=transport,
        timeout=30,
        **kw,  # type: ignore[arg-type]
    )


def has_certificate(box: RunningBox) -> bool:
    state = box.state_file()
    return state.get("state") == "valid" and bool(state.get("url"))


def admin_client(box: RunningBox, root: Path) -> httpx.Client:
    """Where the admin uses the forms: the HTTPS name once the box has its certificate."""
    return by_name(box, root) if has_certificate(box) else by_ip(box)


def fresh_form(box: RunningBox, root: Path, **fields: str) -> dict[str, str]:
    """A form token from the admin's homepage, the admin password, and ``fields``."""
    with admin_client(box, root) as http:
        page = http.get("/").text
    return {"csrf": form_token(page), "password": admin_password(box)} | fields


def post(
    box: RunningBox,
    root: Path,
    path: str,
    fields: dict[str, str],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    with admin_client(box, root) as http:
        return http.post(path, data=fields, headers=headers or {})


def cloud_root(cloud: RunningCloud) -> Path:
    path = cloud.data_dir / "box-clients-root.pem"
    if not path.exists():
        path.write_text(cloud.root_pem())
    return path


def start_valid_box(data: Path, cloud: RunningCloud, store: Store, name: str = "") -> RunningBox:
    """A named, connected box with credentials and a console token, once its certificate is in."""
    customer = Customer.create(store)

    def connected(config: BoxConfig) -> None:
        config.name = name
        config.console_url = UNREACHABLE_CONSOLE
        config.db_uuid, config.enterprise_code = customer.db_uuid, customer.code
        config.token = secrets.token_hex(32)

    change_config(data, connected)
    box = start_box(data, "--cloud", cloud.url)
    try:
        box.wait_for(lambda s: s.get("state") == "valid" and not s.get("code"))
    except BaseException:
        box.stop()
        raise
    return box
