"""A box whose LAN addresses move, seen from its own network (tests/box/test_addresses.py).

Run as root under ``unshare --net --pid --mount-proc --fork --kill-child``: in the new network
namespace there is loopback, the veth links this script makes, and no route anywhere else (no
default route at all). A cloud (behind a stand-in that counts its x509 requests), a console
stand-in that keeps every status report, and a box run here; the box runs without
``--address``, listening on every address, IPv4 and IPv6 (a second box, with ``--address``,
runs beside it). The script then changes the box's addresses step by step as a network would —
a first DHCP lease, a new lease, a second link with IPv6, that link unplugged — and after each
step writes down what the box shows: ``state.json``, ``lanlock box status``, its pages opened at
each of its addresses, which ``Host`` addresses it answers, the last report the console heard,
the cloud's count of x509 requests, and the serial of the certificate each of its HTTPS URLs
serves. All of it goes to ``<work>/seen.json`` for the test to judge; every process started here
dies with the namespace at the latest.

Usage: python -m tests.box.moving_box_run WORK_DIR
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from lanlock import names
from lanlock.box.settings import BoxConfig, change_config
from lanlock.cloud.models import cloud_store
from lanlock.console_wire import STATUS_PATH, StatusReport
from tests.box.clients import text_of
from tests.boxes import Customer
from tests.servers import ZONE, RunningBox, lanlock_command, running_cloud, start_box
from tests.standin import StandIn, standin_cloud

ADDRESS_CHECK_INTERVAL = "0.5"  # seconds: the box's --address-check-interval here
WAIT = 30.0  # seconds for the box to show a change: the interval, a report, a loaded machine
# Host addresses asked of the box at every step: each one of its addresses at some step, and one
# that never is.
HOSTS = ("10.77.0.7", "10.77.0.9", "192.168.7.9", "fd77::9", "10.77.0.8")
PING_URL = re.compile(r'data-ping-url="([^"]+)ping"')


def lan_link(name: str, *cidrs: str) -> list[list[str]]:
    """``ip`` commands for a LAN link with ``cidrs``: one end of a veth pair whose far end is up,
    so that the link runs (a link without carrier is no way to reach the box); IPv6 without
    duplicate address detection, so that it can be used at once."""
    commands = [
        ["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
        ["ip", "link", "set", f"{name}p", "up"],
        ["ip", "link", "set", name, "up"],
    ]
    for cidr in cidrs:
        extra = ["nodad"] if ":" in cidr else []
        commands.append(["ip", "addr", "add", cidr, "dev", name, *extra])
    return commands


# (what happens, the ip commands that do it, the box's addresses afterwards, in order)
STEPS: tuple[tuple[str, list[list[str]], list[str]], ...] = (
    ("no lease yet", [], ["127.0.0.1"]),
    ("first lease", lan_link("lan0", "10.77.0.7/24"), ["10.77.0.7"]),
    (
        "new lease",
        [
            ["ip", "addr", "del", "10.77.0.7/24", "dev", "lan0"],
            ["ip", "addr", "add", "10.77.0.9/24", "dev", "lan0"],
        ],
        ["10.77.0.9"],
    ),
    (
        "second link",
        lan_link("lan1", "192.168.7.9/24", "fd77::9/64"),
        ["10.77.0.9", "192.168.7.9", "fd77::9"],
    ),
    ("second link unplugged", [["ip", "link", "del", "lan1"]], ["10.77.0.9"]),
)


class Console:
    """The console's side of status reports, as the console reads them (StatusReport)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        console = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == STATUS_PATH:
                    console.reports.append(StatusReport.from_json(json.loads(body)).to_json())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def last_report(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The newest report once it is ``wanted`` (within :data:`WAIT`), else the newest."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.reports and wanted(self.reports[-1]):
                break
            time.sleep(0.1)
        return self.reports[-1] if self.reports else None


@contextlib.contextmanager
def console_standin() -> Iterator[Console]:
    console = Console()
    serving = threading.Thread(target=console.server.serve_forever, daemon=True)
    serving.start()
    try:
        yield console
    finally:
        console.server.shutdown()
        console.server.server_close()


def web_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def homepage_at(box: RunningBox, address: str) -> dict[str, Any]:
    """The homepage and /status.json, asked over the LAN link at ``address`` itself."""
    base = f"http://{web_host(address)}:{box.http_port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/")
        status = http.get("/status.json").json()
    ping = PING_URL.search(page.text)
    return {
        "status_code": page.status_code,
        "page": page.text,
        "text": text_of(page.text),
        "ping_url": ping.group(1) if ping else None,
        "status_json": status,
    }


