"""The DNS's two answer paths under structure-aware fuzzing, in process: many examples a second.

Every packet goes through the fast path and, when it declines, the slow path, exactly as a
worker sends it (minus the worker's catch-all, so that any exception fails the test instead of
becoming a SERVFAIL). Each reply must be a DNS response to that query: same ID, QR set, at most
one question, within the UDP size the server allows. The test also counts which path and rcode
every example reached, and fails if the fuzzer stopped reaching any of them: a fuzzer that only
exercises the first length check proves nothing (print the counts with ``pytest -s``).
"""

from __future__ import annotations

from collections import Counter

import dns.exception
import dns.message
import dns.rcode
from hypothesis import given

from lanlock.dns.answer import Responder
from lanlock.dns.fastpath import FastPath
from lanlock.dns.zone import Zone, ZoneSettings
from tests.fuzz.strategies import SCOPE, ZONE, dns_packets, fuzz_settings

MAX_UDP_REPLY = 1232  # the server's EDNS payload, whatever the client offers

EVERY_PATH = {
    "fast NOERROR",
    "slow NOERROR",
    "slow NXDOMAIN",
    "slow FORMERR",
    "slow REFUSED",
    "slow NOTIMP",
    "slow BADVERS",
    "no answer",
}


class Challenges:
    """One published value for SCOPE, as the store would hold it."""

    def values(self, scope: str) -> list[str]:
        return ["published-value"] if scope == SCOPE else []


def answer(fast: FastPath, slow: Responder, packet: bytes, tcp: bool) -> str:
    """Answer as a worker does; check the reply; name the path and rcode it took."""
    reply, path = fast.answer(packet), "fast"
    if reply is None:
        reply, path = slow.respond(packet, tcp=tcp), "slow"
    if reply is None:
        return "no answer"
    try:
        message = dns.message.from_wire(reply)
    except dns.exception.DNSException as exc:
        raise AssertionError(f"the reply to {packet!r} is not DNS: {exc}: {reply!r}") from None
    assert message.id == int.from_bytes(packet[:2], "big")
    assert message.flags & 0x8000, "a reply must have QR set"
    assert len(message.question) <= 1
    assert tcp or len(reply) <= MAX_UDP_REPLY
    return f"{path} {dns.rcode.to_text(message.rcode())}"


def test_every_fuzzed_packet_gets_a_well_formed_answer_or_none_and_every_path_is_reached():
    zone = Zone(ZoneSettings(zone=ZONE))
    fast, slow = FastPath(zone), Responder(zone, Challenges())
    reached: Counter[str] = Counter()

    @fuzz_settings(3000)
    @given(packet=dns_packets())
    def one(packet: bytes) -> None:
        for tcp in (False, True):
            reached[answer(fast, slow, packet, tcp)] += 1

    one()
    print("\nDNS answer paths reached:", dict(sorted(reached.items())))
    assert set(reached) >= EVERY_PATH, f"never reached: {EVERY_PATH - set(reached)}"
