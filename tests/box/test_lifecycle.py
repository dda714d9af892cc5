"""The box's certificate lifecycle against the real cloud: each code from its real condition."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lanlock import pki
from lanlock.box.agent import MAINTENANCE_TICK
from lanlock.box.lifecycle import CertificateManager, parsed_time, renewal_moment
from lanlock.box.settings import BoxConfig, change_config
from lanlock.box.tls_store import TLSStore
from lanlock.cloud.models import cloud_store
from lanlock.store import Store
from tests.boxes import Customer
from tests.servers import (
    RunningBox,
    RunningCloud,
    free_port,
    fresh_store_url,
    lanlock_command,
    make_tls_files,
    running_cloud,
    start_box,
    start_cloud,
)
from tests.standin import StandIn, standin_cloud

NO_CONSOLE_NEEDED = "http://127.0.0.1:1"  # a console URL is what makes a box "connected"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("cloud")) as running:
        yield running


@pytest.fixture(scope="module")
def store(cloud) -> Iterator[Store]:
    opened = cloud_store(cloud.store_url, pool_size=2)
    yield opened
    opened.dispose()


@pytest.fixture(scope="module")
def root(cloud) -> Path:
    path = cloud.data_dir / "root.pem"
    path.write_text(cloud.root_pem())
    return path


def give_credentials(
    data: Path, customer: Customer | None, console: str | None = NO_CONSOLE_NEEDED
) -> None:

    def given(config: BoxConfig) -> None:
        config.console_url = console
        if customer:
            config.db_uuid, config.enterprise_code = customer.db_uuid, customer.code

    change_config(data, given)


@pytest.fixture
def boxes() -> Iterator[list[RunningBox]]:
    started: list[RunningBox] = []
    yield started
    for box in started:
        box.stop()


def run_box(boxes: list[RunningBox], data: Path, *extra: str) -> RunningBox:
    box = start_box(data, *extra)
    boxes.append(box)
    return box


def code_is(code: str):
    return lambda state: state.get("code") == code


def served_certificate(port: int, host: str, cafile: Path) -> pki.x509.Certificate:
    """Open a fresh TLS connection (no session reuse) and return the verified leaf."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return pki.x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def host_of(url: str) -> str:
    return httpx.URL(url).host


# --- the six codes ----------------------------------------------------------------------------


def test_no_console_configured(tmp_path, boxes):
    box = run_box(boxes, tmp_path / "box")
    state = box.wait_for(code_is("ERR_IOT_HTTPS_CHECK_NO_SERVER"))
    assert state["state"] == "error" and state["url"] is None


def test_no_credentials(tmp_path, boxes, cloud):
    give_credentials(tmp_path / "box", None)
    box = run_box(boxes, tmp_path / "box", "--cloud", cloud.url)
    box.wait_for(code_is("ERR_IOT_HTTPS_LOAD_NO_CREDENTIAL"))


def test_cloud_unreachable_closed_port(tmp_path, boxes, store):
    give_credentials(tmp_path / "box", Customer.create(store))
    box = run_box(boxes, tmp_path / "box", "--cloud", f"http://127.0.0.1:{free_port()}")
    state = box.wait_for(code_is("ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION"))
    assert "ConnectError" in state["message"]


def test_cloud_tls_not_trusted(tmp_path, boxes, store):
    tls = make_tls_files(tmp_path / "tls")
    with fresh_store_url("sqlite", tmp_path) as url:
        tls_cloud = start_cloud(url, tmp_path / "cloud", tls=tls)
        try:
            give_credentials(tmp_path / "box", Customer.create(store))
            box = run_box(boxes, tmp_path / "box", "--cloud", tls_cloud.url)
            state = box.wait_for(code_is("ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION"))
            assert "CERTIFICATE_VERIFY_FAILED" in state["message"]
        finally:
            tls_cloud.stop()


