"""Rotation never drops a connection; a crash at any instant leaves both pairs whole
(docs/design.md §8)."""

from __future__ import annotations

import asyncio
import http.client
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lanlock import pki
from lanlock.box.agent import Agent, BoxSettings
from lanlock.box.settings import BoxConfig, change_config
from lanlock.box.tls_store import Pair, TLSStore
from lanlock.cloud.models import cloud_store
from tests.box.test_lifecycle import give_credentials, host_of, served_certificate
from tests.boxes import Customer
from tests.servers import (
    RunningCloud,
    free_port,
    read_until,
    running_cloud,
    start_box,
)
from tests.threads import Threads


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> Iterator[RunningCloud]:
    # Twenty rotations of one box: far beyond the cloud's default daily limit of new certificates.
    limits = ("--box-issuance-limit", "100", "--subscription-issuance-factor", "100")
    with running_cloud(tmp_path_factory.mktemp("cloud"), *limits) as running:
        yield running


@pytest.fixture
def agent(tmp_path, cloud) -> Iterator[Agent]:
    """A real agent in this process (so that the test can ask it to rotate), on real sockets."""
    store = cloud_store(cloud.store_url, pool_size=1)
    give_credentials(tmp_path / "box", Customer.create(store))
    store.dispose()
    running = Agent(
        BoxSettings(
            data_dir=tmp_path / "box",
            http_port=free_port(),
            https_port=free_port(),
            address="10.0.0.7",
            cloud_url=cloud.url,
        )
    ).start()
    serving = Threads()
    serving.start(lambda: asyncio.run(running.serve()), name="agent")
    try:
        deadline = time.monotonic() + 30
        while running.manager.state.state != "valid":
            serving.raise_failure()
            assert time.monotonic() < deadline, running.manager.state
            time.sleep(0.05)
        yield running
    finally:
        running.stop()
        serving.join(15)


class Prober:
    """Opens new TLS connections back to back and records each one's outcome and serial."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.serials: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = Threads()

    def _run(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the serial is what we look at; a test below verifies
        while not self._stop.is_set():
            try:
                self.serials.append(self._one_request(context))
            except (OSError, ValueError) as exc:
                self.failures.append(repr(exc))

    def _one_request(self, context: ssl.SSLContext) -> int:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=self.host) as tls,
        ):
            tls.sendall(
                f"GET /status.json HTTP/1.1\r\nHost: {self.host}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
            if not response.startswith(b"HTTP/1.1 200"):
                raise ValueError(response[:80])
            leaf = pki.x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            return leaf.serial_number

    def raise_failure(self) -> None:
        """Raise what stopped the prober, if anything but a failed request did."""
        self._threads.raise_failure()

    def __enter__(self) -> Prober:
        self._threads.start(self._run, name="prober")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._threads.join(30)


def test_twenty_rotations_under_load_fail_no_request(agent, cloud):
    host = host_of(agent.manager.state.url)
    installed = [TLSStore(agent.data_dir / "tls").current().leaf.serial_number]
    with Prober(agent.settings.https_port, host) as prober:
        for _ in range(20):
            state = agent.check(force_new=True)
            assert state.state == "valid" and state.code is None
            installed.append(TLSStore(agent.data_dir / "tls").current().leaf.serial_number)
            seen_before = len(prober.serials)
            deadline = time.monotonic() + 30
            while len(prober.serials) < seen_before + 3:  # connections made after the switch
                prober.raise_failure()
                assert time.monotonic() < deadline, f"no new connection since: {prober.failures}"
                time.sleep(0.01)
    assert prober.failures == []
    assert len(set(installed)) == 21
    assert prober.serials[-1] == installed[-1]
    assert set(installed) <= set(prober.serials) | {installed[0]}
    # Connections only ever move forward through the certificates: never back to an old one.
    order = {serial: index for index, serial in enumerate(installed)}
    positions = [order[s] for s in prober.serials]
    assert positions == sorted(positions)


class KeptAlive:
    """One verified TLS connection to the box under its name, with HTTP requests one after
    another on it (keep-alive), never silently opened again."""

    def __init__(self, port: int, host: str, root: Path) -> None:
        context = ssl.create_default_context(cafile=str(root))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._tls = context.wrap_socket(raw, server_hostname=host)
        self._http = http.client.HTTPConnection(host, port)
        self._http.sock = self._tls
        self._http.auto_open = 0  # a closed connection raises instead of being replaced

    def get_status(self) -> None:
        self._http.request("GET", "/status.json")
        response = self._http.getresponse()
        body = response.read()
        assert response.status == 200, body
        assert self._http.sock is self._tls, "the box closed the connection after answering"

    def leaf(self) -> pki.x509.Certificate:
        return pki.x509.load_der_x509_certificate(self._tls.getpeercert(binary_form=True))

    def close(self) -> None:
        self._http.close()


def test_an_open_connection_keeps_its_certificate_through_a_swap_and_new_ones_get_the_new(
    agent, cloud, tmp_path
):
    root = tmp_path / "root.pem"
    root.write_text(cloud.root_pem())
    host, port = host_of(agent.manager.state.url), agent.settings.https_port
    before = TLSStore(agent.data_dir / "tls").current().leaf
    kept = KeptAlive(port, host, root)
    try:
        kept.get_status()
        assert kept.leaf() == before
        swap = Threads()
        swap.start(lambda: agent.check(force_new=True), name="swap")
        # Requests on the open connection all through the swap (which also keeps it from being
        # closed as idle, after uvicorn's 5 s).
        deadline = time.monotonic() + 60
        while swap.running():
            assert time.monotonic() < deadline, "the swap did not end"
            kept.get_status()
            time.sleep(0.2)
        swap.join(0)  # ended: raises what the swap raised, if anything
        after = TLSStore(agent.data_dir / "tls").current().leaf
        assert after.serial_number != before.serial_number
        assert served_certificate(port, host, root) == after  # a new connection: the new one
        for _ in range(3):
            kept.get_status()  # the open connection goes on, with the certificate it began with
        assert kept.leaf() == before
    finally:
        kept.close()


INSTALLER = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from lanlock.box.tls_store import TLSStore

store = TLSStore(Path(sys.argv[1]))
pairs = []
for folder in sorted(Path(sys.argv[2]).iterdir()):
    key = serialization.load_pem_private_key((folder / "key.pem").read_bytes(), None)
    pairs.append(((folder / "chain.pem").read_text(), key))
print("ready", flush=True)
index = 0
while True:
    store.install(*pairs[index % len(pairs)])
    index += 1
"""


