"""Boundary: one host cannot hold DNS over TCP away from everybody else.

The attacker opens many connections from one address (127.0.0.2) and keeps them open. The server
lets it hold its per-source maximum and closes the rest at once; meanwhile another host
(127.0.0.3) is answered over TCP and UDP, the cloud's visibility check (a challenge's TXT over
both) included. A connection does not live forever either: it is closed after its lifetime
however busy it is, and after its query budget. Everything runs against the real server, with
one worker so that its per-worker counts are exact.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest

from lanlock import names
from tests.dns.running import (
    RunningDNS,
    closed_by_server,
    framed,
    one_worker_dns,
    publish,
    read_message,
    seconds_until_everywhere,
)
from tests.servers import ZONE

ATTACKER, OTHER_HOST = "127.0.0.2", "127.0.0.3"  # Linux loopback answers all of 127/8
DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_SOURCE = 100, 10  # `lanlock dns serve`'s defaults
ANSWER_WAIT = 5.0  # bound on any one wait for the server


def address_query(last_byte: int = 7) -> dns.message.Message:
    return dns.message.make_query(f"10-0-0-{last_byte}.abcdefghijklmnop.{ZONE}", "A")


def is_answered(sock: socket.socket, query: dns.message.Message) -> bool:
    """Send ``query``; True if its answer comes back, False if the server closed the connection."""
    sock.settimeout(ANSWER_WAIT)
    try:
        sock.sendall(framed(query))
        return read_message(sock).id == query.id
    except ConnectionError:  # closed or reset, before or in the middle of the answer
        return False


def open_connections(
    server: RunningDNS, source: str, count: int, stack: contextlib.ExitStack
) -> list[socket.socket]:
    return [stack.enter_context(server.tcp_connection(source=source)) for _ in range(count)]


@pytest.fixture
def challenge(scope: str, default_server: RunningDNS) -> tuple[str, set[str]]:
    """A published challenge, visible over UDP and TCP before any attack starts."""
    name, values = f"_acme-challenge.{scope}.{ZONE}", {"token-" + scope}
    publish(default_server.store_url, name, *values)
    for transport in ("udp", "tcp"):
        seconds_until_everywhere(default_server, name, values, transport)
    return name, values


@pytest.fixture
def scope() -> str:
    return names.new_scope()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    """The server with its TCP defaults: what production runs."""
    with one_worker_dns(tmp_path_factory, "dns-hold") as server:
        yield server


def test_one_host_holding_its_maximum_starves_nobody(
    default_server: RunningDNS, challenge: tuple[str, set[str]]
) -> None:
    """The finding: 100 slow connections from one address took every TCP slot there was."""
    name, values = challenge
    with contextlib.ExitStack() as stack:
        attempts = open_connections(default_server, ATTACKER, DEFAULT_MAX_CONNECTIONS + 50, stack)
        held = [sock for sock in attempts if is_answered(sock, address_query())]
        # ... and now it just keeps them open, as slowly as it likes.

        assert default_server.ask(ZONE, "SOA", "tcp", source=OTHER_HOST).answer
        assert default_server.ask(ZONE, "SOA", "udp", source=OTHER_HOST).answer
        for transport in ("udp", "tcp"):  # the cloud's visibility check, from another host
            response = default_server.ask(name, "TXT", transport, source=OTHER_HOST)
            assert response.rcode() == dns.rcode.NOERROR
            assert {b"".join(r.strings).decode() for r in response.answer[0]} == values

        assert len(held) == DEFAULT_MAX_PER_SOURCE
        one_more = stack.enter_context(default_server.tcp_connection(source=ATTACKER))
        assert closed_by_server(one_more, within=ANSWER_WAIT)
        # The attacker held its maximum the whole time: every one of them still answers.
        assert all(is_answered(sock, address_query(8)) for sock in held)
    assert "Traceback" not in default_server.log_text()


@pytest.fixture(scope="module")
def short_lived_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    """Connections live 1 s at most; the idle timeout is far longer, so only the lifetime ends
    a busy one."""
    with one_worker_dns(
        tmp_path_factory, "dns-lifetime", "--tcp-max-lifetime", "1", "--tcp-idle-timeout", "30"
    ) as server:
        yield server


def test_a_busy_connection_is_closed_after_its_lifetime(short_lived_server: RunningDNS) -> None:
    deadline = time.monotonic() + 1 + ANSWER_WAIT
    answered = 0
    with short_lived_server.tcp_connection() as sock:
        while is_answered(sock, address_query()):
            answered += 1
            assert time.monotonic() < deadline, f"still open after {answered} answers"
            time.sleep(0.05)
    assert answered > 1  # it was busy, not idle, when it was closed


BUDGET = 5


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    options = ("--tcp-max-queries", str(BUDGET), "--tcp-max-per-source", "2")
    with one_worker_dns(tmp_path_factory, "dns-budget", *options) as server:
        yield server


def test_a_connection_is_closed_after_its_query_budget(budget_server: RunningDNS) -> None:
    with budget_server.tcp_connection() as sock:
        for index in range(BUDGET):
            assert is_answered(sock, address_query(index + 1))
        assert closed_by_server(sock, within=ANSWER_WAIT)


def test_queries_pipelined_past_the_budget_are_not_answered(budget_server: RunningDNS) -> None:
    queries = [address_query(index + 1) for index in range(BUDGET + 1)]
    with budget_server.tcp_connection() as sock:
        sock.sendall(b"".join(framed(query) for query in queries))  # one segment
        answers = [read_message(sock) for _ in range(BUDGET)]
        assert closed_by_server(sock, within=ANSWER_WAIT)
    assert [answer.id for answer in answers] == [query.id for query in queries[:BUDGET]]


def test_the_per_source_cap_follows_its_option(budget_server: RunningDNS) -> None:
    with contextlib.ExitStack() as stack:
        attempts = open_connections(budget_server, ATTACKER, 5, stack)
        assert sum(is_answered(sock, address_query()) for sock in attempts) == 2
        other = stack.enter_context(budget_server.tcp_connection(source=OTHER_HOST))
        assert is_answered(other, address_query())
