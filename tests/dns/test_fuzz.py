"""Garbage in: random and mutated packets over UDP and TCP never crash or stall a worker.

After every packet, the same client asks a normal question and must get its answer; whatever
the server sent back to the garbage must be a DNS response (or nothing). After each kind of
garbage the server's log must show no worker restarted and no unexpected error: the server is
this module's own, so its log holds nothing but what the garbage did, whatever order the tests
run in.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterator

import dns.edns
import dns.message
import dns.rcode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.dns.conftest import SETTINGS
from tests.dns.running import HOST, RunningDNS, running_dns
from tests.fuzz.strategies import dns_packets, fuzz_settings

ZONE = "iot.test"
SCOPE = "abcdefghijklmnop"
FUZZ = fuzz_settings(150)  # the same packets on every run (a failure replays), or more with
# LANLOCK_FUZZ_EXAMPLES


def seed_queries() -> list[bytes]:
    """Well-formed queries of every kind the server handles, to be mutated."""
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    queries = [
        dns.message.make_query(f"10-0-0-7.{SCOPE}.{ZONE}", "A"),
        dns.message.make_query(f"fe80--1.{SCOPE}.{ZONE}", "AAAA", use_edns=0, want_dnssec=True),
        dns.message.make_query(f"nope.{SCOPE}.{ZONE}", "A", use_edns=0, options=[cookie]),
        dns.message.make_query(ZONE, "SOA", use_edns=0, payload=4096),
        dns.message.make_query(ZONE, "ANY"),
        dns.message.make_query(f"_acme-challenge.{SCOPE}.{ZONE}", "TXT"),
        dns.message.make_query("example.com", "A"),
    ]
    return [query.to_wire() for query in queries]


SEEDS = seed_queries()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(packet) - 1))
        action = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        if action == "set":
            packet[position] = draw(st.integers(0, 255))
        elif action == "insert":
            packet[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and len(packet) > 1:
            del packet[position]
        elif action == "cut":
            del packet[max(position, 1) :]
    return bytes(packet)


@st.composite
def counted_garbage(draw: st.DrawFn) -> bytes:
    """A plausible header (any counts, any flags) over random bytes."""
    head = struct.pack(
        "!HHHHHH",
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)) & 0x7FFF,  # a query: QR clear
        *(draw(st.integers(0, 3)) for _ in range(4)),
    )
    return head + draw(st.binary(max_size=300))


# Structure-aware mutations of valid queries (tests/fuzz/strategies.py) reach past the first
# length check, where random bytes stop; the random kinds stay for what no structure predicts.
PACKETS = st.one_of(dns_packets(), st.binary(max_size=600), mutated(), counted_garbage())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    """A server of this module's own (the package's is shared with other files), with the
    package's settings."""
    tmp = tmp_path_factory.mktemp("dns-fuzz")
    with running_dns(f"sqlite:///{tmp / 'store.db'}", tmp, *SETTINGS) as running:
        yield running


def probe() -> dns.message.Message:
    return dns.message.make_query(f"10-9-8-{random.randrange(256)}.{SCOPE}.{ZONE}", "A")


def wait_for_probe_answer(receive: Callable[[], bytes], query: dns.message.Message) -> None:
    """Read replies until the one to ``query``; any other reply must be a DNS response."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        data = receive()
        try:
            reply = dns.message.from_wire(data)
        except Exception:
            raise AssertionError(f"the server sent bytes that are not DNS: {data!r}") from None
        if query.is_response(reply):
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer
            return
        assert reply.flags & 0x8000
    raise AssertionError("no answer to a normal question after the garbage")


@FUZZ
@given(packet=PACKETS)
def udp_garbage_then_a_question(server: RunningDNS, packet: bytes) -> None:
    query = probe()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(packet, (HOST, server.port))
        sock.sendto(query.to_wire(), (HOST, server.port))
        wait_for_probe_answer(lambda: sock.recv(65535), query)


def test_udp_garbage_is_answered_or_dropped_and_the_next_query_answered(
    server: RunningDNS,
) -> None:
    udp_garbage_then_a_question(server)
    assert_no_worker_crashed_or_logged_an_error(server)


def tcp_receiver(sock: socket.socket) -> Callable[[], bytes]:
    def receive() -> bytes:
        size = struct.unpack("!H", _exactly(sock, 2))[0]
        return _exactly(sock, size)

    return receive


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError("the server closed the connection")
        data += chunk
    return data


@FUZZ
@given(packet=PACKETS)
def framed_tcp_garbage_then_a_question(server: RunningDNS, packet: bytes) -> None:
    query = probe()
    wire = query.to_wire()
    with socket.create_connection((HOST, server.port), timeout=3) as sock:
        sock.sendall(struct.pack("!H", len(packet)) + packet + struct.pack("!H", len(wire)) + wire)
        wait_for_probe_answer(tcp_receiver(sock), query)


def test_framed_tcp_garbage_does_not_stop_the_connection_answering(server: RunningDNS) -> None:
    framed_tcp_garbage_then_a_question(server)
    assert_no_worker_crashed_or_logged_an_error(server)


@FUZZ
@given(stream=st.binary(min_size=1, max_size=2000))
def raw_tcp_garbage_then_a_question(server: RunningDNS, stream: bytes) -> None:
    with socket.create_connection((HOST, server.port), timeout=3) as sock:
        sock.sendall(stream)
    query = probe()
    assert server.send(query, "tcp").answer


def test_a_raw_tcp_stream_of_garbage_leaves_the_server_answering(server: RunningDNS) -> None:
    raw_tcp_garbage_then_a_question(server)
    assert_no_worker_crashed_or_logged_an_error(server)


def assert_no_worker_crashed_or_logged_an_error(server: RunningDNS) -> None:
    """The verdict on all the garbage the server has had so far."""
    assert server.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR
    log = server.log_text()
    assert "starting it again" not in log
    assert "Traceback" not in log
    assert "unexpected error" not in log
    assert server.process.poll() is None