def test_sigkill_at_random_moments_during_installs_leaves_both_pairs_whole(tmp_path):
    ca = pki.CertificateAuthority.create("iot.test")
    sources = tmp_path / "sources"
    pairs = []
    for number in range(4):
        key = pki.new_private_key()
        chain = pki.to_pem(ca.issue(key.public_key(), [f"*.scope{number}.iot.test"])) + ca.chain_pem
        folder = sources / str(number)
        folder.mkdir(parents=True)
        (folder / "chain.pem").write_text(chain)
        (folder / "key.pem").write_bytes(pki.private_key_pem(key))
        pairs.append((chain, key))
    tls_dir = tmp_path / "box" / "tls"
    for chain, key in pairs[:2]:  # a previous pair as well as a current one, from the start
        TLSStore(tls_dir).install(chain, key)
    rng = random.Random(20261125)
    names_seen = set()
    for _ in range(50):
        installer = subprocess.Popen(
            [sys.executable, "-c", INSTALLER, str(tls_dir), str(sources)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            read_until(installer, "ready\n", seconds=60)
            time.sleep(rng.uniform(0.0, 0.15))
        finally:
            installer.send_signal(signal.SIGKILL)
            installer.wait(10)
        names_seen.add(both_pairs_load(tls_dir).name)
    assert len(names_seen) > 10  # the kills really landed at different moments
    # Paired (to a console that is not there): a box with no console forgets its certificate at
    # its first check, which would race the handshake below.
    change_config(tmp_path / "box", keep_console)
    box = start_box(tmp_path / "box")
    try:
        served = served_certificate_unverified(box.https_port)
        current = TLSStore(tls_dir).current()
        assert served == current.leaf
        assert not current.temporary  # one of the installed pairs, not a start-up stand-in
    finally:
        box.stop()


def keep_console(config: BoxConfig) -> None:
    config.console_url = f"http://127.0.0.1:{free_port()}"


def both_pairs_load(tls_dir: Path) -> Pair:
    """The pair in use, once it and the one a damaged current rolls back to have each been read
    whole (raises if a pointer names a broken pair) and loaded into OpenSSL (files complete, key
    matching)."""
    store = TLSStore(tls_dir)
    current = store.current()
    assert current is not None, "no current pair"
    previous = store.read_pair((tls_dir / "previous").read_text(encoding="ascii").strip())
    for pair in (current, previous):
        pair.ssl_context()
    return current


def served_certificate_unverified(port: int) -> pki.x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        return pki.x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_rotated_certificate_verifies_for_the_box_name(agent, cloud, tmp_path):
    root = tmp_path / "root.pem"
    root.write_text(cloud.root_pem())
    agent.check(force_new=True)
    leaf = served_certificate(agent.settings.https_port, host_of(agent.manager.state.url), root)
    assert leaf == TLSStore(agent.data_dir / "tls").current().leaf


def test_damaged_current_pair_rolls_back_to_the_previous_one(agent, tmp_path):
    tls = TLSStore(agent.data_dir / "tls")
    previous = tls.current()
    agent.check(force_new=True)
    damaged = tls.current()
    assert damaged.leaf.serial_number != previous.leaf.serial_number
    damaged.cert_path.write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    restarted = Agent(BoxSettings(data_dir=agent.data_dir, address="10.0.0.7")).start()
    assert restarted.switch.serial == previous.leaf.serial_number
    assert tls.current().leaf == previous.leaf
