"""Ports 443, 80 and 53 without root: the box and the DNS as their units run them.

A device serves its homepage on HTTPS 443 and HTTP 80, so that its URL has no port, and the
zone's DNS answers on port 53; their systemd units (deploy/systemd/) run them as a user that is
not root, with one capability, CAP_NET_BIND_SERVICE. Here, in network and mount namespaces of
their own (tests/privileged_ports_run.py), the box and the DNS run as uid and gid 65534 through
``setpriv``, with their units' environment, capability, no-new-privileges and umask (the rest of
the units' sandbox is tests/test_deploy_units.py's), against a real cloud. Without the
capability each must refuse to start and say which port and what to do; with it the box gets
its certificate and its URL, without a port, loads over verified HTTPS by its name, which the
DNS on port 53 resolves (UDP and TCP), and its HTTP port answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lanlock import names
from tests.privileged_ports_run import (
    BOX_ADDRESS,
    BOX_ADDRESS6,
    NAMESPACES,
    USER,
    require_namespaces_and_setpriv,
)
from tests.servers import ZONE

ROOT = Path(__file__).resolve().parents[1]
RUN_SECONDS = 90
ONLY_NET_BIND_SERVICE = f"{1 << 10:016x}"  # CAP_NET_BIND_SERVICE is capability 10


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the box, the DNS and their clients showed (tests/privileged_ports_run.py)."""
    require_namespaces_and_setpriv()
    work = tmp_path_factory.mktemp("privileged-ports")
    # Directly in /tmp, which every user may search: it is on no way the helper opens.
    hidden = Path(tempfile.mkdtemp(prefix="lanlock-ports-", dir="/tmp"))
    try:
        run = subprocess.run(
            [
                *NAMESPACES,
                sys.executable,
                "-m",
                "tests.privileged_ports_run",
                str(work),
                str(hidden),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_SECONDS,
        )
    finally:
        hidden.rmdir()  # its mounts were the namespace's, gone with it
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads((work / "seen.json").read_text())


def assert_unprivileged(process: dict[str, str]) -> None:
    """Uid and gid 65534, no other group, CAP_NET_BIND_SERVICE and nothing else."""
    assert process["Uid"].split() == [str(USER)] * 4 and process["Gid"].split() == [str(USER)] * 4
    assert process["Groups"] == ""
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert process[capabilities] == ONLY_NET_BIND_SERVICE, (capabilities, process)
    assert process["NoNewPrivs"] == "1"


def is_the_homepage(page: str, state: dict[str, Any]) -> bool:
    """Whether ``page`` is the homepage of the box whose state is ``state``, linking its URL."""
    return (
        "lanlock box</title>" in page
        and state["box_id"] in page
        and f'href="{state["url"]}"' in page
    )


def test_ports_below_1024_are_privileged_in_the_namespace(seen):
    # Else the refusals below would prove nothing.
    assert seen["unprivileged_port_start"] == 1024
    assert seen["credentials"]["returncode"] == 0, seen["credentials"]
    assert seen["migrate"]["returncode"] == 0, seen["migrate"]


def test_without_the_capability_the_box_names_the_port_and_the_fix(seen):
    for run, host, port in (
        (seen["refused"]["box"], "::", 80),  # the unit's listeners: HTTP is bound first
        (seen["refused"]["box_https"], "::", 443),  # HTTP on 8080: HTTPS's 443 is refused
    ):
        assert run["returncode"] == 1, run
        assert f"cannot listen on {host} port {port}: permission denied" in run["output"], run
        assert "CAP_NET_BIND_SERVICE" in run["output"] and "above 1023" in run["output"], run
        assert "Traceback" not in run["output"], run["output"]


def test_without_the_capability_the_dns_names_the_port(seen):
    run = seen["refused"]["dns"]
    assert run["returncode"] == 1, run
    assert "cannot listen on 0.0.0.0 port 53: Permission denied" in run["output"], run
    assert "Traceback" not in run["output"], run["output"]


def test_the_box_runs_unprivileged_and_its_url_has_no_port(seen):
    box = seen["box"]
    assert_unprivileged(box["process"])
    # Its data folder is the user's, and so is everything the box wrote in it.
    assert box["data_owners"] == [USER]
    # The listeners on 80 and 443 are its own; the DNS's on 53 too.
    assert box["sockets"] == {
        "tcp:53": [USER],
        "udp:53": [USER],
        "tcp6:80": [USER],  # the unit's --host ::, IPv4 and IPv6 on one socket
        "tcp6:443": [USER],
    }
    state = box["state"]
    assert state["state"] == "valid" and state["addresses"] == [BOX_ADDRESS]
    name = names.parse_host_name(urlsplit(state["url"]).hostname or "", ZONE)
    assert str(name.address) == BOX_ADDRESS
    assert state["url"] == f"https://{name.name}/" and state["urls"] == [state["url"]]
    assert urlsplit(state["url"]).port is None


def test_the_url_loads_over_verified_https_on_443(seen):
    box = seen["box"]
    url = box["state"]["url"]
    host = urlsplit(url).hostname or ""
    # Resolved by the system through our DNS, verified against the cloud's root alone.
    assert seen["system_resolver"] == [BOX_ADDRESS]
    page = box["https"][url]
    assert page.get("status") == 200, page
    assert is_the_homepage(page["text"], box["state"])
    # At the name's address, on 443, the cloud's certificate for the box's scope.
    served, name = box["certificates"][url], names.parse_host_name(host, ZONE)
    assert (served["address"], served["port"]) == (BOX_ADDRESS, 443)
    assert names.wildcard_name(name.scope, name.zone) in served["names"], served


def test_port_80_answers(seen):
    page = seen["box"]["http"][BOX_ADDRESS]
    assert page.get("status") == 200, page
    assert is_the_homepage(page["text"], seen["box"]["state"])


def test_the_dns_answers_on_port_53_over_udp_and_tcp(seen):
    assert_unprivileged(seen["dns_process"])
    for transport in ("udp", "tcp"):
        answer = seen["dns"][transport]
        assert answer == {"rcode": "NOERROR", "authoritative": True, "addresses": [BOX_ADDRESS]}


def test_on_every_address_each_url_loads_on_443_and_80(seen):
    box = seen["box_every_address"]
    assert_unprivileged(box["process"])
    state = box["state"]
    assert state["addresses"] == [BOX_ADDRESS, BOX_ADDRESS6]
    assert len(state["urls"]) == 2 and all(urlsplit(url).port is None for url in state["urls"])
    for url, address in zip(state["urls"], state["addresses"], strict=True):
        assert box["certificates"][url]["address"] == address
        assert box["certificates"][url]["port"] == 443
        for page in (box["https"][url], box["http"][address]):
            assert page.get("status") == 200, (url, page)
            assert is_the_homepage(page["text"], state)
    assert box["sockets"]["tcp6:80"] == box["sockets"]["tcp6:443"] == [USER]
