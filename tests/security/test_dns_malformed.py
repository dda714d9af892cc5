"""Boundary: a query cut short gets FORMERR, or nothing when it is shorter than a header.

Never SERVFAIL and never a traceback in the server's log: a message that does not parse is the
client's error, not the server's. Every cut of a valid query, at every offset, over UDP and TCP,
against the real server; the exact case of the finding is a bare 12-byte header announcing one
question. Each cut query is followed by a valid probe on the same socket: the server answers one
socket's messages in order, so what comes back before the probe's answer is exactly what the cut
query got, with no waiting for an answer that does not come.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from tests.dns.running import HOST, RunningDNS, framed, recv_exactly, running_dns
from tests.servers import ZONE

HEADER_SIZE = 12
QUERY_ID, PROBE_ID = 0x1234, 0x4321
ANSWER_WAIT = 5.0  # bound on any one wait for the server
ADDRESS_NAME = f"10-0-0-7.abcdefghijklmnop.{ZONE}"
COOKIE = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)

Reply = tuple[bytes, bool, int]  # (ID, is a response, rcode)


def query(name: str, rdtype: str, **options: object) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, **options)  # type: ignore[arg-type]
    message.id = QUERY_ID
    return message


VALID_QUERIES = {
    # the fast path's questions, with the longest OPT it takes and with none
    "address-edns-cookie": query(ADDRESS_NAME, "A", use_edns=0, options=[COOKIE]),
    "address-no-edns": query(ADDRESS_NAME, "AAAA", use_edns=False),
    "apex-soa-edns": query(ZONE, "SOA", use_edns=0),  # the slow path's
}
BARE_HEADERS = {
    "one-question": struct.pack("!HHHHHH", QUERY_ID, 0x0100, 1, 0, 0, 0),  # the finding
    "one-question-and-opt": struct.pack("!HHHHHH", QUERY_ID, 0x0100, 1, 0, 0, 1),
    "two-questions": struct.pack("!HHHHHH", QUERY_ID, 0x0100, 2, 0, 0, 0),
    "one-answer": struct.pack("!HHHHHH", QUERY_ID, 0x0100, 1, 1, 0, 0),
}


def probe() -> dns.message.Message:
    message = dns.message.make_query(ZONE, "SOA")
    message.id = PROBE_ID
    return message


def summary(reply: bytes) -> Reply:
    return reply[:2], bool(reply[2] & 0x80), reply[3] & 0x0F


def expected(cut: bytes) -> list[Reply]:
    if len(cut) < HEADER_SIZE:
        return []  # nobody to answer: no ID to answer with
    return [(cut[:2], True, dns.rcode.FORMERR)]


class Client:
    """One socket to the server; ``replies_to`` sends raw bytes and the probe after them."""

    def __init__(self, server: RunningDNS, transport: str) -> None:
        self.transport = transport
        if transport == "tcp":
            self.sock = server.tcp_connection(timeout=ANSWER_WAIT)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.settimeout(ANSWER_WAIT)
            self.sock.connect((HOST, server.port))

    def replies_to(self, data: bytes) -> list[Reply]:
        """What the server sent back for ``data``, up to the probe's answer."""
        if self.transport == "tcp":
            self.sock.sendall(struct.pack("!H", len(data)) + data + framed(probe()))
        else:
            self.sock.send(data)
            self.sock.send(probe().to_wire())
        replies = []
        while (reply := self._receive())[:2] != PROBE_ID.to_bytes(2, "big"):
            replies.append(summary(reply))
        return replies

    def _receive(self) -> bytes:
        if self.transport == "tcp":
            return recv_exactly(self.sock, int.from_bytes(recv_exactly(self.sock, 2), "big"))
        return self.sock.recv(65535)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    tmp: Path = tmp_path_factory.mktemp("dns-malformed")
    with running_dns(f"sqlite:///{tmp / 'store.db'}", tmp) as running:
        yield running


@pytest.fixture(params=["udp", "tcp"])
def client(request: pytest.FixtureRequest, server: RunningDNS) -> Iterator[Client]:
    opened = Client(server, request.param)
    yield opened
    opened.close()


@pytest.mark.parametrize("packet", BARE_HEADERS.values(), ids=BARE_HEADERS.keys())
def test_a_bare_header_announcing_records_gets_formerr(
    server: RunningDNS, client: Client, packet: bytes
) -> None:
    assert client.replies_to(packet) == [(packet[:2], True, dns.rcode.FORMERR)]
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("valid", VALID_QUERIES.values(), ids=VALID_QUERIES.keys())
def test_a_query_cut_at_any_offset_gets_formerr_or_nothing(
    server: RunningDNS, client: Client, valid: dns.message.Message
) -> None:
    wire = valid.to_wire()
    assert client.replies_to(wire) == [(wire[:2], True, dns.rcode.NOERROR)]
    wrong = {
        offset: replies
        for offset in range(len(wire))
        if (replies := client.replies_to(wire[:offset])) != expected(wire[:offset])
    }
    assert wrong == {}, f"cut at offset: replies (ID, QR, rcode) of {len(wire)} bytes"
    assert "Traceback" not in server.log_text()
