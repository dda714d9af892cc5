"""The wire: EDNS0, truncation, opcodes, garbage, TCP connections and rate limiting."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.update
import pytest

from lanlock.dns.worker import TcpLimits
from tests.dns.running import (
    RunningDNS,
    closed_by_server,
    framed,
    one_worker_dns,
    publish,
    read_message,
    seconds_until_everywhere,
)

ZONE = "iot.test"
# How much later than asked a loaded 2-core machine may run a server's timer or answer a
# question. Bounds below are the server's own setting plus this: they tell a timer that works
# from one that never fires, and say nothing about speed (that is the benchmarks' business).
LATE = 3.0


def header(
    qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: str = ZONE, rdtype: int = dns.rdatatype.SOA) -> bytes:
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", rdtype, 1)


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0x0F


# ---- EDNS0


def test_edns_queries_get_an_opt_advertising_1232(dns_server: RunningDNS, scope: str) -> None:
    for name in (f"10-0-0-7.{scope}.{ZONE}", ZONE):  # fast path, slow path
        response = dns_server.ask(name, "A", use_edns=0, payload=4096)
        assert response.edns == 0
        assert response.payload == 1232


def test_queries_without_edns_get_none_back(dns_server: RunningDNS, scope: str) -> None:
    for name in (f"10-0-0-7.{scope}.{ZONE}", ZONE):
        assert dns_server.ask(name, "A", use_edns=False).edns == -1


def test_the_do_bit_is_copied(dns_server: RunningDNS, scope: str) -> None:
    for name in (f"10-0-0-7.{scope}.{ZONE}", ZONE):
        response = dns_server.ask(name, "A", want_dnssec=True)
        assert response.ednsflags & dns.flags.DO
        assert not dns_server.ask(name, "A", use_edns=0).ednsflags & dns.flags.DO


def test_an_unknown_edns_version_gets_badvers(dns_server: RunningDNS, scope: str) -> None:
    response = dns_server.ask(f"10-0-0-7.{scope}.{ZONE}", "A", use_edns=1)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0


def test_edns_options_such_as_cookies_are_ignored(dns_server: RunningDNS, scope: str) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    response = dns_server.ask(f"10-0-0-7.{scope}.{ZONE}", "A", use_edns=0, options=[cookie])
    assert response.rcode() == dns.rcode.NOERROR
    assert [rdata.to_text() for rdata in response.answer[0]] == ["10.0.0.7"]


# ---- truncation


@pytest.fixture
def many_values(dns_server: RunningDNS, scope: str) -> tuple[str, list[str]]:
    """A challenge name with 16 values of 100 characters: about 1.8 kB of answer."""
    name = f"_acme-challenge.{scope}.{ZONE}"
    values = [f"{i:02d}" + "v" * 98 for i in range(16)]
    publish(dns_server.store_url, name, *values)
    seconds_until_everywhere(dns_server, name, set(values), "tcp")
    return name, values


@pytest.mark.parametrize(
    "edns",
    [{"use_edns": False}, {"use_edns": 0, "payload": 1232}, {"use_edns": 0, "payload": 4096}],
)
def test_udp_answers_larger_than_the_client_takes_are_truncated_keeping_the_question(
    dns_server: RunningDNS, many_values: tuple[str, list[str]], edns: dict[str, object]
) -> None:
    name, _ = many_values
    query = dns.message.make_query(name, "TXT", **edns)  # type: ignore[arg-type]
    response = dns_server.send(query, "udp")
    assert response.flags & dns.flags.TC
    assert response.question == query.question
    assert response.answer == []
    limit = 1232 if edns["use_edns"] == 0 else 512
    assert len(response.to_wire()) <= limit


def test_the_same_answer_comes_whole_over_tcp(
    dns_server: RunningDNS, many_values: tuple[str, list[str]]
) -> None:
    name, values = many_values
    response = dns_server.ask(name, "TXT", "tcp")
    assert not response.flags & dns.flags.TC
    assert sorted(rdata.strings[0].decode() for rdata in response.answer[0]) == values


# ---- opcodes and garbage


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY])
def test_opcodes_other_than_query_get_notimp(dns_server: RunningDNS, opcode: int) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    query.set_opcode(opcode)
    response = dns_server.send(query)
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == opcode


def test_dynamic_updates_get_notimp(dns_server: RunningDNS, transport: str) -> None:
    update = dns.update.UpdateMessage(ZONE)
    update.add("www", 300, "A", "10.0.0.1")
    assert dns_server.send(update, transport).rcode() == dns.rcode.NOTIMP


@pytest.mark.parametrize("opcode", [3, 6, 15])
def test_unassigned_opcodes_get_notimp(dns_server: RunningDNS, opcode: int) -> None:
    reply = dns_server.send_udp_bytes(header(flags=opcode << 11) + question())
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.NOTIMP
    assert reply[:2] == b"\x12\x34"


@pytest.mark.parametrize(
    "packet",
    [
        header(qd=2) + question() + question(),
        header(qd=0),
        header() + question()[:-3],  # cut in the middle of the question
        header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1),  # a name pointing at itself
        header() + b"\x3f" + b"a" * 10,  # a label longer than what follows
        header() + question() + b"trailing junk",
        header(ar=1) + question() + b"\x00\x00\x29",  # a cut OPT record
    ],
)
def test_malformed_queries_get_formerr(dns_server: RunningDNS, packet: bytes) -> None:
    reply = dns_server.send_udp_bytes(packet)
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.FORMERR
    assert reply[:2] == packet[:2]
    assert reply[2] & 0x80  # QR


@pytest.mark.parametrize("packet", [b"", b"\x12", header()[:11], header(flags=0x8100) + question()])
def test_packets_that_are_not_queries_get_no_reply(dns_server: RunningDNS, packet: bytes) -> None:
    """Too short to hold an ID, or a response: answering could start a loop between servers."""
    assert dns_server.send_udp_bytes(packet, timeout=1.0) is None  # long enough for a late one
    assert dns_server.ask(ZONE, "SOA").rcode() == dns.rcode.NOERROR


# ---- TCP


def test_several_queries_on_one_tcp_connection_are_answered_in_order(
    dns_server: RunningDNS, scope: str
) -> None:
    queries = [dns.message.make_query(f"10-0-0-{i}.{scope}.{ZONE}", "A") for i in range(1, 6)] + [
        dns.message.make_query(ZONE, "SOA")
    ]
    with dns_server.tcp_connection() as sock:
        sock.sendall(b"".join(framed(q) for q in queries))  # pipelined, in one segment
        answers = [read_message(sock) for _ in queries]
        sock.sendall(framed(queries[0]))  # and the connection stays open for more
        answers.append(read_message(sock))
    assert [a.id for a in answers] == [q.id for q in queries] + [queries[0].id]
    assert [a.answer[0][0].to_text() for a in answers[:5]] == [f"10.0.0.{i}" for i in range(1, 6)]


def test_a_query_sent_a_byte_at_a_time_is_answered(dns_server: RunningDNS, scope: str) -> None:
    query = dns.message.make_query(f"10-0-0-7.{scope}.{ZONE}", "A")
    with dns_server.tcp_connection() as sock:
        for byte in framed(query):
            sock.sendall(bytes([byte]))
        assert read_message(sock).answer[0][0].to_text() == "10.0.0.7"


def test_a_stalled_tcp_client_holds_up_nobody(dns_server: RunningDNS, scope: str) -> None:
    with dns_server.tcp_connection() as stalled:
        stalled.sendall(b"\x00\x40\x12")  # announces 64 bytes, sends one
        started = time.monotonic()
        assert dns_server.ask(f"10-0-0-7.{scope}.{ZONE}", "A", "udp").answer
        assert dns_server.ask(f"10-0-0-7.{scope}.{ZONE}", "A", "tcp").answer
        # Held up, they would wait until the stalled connection is dropped as idle.
        assert time.monotonic() - started < TcpLimits().idle_timeout / 2


TIGHT_IDLE = 0.5  # seconds without a query before the tight server closes a TCP connection
RRL = 5  # UDP answers a second per source, and the burst, on the tight server
# The idle timer fires on the worker's sweep, every half second.
CLOSED_WITHIN = TIGHT_IDLE + 0.5 + LATE


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    """One worker, TCP connections closed after TIGHT_IDLE seconds without a query, RRL UDP
    answers a second per source."""
    options = ("--tcp-idle-timeout", str(TIGHT_IDLE), "--rrl", str(RRL))
    with one_worker_dns(tmp_path_factory, "dns-tight", *options) as server:
        yield server


def test_an_idle_tcp_connection_is_closed(tight_server: RunningDNS) -> None:
    with tight_server.tcp_connection() as sock:
        sock.sendall(framed(dns.message.make_query(ZONE, "SOA")))
        read_message(sock)
        started = time.monotonic()
        assert closed_by_server(sock, within=CLOSED_WITHIN)
        assert time.monotonic() - started > 0.6 * TIGHT_IDLE  # by the idle timer, not at once


def test_trickling_bytes_do_not_keep_a_connection_open(tight_server: RunningDNS) -> None:
    with tight_server.tcp_connection() as sock:
        sock.sendall(b"\x00")
        deadline = time.monotonic() + CLOSED_WITHIN
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"\x00")
            except OSError:
                closed = True
            else:
                closed = closed_by_server(sock, within=0.2)
        assert closed, f"a byte every 0.2 s kept the connection open {CLOSED_WITHIN:g} s"


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    """One worker, at most 2 TCP connections, none closed as idle while a test runs."""
    with one_worker_dns(
        tmp_path_factory, "dns-capped", "--tcp-max-connections", "2", "--tcp-idle-timeout", "60"
    ) as server:
        yield server


def test_connections_over_the_cap_are_closed_at_once(capped_server: RunningDNS) -> None:
    with capped_server.tcp_connection() as first, capped_server.tcp_connection() as second:
        for sock in (first, second):
            sock.sendall(framed(dns.message.make_query(ZONE, "SOA")))
            read_message(sock)
        with capped_server.tcp_connection() as third:
            # Closed by the cap: the idle timer would take a minute.
            assert closed_by_server(third, within=LATE)
    # Once the first two are gone, a new connection is served again.
    deadline = time.monotonic() + LATE
    while True:
        try:
            assert capped_server.ask(ZONE, "SOA", "tcp").rcode() == dns.rcode.NOERROR
            break
        except (ConnectionError, EOFError):
            assert time.monotonic() < deadline, "no TCP answer after the two connections closed"
            time.sleep(0.1)


# ---- response-rate limiting


def test_rate_limiting_caps_udp_answers_per_source_and_slips_truncated_ones(
    tight_server: RunningDNS, scope: str
) -> None:
    """A burst of RRL, then about half of the rest dropped and half sent truncated."""
    sent = 40
    full = truncated = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(LATE)  # a reply this late means none is coming
        started = last_reply = time.monotonic()
        for i in range(sent):
            query = dns.message.make_query(f"10-0-0-{i}.{scope}.{ZONE}", "A")
            sock.sendto(query.to_wire(), ("127.0.0.1", tight_server.port))
        try:
            while time.monotonic() - started < 10 * LATE:
                reply = dns.message.from_wire(sock.recv(65535))
                last_reply = time.monotonic()
                if reply.flags & dns.flags.TC:
                    assert reply.answer == [] and len(reply.question) == 1
                    truncated += 1
                else:
                    full += 1
        except TimeoutError:
            pass
    # The burst, and what refilled while the server worked through the queries (longer on a
    # loaded machine); the burst may be short by the start-up probes.
    assert 1 <= full <= RRL + RRL * (last_reply - started) + 1
    assert truncated >= (sent - full) // 2 - 2
    assert full + truncated < sent
    # TCP is never limited: a client told to retry over TCP gets its answer.
    assert tight_server.ask(f"10-0-0-1.{scope}.{ZONE}", "A", "tcp").answer
