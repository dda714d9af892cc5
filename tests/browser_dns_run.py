"""Chromium reaching a box by the name ``lanlock dns serve`` gives it, and by nothing else.

tests/test_browser_dns.py runs this as root under ``unshare --net --mount --pid``. In the new
network namespace the box's LAN address sits on one end of a veth pair and nothing leads
outside; in the new mount namespace /etc/resolv.conf names the DNS server on 127.0.0.1:53 (a
bind mount the host never sees). Cloud, DNS and box run here; chromium, with no host-resolver
rule and trusting only the cloud's root, opens the box's URL. What each part saw goes to
``<work>/seen.json`` for the test to judge. Every process started here is stopped, and dies with
the namespace's first process at the latest.

Usage: python -m tests.browser_dns_run WORK_DIR
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from lanlock import names
from lanlock.cloud.models import cloud_store
from tests import test_browser
from tests.box.test_lifecycle import give_credentials
from tests.boxes import Customer
from tests.dns.running import RunningDNS
from tests.servers import ZONE, RunningBox, RunningCloud, lanlock_command, start_box, start_cloud

BOX_ADDRESS = "10.77.0.7"
DNS_PORT = 53  # a resolv.conf cannot name another port
# A public address: the zone never names one, so our DNS answers NXDOMAIN for its label.
UNKNOWN_ADDRESS = "8.8.8.8"
SCREENSHOT = "browser-through-dns"
START_SECONDS = 30.0
PAGE_TIMEOUT_MS = 20_000
ETH_P_IP = 0x0800
ETHERNET_HEADER = 14  # loopback frames carry one too, with zero addresses


def join_the_lan() -> None:
    """Loopback, and the box's LAN address on a veth pair whose links are up.

    Not on loopback: chromium counts only a running non-loopback link as a network, and while
    it believes itself offline it reports every failed lookup as ERR_INTERNET_DISCONNECTED.
    """
    for command in (
        "link set lo up",
        "link add lan0 type veth peer name lan1",
        f"addr add {BOX_ADDRESS}/24 dev lan0",
        "link set lan1 up",
        "link set lan0 up",
    ):
        subprocess.run(["ip", *command.split()], check=True)


def resolve_with_our_dns(work: Path) -> None:
    """The system resolver, and chromium's own, ask only 127.0.0.1:53 from now on.

    One try of one second: a lookup with the DNS stopped fails at once instead of after retries.
    """
    resolv_conf = work / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", str(resolv_conf), "/etc/resolv.conf"], check=True)


def start_dns_on_port_53(store_url: str, work: Path) -> RunningDNS:
    log = work / "dns.log"
    process = subprocess.Popen(
        lanlock_command(
            "dns",
            "serve",
            *("--store", store_url, "--zone", ZONE, "--port", str(DNS_PORT), "--workers", "1"),
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return RunningDNS(DNS_PORT, store_url, process, log).answering(START_SECONDS)


def start_paid_box(store_url: str, cloud: RunningCloud, work: Path) -> RunningBox:
    """A box of a paying customer, listening on every address of the namespace."""
    store = cloud_store(store_url, pool_size=1)
    try:
        customer = Customer.create(store)
    finally:
        store.dispose()
    give_credentials(work / "box", customer)
    return start_box(work / "box", "--cloud", cloud.url, "--host", "0.0.0.0", address=BOX_ADDRESS)


def resolved_by_the_system(host: str) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, 443, socket.AF_INET)})


def answered_by_our_dns(server: RunningDNS, host: str) -> dict[str, Any]:
    reply = server.ask(host, "A")
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "addresses": sorted(str(rdata) for rrset in reply.answer for rdata in rrset),
    }


@contextlib.contextmanager
def dns_on_the_wire() -> Iterator[list[dict[str, Any]]]:
    """Every DNS message over UDP to or from port 53 on loopback while the block runs, captured
    from the link: what was asked there, and what our DNS answered."""
    messages: list[dict[str, Any]] = []
    done = threading.Event()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP)) as link:
        link.bind(("lo", 0))
        link.settimeout(0.1)
        capturing = threading.Thread(target=capture, args=(link, done, messages))
        capturing.start()
        try:
            yield messages
        finally:
            done.set()
            capturing.join(5)


def capture(link: socket.socket, done: threading.Event, messages: list[dict[str, Any]]) -> None:
    """Summaries of the DNS messages on ``link``, until ``done`` and nothing more is queued."""
    while True:
        try:
            frame, (_, _, packet_type, *_) = link.recvfrom(65535)
        except TimeoutError:
            if done.is_set():
                return
            continue
        # Loopback shows each packet twice, going out and coming in: keep one of them.
        message = dns_message(frame) if packet_type != socket.PACKET_OUTGOING else None
        if message is not None:
            messages.append(summary(message))


def dns_message(frame: bytes) -> dns.message.Message | None:
    ip = frame[ETHERNET_HEADER:]
    if len(ip) < 20 or ip[9] != socket.IPPROTO_UDP:
        return None
    udp = ip[(ip[0] & 0x0F) * 4 :]
    if DNS_PORT not in struct.unpack("!HH", udp[:4]):
        return None
    try:
        return dns.message.from_wire(udp[8:])
    except dns.exception.DNSException:
        return None


def summary(message: dns.message.Message) -> dict[str, Any]:
    question = message.question[0] if message.question else None
    return {
        "answer": message.flags & dns.flags.QR != 0,
        "name": question.name.to_text(omit_final_dot=True).lower() if question is not None else "",
        "type": dns.rdatatype.to_text(question.rdtype) if question is not None else "",
        "rcode": dns.rcode.to_text(message.rcode()),
        "addresses": sorted(
            str(rdata)
            for rrset in message.answer
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            for rdata in rrset
        ),
    }


def navigation_error(browser: Any, url: str) -> str:
    """The error chromium gives for ``url`` in a page of its own, or "" if the page loaded."""
    from playwright.sync_api import Error

    try:
        new_page(browser).goto(url)
    except Error as error:
        return error.message
    return ""


def new_page(browser: Any) -> Any:
    page = browser.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    return page


def what_chromium_sees(box_url: str, unknown_url: str, root: Path, work: Path) -> dict[str, Any]:
    with test_browser.chromium(work / "home", root, resolver=()) as browser:
        page = new_page(browser)
        response = page.goto(box_url)
        seen = {
            "status": response.status,
            "ok": response.ok,
            "url": page.url,
            "title": page.title(),
            "server_address": response.server_addr(),
            "certificate": response.security_details(),
        }
        test_browser.screenshot(page, SCREENSHOT, work)
        seen["unknown_name_error"] = navigation_error(browser, unknown_url)
        version = new_page(browser)
        version.goto("chrome://version")
        seen["command_line"] = version.inner_text("#command_line")
    return seen


def what_chromium_sees_without_dns(box_url: str, root: Path, work: Path) -> str:
    """A new browser, so an empty host cache, asked for the box while everything but the DNS
    still runs."""
    with test_browser.chromium(work / "home-without-dns", root, resolver=()) as browser:
        return navigation_error(browser, box_url)


def main(work: Path) -> None:
    join_the_lan()
    resolve_with_our_dns(work)
    store_url = f"sqlite:///{work / 'store.db'}"
    root = work / "root.pem"
    with contextlib.ExitStack() as started:
        cloud = start_cloud(store_url, work / "cloud")
        started.callback(cloud.stop)
        root.write_text(cloud.root_pem())
        server = start_dns_on_port_53(store_url, work)
        started.callback(server.stop)
        box = start_paid_box(store_url, cloud, work)
        started.callback(box.stop)
        box_url = box.wait_for(lambda state: state.get("state") == "valid")["url"]
        parts = urlsplit(box_url)
        host = names.parse_host_name(parts.hostname or "", ZONE)
        unknown = names.host_name(UNKNOWN_ADDRESS, host.scope, host.zone)
        seen: dict[str, Any] = {
            "box_url": box_url,
            "resolv_conf": Path("/etc/resolv.conf").read_text(),
            "system_resolver": resolved_by_the_system(host.name),
            "dns_box_answer": answered_by_our_dns(server, host.name),
            "dns_unknown_answer": answered_by_our_dns(server, unknown),
        }
        unknown_url = names.https_url(UNKNOWN_ADDRESS, host.scope, host.zone, parts.port or 443)
        with dns_on_the_wire() as wire:
            seen["chromium"] = what_chromium_sees(box_url, unknown_url, root, work)
        seen["chromium_dns_wire"] = wire
        server.stop()
        seen["without_dns_error"] = what_chromium_sees_without_dns(box_url, root, work)
    (work / "seen.json").write_text(json.dumps(seen, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