@pytest.mark.parametrize("status", [404, 502])
def test_cloud_answering_an_unexpected_status(tmp_path, boxes, store, status):
    give_credentials(tmp_path / "box", Customer.create(store))
    with standin_cloud(status) as standin:
        box = run_box(boxes, tmp_path / "box", "--cloud", standin.url)
        box.wait_for(code_is(f"ERR_IOT_HTTPS_LOAD_REQUEST_STATUS {status}"))


def test_refusal_is_shown_with_its_reason(tmp_path, boxes, cloud, store):
    give_credentials(tmp_path / "box", Customer.create(store, kind="staging"))
    box = run_box(boxes, tmp_path / "box", "--cloud", cloud.url)
    state = box.wait_for(code_is("ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT"))
    assert state["reason"] == "database_not_production"
    status = subprocess.run(
        lanlock_command("box", "status", "--data", str(box.data_dir)),
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1
    assert "ERR_IOT_HTTPS_LOAD_REQUEST_NO_RESULT" in status.stdout
    assert "database_not_production" in status.stdout


def make_unreadable(path: Path) -> None:
    """The file exists but reading it fails: no permission (or, for root, it is a folder)."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    # Root reads any file whatever its mode; a folder in its place fails the read all the same.
    path.unlink()
    path.mkdir()


def test_unreadable_certificate_file(tmp_path, boxes, cloud, store, root):
    data = tmp_path / "box"
    give_credentials(data, Customer.create(store))
    box = run_box(boxes, data, "--cloud", cloud.url, "--homepage-check-interval", "0")
    valid = box.wait_for(lambda s: s["state"] == "valid")
    pair = TLSStore(data / "tls").current()
    make_unreadable(pair.cert_path)
    box.status()  # opening the homepage checks
    state = box.wait_for(code_is("ERR_IOT_HTTPS_CHECK_CERT_READ_EXCEPTION"))
    assert box.process.poll() is None
    assert state["url"] is None
    # The running listener still serves the certificate it loaded before.
    served = served_certificate(box.https_port, host_of(valid["url"]), root)
    assert served.serial_number == pair.leaf.serial_number
    # And a restart with the file still unreadable does not crash either.
    box.stop()
    again = run_box(boxes, data, "--cloud", cloud.url)
    again.wait_for(code_is("ERR_IOT_HTTPS_CHECK_CERT_READ_EXCEPTION"))
    assert again.process.poll() is None


def test_corrupt_certificate_is_treated_as_missing(tmp_path, boxes, cloud, store):
    data = tmp_path / "box"
    give_credentials(data, Customer.create(store))
    box = run_box(boxes, data, "--cloud", cloud.url)
    first = box.wait_for(lambda s: s["state"] == "valid")
    box.stop()
    pair = TLSStore(data / "tls").current()
    pair.cert_path.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    again = run_box(boxes, data, "--cloud", cloud.url)
    state = again.wait_for(
        lambda s: s["state"] == "valid" and s["checked_at"] != first["checked_at"]
    )
    assert host_of(state["url"]) == host_of(first["url"])
    assert TLSStore(data / "tls").current().leaf.serial_number != pair.leaf.serial_number
    assert "damaged" in (data / "logs" / "lanlock-box.log").read_text()


# --- the happy path ---------------------------------------------------------------------------


def test_valid_certificate_served_and_verified_with_ssl_and_curl(
    tmp_path, boxes, cloud, store, root
):
    data = tmp_path / "box"
    give_credentials(data, Customer.create(store))
    box = run_box(boxes, data, "--cloud", cloud.url)
    state = box.wait_for(lambda s: s["state"] == "valid")
    host = host_of(state["url"])
    assert host.startswith("10-0-0-7.") and host.endswith(".iot.test")
    assert state["url"] == f"https://{host}:{box.https_port}/"
    leaf = served_certificate(box.https_port, host, root)
    assert leaf.serial_number == TLSStore(data / "tls").current().leaf.serial_number

    curl = shutil.which("curl")
    if curl:
        result = subprocess.run(
            [
                curl,
                "-sS",
                "--fail",
                "--resolve",
                f"{host}:{box.https_port}:127.0.0.1",
                "--cacert",
                str(root),
                f"https://{host}:{box.https_port}/status.json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert '"state":"valid"' in result.stdout
        other = host.replace("10-0-0-7.", "10-0-0-7.x.")
        refused = subprocess.run(
            [
                curl,
                "-sS",
                "--resolve",
                f"{other}:{box.https_port}:127.0.0.1",
                "--cacert",
                str(root),
                f"https://{other}:{box.https_port}/status.json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 60  # peer certificate cannot be authenticated
    status = subprocess.run(
        lanlock_command("box", "status", "--data", str(data), "--json"),
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0
    assert '"state": "valid"' in status.stdout


def test_restart_keeps_the_certificate_and_asks_nothing(tmp_path, boxes, cloud, store):
    data = tmp_path / "box"
    give_credentials(data, Customer.create(store))
    box = run_box(boxes, data, "--cloud", cloud.url)
    box.wait_for(lambda s: s["state"] == "valid")
    serial = TLSStore(data / "tls").current().leaf.serial_number
    box.stop()
    with standin_cloud(500) as standin:  # any request now would be an error
        again = run_box(boxes, data, "--cloud", standin.url)
        again.wait_for(lambda s: s["state"] == "valid" and s["code"] is None)
        assert standin.arrivals == []
    assert TLSStore(data / "tls").current().leaf.serial_number == serial


# --- back-off ---------------------------------------------------------------------------------

RETRY_FIRST, RETRY_CAP = 0.5, 4.0
HOMEPAGE_INTERVAL = 1.0  # well inside the capped delay: a visit then is the only thing that asks
# How much later than its delay an attempt may come: the agent looks at its schedule every
# MAINTENANCE_TICK, and a loaded 2-core machine runs it late (generous: no speed is measured).
LATE = MAINTENANCE_TICK + 2.0


def arrivals_after(standin: StandIn, count: int, seconds: float) -> list[float]:
    """The times of the stand-in's first ``count`` requests, waiting ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while len(standin.arrivals) < count:
        assert time.monotonic() < deadline, f"{len(standin.arrivals)} of {count} attempts came"
        time.sleep(0.05)
    return standin.arrivals[:count]


def assert_backoff_shape(arrivals: list[float]) -> None:
    """Each gap between attempts is the back-off's delay for it: doubling from RETRY_FIRST up to
    RETRY_CAP, with ±20 % jitter, and late by LATE at most."""
    failures_before = 0
    if arrivals[1] - arrivals[0] < 0.8 * RETRY_FIRST:
        # The start-up probe of /status.json checked at the moment the box's own first check
        # ran: two failures back to back, and the back-off one step further along.
        arrivals, failures_before = arrivals[1:], 1
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    delays = [min(RETRY_CAP, RETRY_FIRST * 2 ** (failures_before + i)) for i in range(len(gaps))]
    for gap, delay in zip(gaps, delays, strict=True):
        assert 0.8 * delay <= gap <= 1.2 * delay + LATE, f"gaps {gaps} for delays {delays}"


def test_failing_cloud_is_retried_with_backoff_and_the_homepage_retries_at_once(
    tmp_path, boxes, cloud, store
):
    data = tmp_path / "box"
    give_credentials(data, Customer.create(store))
    with standin_cloud(503) as standin:
        box = run_box(
            boxes,
            data,
            *("--cloud", standin.url),
            *("--retry-first", str(RETRY_FIRST), "--retry-cap", str(RETRY_CAP)),
            *("--homepage-check-interval", str(HOMEPAGE_INTERVAL)),
        )
        # Seven attempts: the delays double up to the cap, then two more show they stay there.
        assert_backoff_shape(arrivals_after(standin, 7, seconds=120))
        assert box.state_file()["code"] == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 503"
        standin.forward_to = cloud.url  # the cause is fixed
        time.sleep(HOMEPAGE_INTERVAL)
        opened = time.monotonic()
        status = box.status()  # opening the homepage
        assert status["state"] == "valid" and status["code"] is None
        assert standin.arrivals[-1] >= opened  # asked by this visit, not by the schedule


def test_the_box_waits_as_long_as_the_cloud_asks(tmp_path, boxes, store):
    """429 or 503 with Retry-After: the box's next attempt comes no sooner than asked (a herd
    spreads as the cloud says), and never later than its own cap would allow."""
    data = tmp_path / "box"
    give_credentials(data, Customer.create(store))
    asked, cap = 3.0, 20.0
    with standin_cloud(429) as standin:
        standin.retry_after = str(int(asked))
        run_box(
            boxes,
            data,
            *("--cloud", standin.url),
            *("--retry-first", str(RETRY_FIRST), "--retry-cap", str(cap)),
        )
        arrivals = arrivals_after(standin, 3, seconds=60)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Without Retry-After the gaps would be about 0.5 s and 1 s.
    assert all(asked <= gap <= asked * 1.2 + LATE for gap in gaps), gaps


@pytest.mark.parametrize(
    ("lifetime", "renew_at"),
    [
        (dt.timedelta(days=397), dt.timedelta(days=397 * 2 / 3)),
        (dt.timedelta(days=90), dt.timedelta(days=60)),
        (dt.timedelta(days=6), dt.timedelta(days=4)),  # Let's Encrypt's short-lived profile
        (dt.timedelta(hours=1), dt.timedelta(minutes=40)),
    ],
)
def test_a_certificate_of_any_lifetime_is_renewed_at_two_thirds_of_it(lifetime, renew_at):
    """Short certificates were renewed at once (ten days before an end nearer than ten days):
    a box with a 6-day certificate asked for a new one at every check."""
    ca = pki.CertificateAuthority.create("iot.test")
    leaf = ca.issue(pki.new_private_key().public_key(), ["a.iot.test"], lifetime)
    renewal = CertificateManager._renewal_time(leaf)
    start = leaf.not_valid_before_utc
    assert abs(renewal - (start + renew_at)) < dt.timedelta(minutes=10), renewal - start


def test_the_box_renews_when_the_cloud_said_for_that_certificate():
    """The cloud's time (its rule, or the CA's renewal information) wins; a time in the past
    means now; a far-off time is bounded by the last tenth of the lifetime; a time given for
    another certificate is ignored."""
    ca = pki.CertificateAuthority.create("iot.test")
    leaf = ca.issue(pki.new_private_key().public_key(), ["a.iot.test"], dt.timedelta(days=90))
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    serial = format(leaf.serial_number, "x")

    def due(renew_at: dt.datetime | None, for_serial: str = serial) -> dt.datetime:
        config = BoxConfig(
            renew_at=renew_at.isoformat() if renew_at else None, renew_at_serial=for_serial
        )
        return CertificateManager._due(leaf, config)

    later = start + dt.timedelta(days=70)  # ARI's window, later than two thirds
    assert due(later) == later
    yesterday = pki.utcnow() - dt.timedelta(days=1)
    assert due(yesterday) == yesterday  # due now
    assert due(end + dt.timedelta(days=5)) == start + (end - start) * 0.9
    own = CertificateManager._renewal_time(leaf)
    assert due(later, for_serial="0") == own
    assert due(None) == own


@pytest.mark.parametrize(
    "announced",
    ["not a time", "", "9999-12-31T23:59:59+00:00", "2026-13-40T00:00:00", "x" * 10_000, None],
)
def test_whatever_the_cloud_says_of_renewal_the_box_renews_before_the_end(announced):
    """A cloud's ``renew_at`` that is not a time, or is far beyond the certificate, cannot keep
    a box from renewing: the moment falls back to the box's rule and never passes nine tenths
    of the lifetime."""
    ca = pki.CertificateAuthority.create("iot.test")
    leaf = ca.issue(pki.new_private_key().public_key(), ["a.iot.test"], dt.timedelta(days=6))
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    moment = renewal_moment(announced, leaf)
    assert pki.utcnow() < moment <= start + (end - start) * 0.9


def test_a_renewal_time_without_an_offset_is_utc():
    assert parsed_time("2026-12-01T10:00:00") == dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
