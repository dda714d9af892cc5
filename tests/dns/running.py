"""The real ``lanlock dns serve`` on a free loopback port, and a client that talks to it."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from lanlock.cloud.models import AcmeAccount, ChallengeRecord, cloud_store
from tests.servers import ZONE, free_port, lanlock_command

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
T = TypeVar("T")


@dataclass
class RunningDNS:
    port: int
    store_url: str
    process: subprocess.Popen[bytes]
    log: Path
    zone: str = ZONE

    def answering(self, seconds: float) -> RunningDNS:
        """This server once it answers the zone's SOA; stopped, and RuntimeError with its log,
        if it does not within ``seconds`` (or exits)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(dns.exception.Timeout, OSError):
                self.ask(self.zone, "SOA", timeout=0.2)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"lanlock dns serve did not answer on port {self.port}:\n{self.log_text()}"
        )

    def ask(
        self,
        name: str,
        rdtype: str | int = "A",
        transport: str = "udp",
        timeout: float = 2.0,
        source: str | None = None,
        **make_query: object,
    ) -> dns.message.Message:
        """Ask a question as a client would; dnspython checks the answer matches the query.

        ``source``: the client's address, any of 127/8 on Linux, to play several hosts.
        """
        query = dns.message.make_query(name, rdtype, **make_query)  # type: ignore[arg-type]
        return self.send(query, transport, timeout, source)

    def send(
        self,
        query: dns.message.Message,
        transport: str = "udp",
        timeout: float = 2.0,
        source: str | None = None,
    ) -> dns.message.Message:
        if transport == "tcp":
            return dns.query.tcp(query, HOST, port=self.port, timeout=timeout, source=source)
        return dns.query.udp(
            query, HOST, port=self.port, timeout=timeout, source=source, ignore_trailing=False
        )

    def send_udp_bytes(
        self, data: bytes, timeout: float = 1.0, source: str | None = None
    ) -> bytes | None:
        """Send raw bytes in one datagram; the reply's bytes, or None if none came in time."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            if source is not None:
                sock.bind((source, 0))
            sock.sendto(data, (HOST, self.port))
            try:
                return sock.recv(65535)
            except TimeoutError:
                return None

    def tcp_connection(self, timeout: float = 2.0, source: str | None = None) -> socket.socket:
        source_address = None if source is None else (source, 0)
        return socket.create_connection(
            (HOST, self.port), timeout=timeout, source_address=source_address
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_dns(
    store_url: str, tmp_path: Path, *extra: str, workers: int = 2, migrate: bool = True
) -> RunningDNS:
    """Start the server and wait until it answers; a port that is taken is tried again. The
    store gets the cloud's schema first (``migrate``), as the DNS needs and never makes."""
    if migrate:
        migrate_cloud_schema(store_url)
    for _attempt in range(3):
        port = free_port()
        log = tmp_path / f"dns-{port}.log"
        process = subprocess.Popen(
            lanlock_command(
                "dns",
                "serve",
                "--store",
                store_url,
                "--zone",
                ZONE,
                "--port",
                str(port),
                "--workers",
                str(workers),
                *extra,
            ),
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        server = RunningDNS(port, store_url, process, log)
        if _wait_until_answering(server):
            return server
        server.stop()
        if "cannot listen" not in server.log_text():
            break
    raise RuntimeError(f"lanlock dns serve did not start:\n{server.log_text()}")


def migrate_cloud_schema(store_url: str) -> None:
    store = cloud_store(store_url, pool_size=1)
    try:
        store.migrate()
    finally:
        store.dispose()


def _wait_until_answering(server: RunningDNS) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        with contextlib.suppress(dns.exception.Timeout, OSError):
            server.ask(ZONE, "SOA", timeout=0.2)
            return True
    return False


@contextlib.contextmanager
def running_dns(
    store_url: str, tmp_path: Path, *extra: str, workers: int = 2, migrate: bool = True
) -> Iterator[RunningDNS]:
    server = start_dns(store_url, tmp_path, *extra, workers=workers, migrate=migrate)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def one_worker_dns(
    tmp_path_factory: pytest.TempPathFactory, name: str, *options: str
) -> Iterator[RunningDNS]:
    """One worker on a SQLite store of its own, with ``options``: a test module's own server."""
    tmp = tmp_path_factory.mktemp(name)
    with running_dns(f"sqlite:///{tmp / 'store.db'}", tmp, *options, workers=1) as server:
        yield server


def publish(
    store_url: str, name: str, *values: str, ttl: dt.timedelta = dt.timedelta(minutes=5)
) -> None:
    """Write challenge values as the cloud does: rows of ``acme_challenges`` for the scope of
    ``name`` (``_acme-challenge.<scope>.<zone>``)."""
    store = cloud_store(store_url, pool_size=1)
    try:
        with store.transaction() as session:
            expires_at = dt.datetime.now(dt.UTC) + ttl
            session.add_all(
                ChallengeRecord(scope=scope_of(name), value=v, expires_at=expires_at)
                for v in values
            )
    finally:
        store.dispose()


def unpublish(store_url: str, name: str) -> None:
    store = cloud_store(store_url, pool_size=1)
    try:
        with store.transaction() as session:
            session.query(ChallengeRecord).filter_by(scope=scope_of(name)).delete()
    finally:
        store.dispose()


def store_accounts(store_url: str, *account_uris: str | None) -> None:
    """Make ``acme_accounts`` hold exactly these accounts, one directory each, as the cloud
    writes them (None: a key made, its registration not answered yet)."""
    store = cloud_store(store_url, pool_size=1)
    try:
        with store.transaction() as session:
            session.query(AcmeAccount).delete()
            session.add_all(
                AcmeAccount(
                    directory_url=f"https://acme{index}.example/directory",
                    key_encrypted=b"a key, encrypted",
                    account_uri=uri,
                )
                for index, uri in enumerate(account_uris)
            )
    finally:
        store.dispose()


def scope_of(challenge_name: str) -> str:
    label, scope, *_ = challenge_name.split(".")
    assert label == "_acme-challenge", challenge_name
    return scope


def txt_values(server: RunningDNS, name: str, transport: str = "udp") -> set[str]:
    """The TXT values a client gets for ``name``; the answer must be authoritative NOERROR."""
    response = server.ask(name, "TXT", transport)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    return {b"".join(rdata.strings).decode() for rrset in response.answer for rdata in rrset}


def seconds_until_everywhere(
    server: RunningDNS, name: str, expected: set[str], transport: str = "udp", within: float = 10
) -> float:
    """Seconds from now until ten TXT answers in a row are ``expected`` (see :func:`steady`)."""
    return steady(lambda: txt_values(server, name, transport), expected, within, name)


def steady(ask: Callable[[], T], expected: T, within: float, what: str) -> float:
    """Seconds from now until ten answers of ``ask`` in a row are ``expected``; fails if that
    takes more than ``within`` seconds.

    Each question comes from a new source port, and the kernel spreads source ports over the
    workers, each with its own snapshot of the store: ten answers in a row are ten draws.
    """
    started = time.monotonic()
    in_a_row = 0
    while in_a_row < 10:
        if time.monotonic() - started > within:
            raise AssertionError(f"{what} answers {ask()}, not {expected}, after {within:g} s")
        in_a_row = in_a_row + 1 if ask() == expected else 0
        if not in_a_row:
            time.sleep(0.02)
    return time.monotonic() - started


# ---- DNS over TCP by hand


def read_message(sock: socket.socket) -> dns.message.Message:
    size = struct.unpack("!H", recv_exactly(sock, 2))[0]
    return dns.message.from_wire(recv_exactly(sock, size))


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def framed(message: dns.message.Message) -> bytes:
    """``message`` as it goes over TCP: its length in two bytes, then itself (RFC 1035 §4.2.2)."""
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True once the server has closed ``sock``; False if it is still open after ``within``
    seconds (or something else arrived)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
