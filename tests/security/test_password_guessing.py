"""Password guessing against the real box and the real console: limited, and cheap to refuse.

Each wrong password costs an scrypt run (16 MiB, tens of milliseconds). Many wrong passwords at
once must not run many at once (the process's memory stays bounded), a source that keeps
failing is locked out for longer and longer (429 with Retry-After, no scrypt run), and a client
that did not fail still gets in with the right password. Other sources are other loopback
addresses: the servers see them as ``request.client.host``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lanlock import errors
from lanlock.box.settings import load_config
from tests.box.clients import admin_password, by_ip, form_token
from tests.console.running import RunningConsole, csrf_of, running_console
from tests.servers import RunningBox, start_box

ATTACKER = "127.0.0.2"
ADMIN = "127.0.0.3"
AT_ONCE = 40
MEMORY_BOUND = 150 * 1024 * 1024  # far above what 2 scrypt runs at once need (2 x 16 MiB)


@dataclass(frozen=True)
class Wave:
    statuses: list[int]
    retry_afters: list[int]

    def count(self, status: int) -> int:
        return self.statuses.count(status)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def wave(sources: list[str], send: Callable[[httpx.Client], httpx.Response], base: str) -> Wave:
    """One request from each source, all sent at the same instant."""
    start = threading.Barrier(len(sources))

    def one(source: str) -> httpx.Response:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(base_url=base, timeout=60, transport=transport) as http:
            start.wait(30)
            return send(http)

    with ThreadPoolExecutor(len(sources)) as pool:
        answers = list(pool.map(one, sources))
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers.get("retry-after", "").isdigit(), answer.headers
    return Wave(
        [a.status_code for a in answers],
        [int(a.headers["retry-after"]) for a in answers if a.status_code == 429],
    )


def wait_until_unlocked(send: Callable[[], httpx.Response], seconds: float = 60) -> httpx.Response:
    """``send`` again (after each Retry-After) until it is not refused with 429."""
    deadline = time.monotonic() + seconds
    while True:
        answer = send()
        if answer.status_code != 429:
            return answer
        wait = int(answer.headers["retry-after"])
        assert time.monotonic() + wait < deadline, "still locked out"
        time.sleep(wait + 0.1)


def assert_limited(
    flood: Wave, spread: Wave, rss: int, failed: httpx.Response, relocked: httpx.Response
) -> None:
    """What both servers must show after the same attack."""
    report = f"one source: {flood}, many sources: {spread}, RSS +{rss / 2**20:.0f} MiB"
    assert set(flood.statuses) <= {403, 429}, report
    assert flood.count(429) >= AT_ONCE - 10, report  # all but the first few wrong ones
    assert set(spread.statuses) <= {403, 429}, report
    assert rss < MEMORY_BOUND, report
    # Once unlocked, one more failure locks the source again, for longer than the first time,
    # and while locked even the right password is not tried.
    assert failed.status_code == 403, failed.text[:200]
    assert relocked.status_code == 429, relocked.text[:200]
    assert int(relocked.headers["retry-after"]) > min(flood.retry_afters), (relocked, flood)


# --- the box -------------------------------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Iterator[RunningBox]:
    running = start_box(tmp_path / "box")
    running.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)
    yield running
    running.stop()


def test_the_box_limits_wrong_passwords(box: RunningBox) -> None:
    with by_ip(box) as http:
        token = form_token(http.get("/").text)
    right = {"csrf": token, "password": admin_password(box), "level": "INFO"}
    wrong = right | {"password": "wrong-password-guess"}

    def guess(http: httpx.Client) -> httpx.Response:
        return http.post("/log-level", data=wrong)

    before = resident_bytes(box.process.pid)
    flood = wave([ATTACKER] * AT_ONCE, guess, box.http_url)
    spread = wave([f"127.0.1.{n}" for n in range(1, AT_ONCE + 1)], guess, box.http_url)
    rss = resident_bytes(box.process.pid) - before

    with by_ip(box, source=ATTACKER) as attacker:
        failed = wait_until_unlocked(lambda: attacker.post("/log-level", data=wrong))
        relocked = attacker.post("/log-level", data=right)
    assert_limited(flood, spread, rss, failed, relocked)

    with by_ip(box, source=ADMIN) as admin:
        answer = admin.post("/log-level", data=right)
    assert answer.status_code == 303, answer.text
    assert load_config(box.data_dir).log_level is None


# --- the console ---------------------------------------------------------------------------------


@pytest.fixture
def console(tmp_path: Path) -> Iterator[RunningConsole]:
    with running_console(tmp_path / "console") as running:
        yield running


def test_the_console_limits_wrong_logins(console: RunningConsole) -> None:
    with console.client() as http:
        token = csrf_of(http.get("/login").text)
    right = {"csrf": token, "password": console.password(), "next": "/iot"}
    wrong = right | {"password": "wrong-password-guess"}

    def guess(http: httpx.Client) -> httpx.Response:
        return http.post("/login", data=wrong)

    before = resident_bytes(console.process.pid)
    flood = wave([ATTACKER] * AT_ONCE, guess, console.url)
    spread = wave([f"127.0.1.{n}" for n in range(1, AT_ONCE + 1)], guess, console.url)
    rss = resident_bytes(console.process.pid) - before

    transport = httpx.HTTPTransport(local_address=ATTACKER)
    with httpx.Client(base_url=console.url, timeout=30, transport=transport) as attacker:
        failed = wait_until_unlocked(lambda: attacker.post("/login", data=wrong))
        relocked = attacker.post("/login", data=right)
    assert_limited(flood, spread, rss, failed, relocked)

    transport = httpx.HTTPTransport(local_address=ADMIN)
    with httpx.Client(base_url=console.url, timeout=30, transport=transport) as admin:
        answer = admin.post("/login", data=right)
        assert answer.status_code == 303, answer.text
        assert admin.get("/iot").status_code == 200
