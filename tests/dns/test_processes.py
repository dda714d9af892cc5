"""The server as processes: workers on one port, restarted when they die, stopped on a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import dns.rcode
import pytest
from click.testing import CliRunner

from lanlock.cli import main
from tests.dns.running import RunningDNS, migrate_cloud_schema, start_dns
from tests.servers import free_port

ZONE = "iot.test"
SCOPE = "abcdefghijklmnop"


def worker_pids(server: RunningDNS, count: int) -> list[int]:
    """The PIDs of the last ``count`` workers that said they answer, from the server's log."""
    deadline = time.monotonic() + 15
    while True:
        log = server.log_text()
        pids = [int(p) for p in re.findall(r"worker \d+ \(pid (\d+)\) answering", log)]
        if len(pids) >= count:
            return pids[-count:]
        assert time.monotonic() < deadline, f"{len(pids)} of {count} workers answering:\n{log}"
        time.sleep(0.1)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet (or has, since the kill).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(is_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def answers(server: RunningDNS) -> bool:
    response = server.ask(f"10-0-0-7.{SCOPE}.{ZONE}", "A", timeout=1)
    return [r.to_text() for r in response.answer[0]] == ["10.0.0.7"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="several workers need Linux")
def test_a_dead_worker_is_replaced_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    server = start_dns(f"sqlite:///{tmp_path / 'store.db'}", tmp_path, workers=2)
    try:
        first, second = worker_pids(server, 2)
        os.kill(first, signal.SIGKILL)
        assert gone_within([first], 5)
        replacement = worker_pids(server, 3)[-1]
        assert replacement not in (first, second)
        assert re.search(
            rf"worker \d \(pid {first}\) exited .*; starting it again", server.log_text()
        )
        assert all(answers(server) for _ in range(10))

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0
        assert gone_within([second, replacement], 5)
    finally:
        server.stop()


def test_workers_of_a_killed_server_do_not_live_on(tmp_path: Path) -> None:
    server = start_dns(f"sqlite:///{tmp_path / 'store.db'}", tmp_path, workers=2)
    try:
        pids = worker_pids(server, 2)
        server.process.kill()
        server.process.wait(5)
        assert gone_within(pids, 5)
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_is_reported(tmp_path: Path, workers: int) -> None:
    store = f"sqlite:///{tmp_path / 's.db'}"
    migrate_cloud_schema(store)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        port = free_port()
        taken.bind(("127.0.0.1", port))
        result = CliRunner().invoke(
            main,
            ["dns", "serve", "--store", store, "--port", str(port), "--workers", str(workers)],
        )
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1 port {port}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ns", "ns1.iot.test"], "give its address as"),
        (["--ns", "ns1.iot.test=not-an-ip"], "is not an IP address"),
        (["--site-address", "nowhere"], "is not an IP address"),
        (["--zone", "bad zone!"], "invalid label"),
        (["--caa-issuer", "not a domain"], "invalid label"),
        (["--hostmaster", "me@example.com"], "invalid label"),
    ],
)
def test_bad_settings_are_refused_before_serving(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["dns", "serve", "--zone", ZONE, *args])
    assert result.exit_code == 2
    assert message in result.output


def test_public_addresses_are_answered_when_allowed_and_ctrl_c_stops_cleanly(
    tmp_path: Path,
) -> None:
    server = start_dns(f"sqlite:///{tmp_path / 'store.db'}", tmp_path, "--allow-public")
    try:
        public = server.ask(f"8-8-8-8.{SCOPE}.{ZONE}", "A")
        assert [r.to_text() for r in public.answer[0]] == ["8.8.8.8"]
        v6 = server.ask(f"2606-4700-4700--1111.{SCOPE}.{ZONE}", "AAAA")
        assert [r.to_text() for r in v6.answer[0]] == ["2606:4700:4700::1111"]
        # Never an address of one host, even then: documentation, multicast.
        for label in ("192-0-2-1", "224-0-0-1"):
            assert server.ask(f"{label}.{SCOPE}.{ZONE}", "A").rcode() == dns.rcode.NXDOMAIN

        pids = worker_pids(server, 2)
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(15) == 0
        assert gone_within(pids, 5)
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()