def answered_hosts(box: RunningBox) -> dict[str, int]:
    """The status of ``GET /`` with each of :data:`HOSTS` as ``Host``, sent over loopback (an
    address the box no longer has cannot be connected to, but a browser may still name it)."""
    with httpx.Client(base_url=box.http_url, timeout=30) as http:
        return {
            host: http.get("/", headers={"Host": f"{web_host(host)}:{box.http_port}"}).status_code
            for host in HOSTS
        }


def served_serial(url: str, root: Path) -> str:
    """The serial of the certificate the box serves under ``url``'s name, at the address the
    name stands for, verified against the cloud's root and the name."""
    parts = urlsplit(url)
    name = names.parse_host_name(parts.hostname or "", ZONE)
    context = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection((str(name.address), parts.port or 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def box_status(box: RunningBox, *extra: str) -> str:
    return subprocess.run(
        lanlock_command("box", "status", "--data", str(box.data_dir), *extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout


def observe(
    box: RunningBox, console: Console, cloud: StandIn, root: Path, expected: list[str]
) -> dict[str, Any]:
    """What the box shows once ``state.json`` names ``expected`` (within :data:`WAIT`)."""
    state = box.wait_for(
        lambda s: s.get("state") == "valid" and s.get("addresses") == expected, timeout=WAIT
    )
    return {
        "expected": expected,
        "state": state,
        "status_json": json.loads(box_status(box, "--json")),
        "status_text": box_status(box),
        "pages": {address: homepage_at(box, address) for address in expected},
        "hosts": answered_hosts(box),
        "report": console.last_report(lambda report: report["urls"] == state["urls"]),
        "x509_requests": len(cloud.arrivals),
        "serials": {url: served_serial(url, root) for url in state["urls"]},
    }


def start_moving_box(work: Path, store_url: str, cloud: StandIn, console: Console) -> RunningBox:
    """A paying customer's box that knows its console, with no ``--address``."""
    store = cloud_store(store_url, pool_size=1)
    try:
        customer = Customer.create(store)
    finally:
        store.dispose()

    def paired(config: BoxConfig) -> None:
        config.console_url, config.token = console.url, secrets.token_hex(32)
        config.db_uuid, config.enterprise_code = customer.db_uuid, customer.code

    change_config(work / "box", paired)
    return start_box(
        work / "box",
        *("--cloud", cloud.url, "--host", "::"),
        *("--address-check-interval", ADDRESS_CHECK_INTERVAL, "--report-interval", "3600"),
        address="",  # none: the box follows its interfaces
    )


def main(work: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    seen: dict[str, Any] = {"steps": []}
    root = work / "root.pem"
    with (
        running_cloud(work / "cloud") as real_cloud,
        standin_cloud(200) as cloud,
        console_standin() as console,
        contextlib.ExitStack() as started,
    ):
        cloud.forward_to = real_cloud.url
        root.write_text(real_cloud.root_pem())
        box = start_moving_box(work, real_cloud.store_url, cloud, console)
        started.callback(box.stop)
        # A box whose --address is set keeps it, whatever its interfaces do.
        pinned = start_box(work / "pinned", "--address-check-interval", ADDRESS_CHECK_INTERVAL)
        started.callback(pinned.stop)
        for what, commands, expected in STEPS:
            for command in commands:
                subprocess.run(command, check=True)
            seen["steps"].append({"what": what} | observe(box, console, cloud, root, expected))
        seen["log"] = (box.data_dir / "logs" / "lanlock-box.log").read_text()
        seen["pinned"] = pinned.state_file()
    (work / "seen.json").write_text(json.dumps(seen, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
