"""The box's name resolved by ``lanlock dns serve`` in a real browser (the suite's safety net).

tests/test_browser.py maps ``*.iot.localhost`` to loopback with a host-resolver rule, so its
browser never asks the zone's DNS. Here chromium has no rule: in network, mount and PID
namespaces of their own (tests/browser_dns_run.py) the box's LAN address is on a veth link,
/etc/resolv.conf names only ``lanlock dns serve`` on 127.0.0.1:53, and the box's HTTPS URL must
load with only the cloud's root trusted, while a name the DNS says does not exist fails to resolve.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lanlock import names
from tests.browser_dns_run import BOX_ADDRESS, UNKNOWN_ADDRESS
from tests.realparts import require
from tests.servers import ZONE
from tests.test_browser import ROOT

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
NAMESPACES = ["unshare", "--net", "--mount", "--pid", "--mount-proc", "--fork", "--kill-child"]
RUN_SECONDS = 180


def require_namespaces_and_chromium() -> None:
    require(shutil.which("chromium") is not None, "Debian's chromium is not installed")
    require(shutil.which("certutil") is not None, "certutil (libnss3-tools) is not installed")
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed")
    require(os.geteuid() == 0, "making network and mount namespaces needs root")
    require(
        all(shutil.which(tool) for tool in ("unshare", "ip", "mount")),
        "unshare, ip or mount (util-linux, iproute2) is not installed",
    )
    probe = subprocess.run([*NAMESPACES, "true"], capture_output=True, text=True, timeout=30)
    require(probe.returncode == 0, f"namespaces cannot be made here: {probe.stderr.strip()}")


def run_in_namespaces(work: Path) -> dict[str, Any]:
    """What tests/browser_dns_run.py saw; the host's resolv.conf must come out untouched."""
    before = HOST_RESOLV_CONF.read_bytes()
    run = subprocess.run(
        [*NAMESPACES, sys.executable, "-m", "tests.browser_dns_run", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
    )
    assert HOST_RESOLV_CONF.read_bytes() == before, "the host's /etc/resolv.conf was changed"
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((work / "seen.json").read_text())


def answers_on_the_wire(wire: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Our DNS's answers to the A questions for ``name`` while chromium ran."""
    return [m for m in wire if m["answer"] and m["name"] == name and m["type"] == "A"]


def test_chromium_resolves_the_box_name_through_lanlock_dns(tmp_path):
    require_namespaces_and_chromium()
    seen = run_in_namespaces(tmp_path)
    box_url, chromium = seen["box_url"], seen["chromium"]
    box = names.parse_host_name(urlsplit(box_url).hostname or "", ZONE)
    unknown_name = names.host_name(UNKNOWN_ADDRESS, box.scope, box.zone)

    # Inside, the system resolver asks only our DNS, and our DNS names the box's LAN address.
    assert seen["resolv_conf"].splitlines()[0] == "nameserver 127.0.0.1"
    assert seen["system_resolver"] == [BOX_ADDRESS]
    assert seen["dns_box_answer"] == {"rcode": "NOERROR", "addresses": [BOX_ADDRESS]}
    assert seen["dns_unknown_answer"]["rcode"] == "NXDOMAIN"

    # Chromium, with no host-resolver rule, loads the box's page over HTTPS from that address,
    # with the certificate our CA issued for the box's scope.
    assert "--host-resolver-rules" not in chromium["command_line"]
    assert chromium["ok"] and chromium["status"] == 200
    assert chromium["url"] == box_url and "lanlock box" in chromium["title"]
    assert chromium["server_address"]["ipAddress"] == BOX_ADDRESS
    assert chromium["certificate"]["subjectName"] == names.wildcard_name(box.scope, box.zone)
    assert chromium["certificate"]["issuer"].startswith("lanlock")

    # It got that address from our DNS, on the wire, and our DNS's NXDOMAIN for a name outside
    # the LAN ranges is what chromium reports as a name that does not resolve.
    box_answers = answers_on_the_wire(seen["chromium_dns_wire"], box.name)
    assert box_answers and all(a["addresses"] == [BOX_ADDRESS] for a in box_answers)
    unknown_answers = answers_on_the_wire(seen["chromium_dns_wire"], unknown_name)
    assert unknown_answers and all(a["rcode"] == "NXDOMAIN" for a in unknown_answers)
    assert "net::ERR_NAME_NOT_RESOLVED" in chromium["unknown_name_error"]

    # With the DNS stopped and everything else running, the box's own name resolves no more.
    assert "net::ERR_NAME_NOT_RESOLVED" in seen["without_dns_error"]
