"""The box follows its LAN addresses: every one it has, as they change, without a new certificate.

Everything here runs in network namespaces the tests make (``unshare --net``), with veth links
and addresses added and removed by ``ip`` as a network would (a DHCP lease, a second link with
IPv6, a link unplugged), and no default route anywhere. No address source is injected: the
box reads the namespace's real interfaces. The first two tests read the addresses alone
(``lanlock.box.addresses``); the others judge a running box, its cloud and its console,
through tests/box/moving_box_run.py, which changes the addresses under them and writes down what
each showed after each change.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lanlock import names
from tests.box.moving_box_run import HOSTS, STEPS, lan_link
from tests.realparts import require
from tests.servers import ZONE

ROOT = Path(__file__).resolve().parents[2]
NAMESPACES = ["unshare", "--net", "--pid", "--mount-proc", "--fork", "--kill-child"]
RUN_SECONDS = 240
SHOW_ADDRESSES = (
    "import json; from lanlock.box.addresses import lan_addresses; "
    "print(json.dumps(lan_addresses()))"
)


def require_network_namespaces() -> None:
    require(os.geteuid() == 0, "making network namespaces needs root")
    require(
        all(shutil.which(tool) for tool in ("unshare", "ip")),
        "unshare or ip (util-linux, iproute2) is not installed",
    )
    probe = subprocess.run(
        [*NAMESPACES, *lan_link("probe0")[0]], capture_output=True, text=True, timeout=30
    )
    require(probe.returncode == 0, f"namespaces with veth links cannot be made: {probe.stderr}")


def addresses_in_a_network_of_their_own(*commands: list[str]) -> list[str]:
    """``lan_addresses()`` in a new network namespace, after loopback and ``commands``; the
    namespace must have no default route, IPv4 or IPv6."""
    script = "\n".join(
        [
            "set -e",
            "ip link set lo up",
            *map(shlex.join, commands),
            'test -z "$(ip route show default)" && test -z "$(ip -6 route show default)"',
            'exec "$0" -c "$1"',
        ]
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, sys.executable, SHOW_ADDRESSES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_every_lan_address_is_found_without_a_default_route():
    require_network_namespaces()
    found = addresses_in_a_network_of_their_own(
        # Made first, so listed first, whatever its name: the order of `ip addr`.
        *lan_link("eth1", "10.77.0.7/24", "192.168.5.5/24", "169.254.3.3/16", "8.8.8.8/32"),
        *lan_link("br0", "10.88.0.8/16", "2a01:4f8::9/64", "2001:db8::9/64"),
        *lan_link("eth2", "fd77::9/64"),
        # A link that is down is no way to reach the box.
        ["ip", "link", "add", "eth3", "type", "veth", "peer", "name", "eth3p"],
        ["ip", "addr", "add", "10.99.0.9/24", "dev", "eth3"],
    )
    # IPv4 first, each family by interface, the primary address first; no loopback, no
    # link-local (169.254/16, fe80::/10, which every up link has), no public IPv4 address, no
    # documentation range; IPv6 global and ULA.
    assert found == ["10.77.0.7", "192.168.5.5", "10.88.0.8", "2a01:4f8::9", "fd77::9"]


def test_a_box_with_no_lan_address_is_named_by_loopback():
    require_network_namespaces()
    assert addresses_in_a_network_of_their_own() == ["127.0.0.1"]
    # A link with nothing but its IPv6 link-local address is no LAN address either.
    assert addresses_in_a_network_of_their_own(*lan_link("eth1")) == ["127.0.0.1"]


# --- a running box whose addresses move (tests/box/moving_box_run.py) -------------------------


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the boxes, the console and the cloud showed (tests/box/moving_box_run.py)."""
    require_network_namespaces()
    work = tmp_path_factory.mktemp("moving-box")
    run = subprocess.run(
        [*NAMESPACES, sys.executable, "-m", "tests.box.moving_box_run", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((work / "seen.json").read_text())


@pytest.fixture(scope="module")
def steps(seen: dict[str, Any]) -> list[dict[str, Any]]:
    """What the moving box showed after each of STEPS."""
    assert [step["what"] for step in seen["steps"]] == [what for what, *_ in STEPS]
    return seen["steps"]


def urls_of(step: dict[str, Any]) -> list[str]:
    """The URLs the box must show at ``step``: one per address, in the order of the addresses."""
    first = names.parse_host_name(urlsplit(step["state"]["url"]).hostname or "", ZONE)
    port = urlsplit(step["state"]["url"]).port or 443
    return [names.https_url(a, first.scope, first.zone, port) for a in step["expected"]]


def test_state_and_box_status_name_every_address_and_follow_it(steps):
    for step in steps:
        expected, urls = step["expected"], urls_of(step)
        for state in (step["state"], step["status_json"]):
            assert state["addresses"] == expected and state["address"] == expected[0], step["what"]
            assert state["urls"] == urls and state["url"] == urls[0], step["what"]
        shown = [line for line in step["status_text"].splitlines() if "HTTPS URL" in line]
        assert shown == [f"HTTPS URL: {url}" for url in urls], step["what"]


def test_the_homepage_at_each_address_shows_every_url_and_pings_its_own(steps):
    every_url = {url for step in steps for url in urls_of(step)}
    for step in steps:
        urls = urls_of(step)
        for address, seen in step["pages"].items():
            assert seen["status_code"] == 200, (step["what"], address)
            assert all(f'href="{url}"' in seen["page"] for url in urls), (step["what"], address)
            assert not any(f'href="{url}"' in seen["page"] for url in every_url - set(urls))
            assert all(a in seen["text"] for a in step["expected"]), (step["what"], address)
            assert seen["status_json"]["urls"] == urls, (step["what"], address)
            # The DNS-rebinding check pings the name of the address the page was opened by.
            assert seen["ping_url"] == urls[step["expected"].index(address)], address


def test_the_host_check_follows_the_addresses(steps):
    for step in steps:
        expected = {host: 200 if host in step["expected"] else 421 for host in HOSTS}
        assert step["hosts"] == expected, step["what"]


def test_the_console_hears_the_new_urls_at_once(steps):
    # Reports are due every hour here: the one with the new URLs came for the change.
    for step in steps:
        report, urls = step["report"], urls_of(step)
        assert report is not None, step["what"]
        assert (report["urls"], report["url"]) == (urls, urls[0]), step["what"]
        assert report["address"] == step["expected"][0], step["what"]


def test_no_new_certificate_is_asked_for_an_address_change(steps):
    first = steps[0]
    (serial,) = set(first["serials"].values())
    for step in steps:
        assert step["x509_requests"] == first["x509_requests"], step["what"]
        # Every URL, IPv6 included, is served with that same certificate (its wildcard).
        assert step["serials"] == dict.fromkeys(urls_of(step), serial), step["what"]


def test_the_log_tells_each_change_old_to_new(seen, steps):
    changes = [line for line in seen["log"].splitlines() if "LAN addresses changed" in line]
    # One line per change the box saw, in the order of the steps; a step of two commands (a
    # lease's old address removed, then the new one added) may show the box a moment in between,
    # and a line for it. (Read in order: a later step back to an earlier address would otherwise
    # find that earlier step's line.)
    at = 0
    for before, after in itertools.pairwise(steps):
        old, new = ", ".join(urls_of(before)), ", ".join(urls_of(after))
        at = next_line(changes, at, re.escape(f"HTTPS URLs: {old} → "), after["what"])
        at = next_line(changes, at, re.escape(f" → {new}") + "$", after["what"])


def next_line(lines: list[str], start: int, pattern: str, what: str) -> int:
    """The index of the first of ``lines`` from ``start`` on that ``pattern`` finds."""
    found = next((i for i in range(start, len(lines)) if re.search(pattern, lines[i])), None)
    assert found is not None, f"{what}: no such log line after line {start} of {lines}"
    return found


def test_a_configured_address_stays_put(seen):
    pinned = seen["pinned"]
    assert pinned["addresses"] == ["10.0.0.7"] and pinned["address"] == "10.0.0.7"
