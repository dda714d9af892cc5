"""Structure-aware inputs: valid messages, then mutated where parsers go wrong.

Random bytes almost never parse, so they test the first check of a parser and nothing after it.
These strategies start from well-formed messages and change one structural thing at a time:
a cut at any offset, wrong section counts, compression pointers that loop or point past the end,
label lengths that lie, EDNS options of every shape.

``LANLOCK_FUZZ_EXAMPLES`` sets the number of examples: CI runs the default with a fixed seed
(``derandomize``), so a failure replays; a larger nightly-sized run sets it and gets a random
seed, which hypothesis prints when it finds something.
"""

from __future__ import annotations

import os
import struct

import dns.edns
import dns.message
import dns.rdatatype
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ZONE = "iot.test"
SCOPE = "abcdefghijklmnop"
EXAMPLES = int(os.environ.get("LANLOCK_FUZZ_EXAMPLES", "0"))


def fuzz_settings(default_examples: int) -> settings:
    """The default with a fixed seed, or ``LANLOCK_FUZZ_EXAMPLES`` with a random one."""
    return settings(
        max_examples=EXAMPLES or default_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not EXAMPLES,
        database=None,
    )


# --- DNS ---------------------------------------------------------------------------------------

_NAMES = [
    f"10-0-0-7.{SCOPE}.{ZONE}",
    f"fe80--1.{SCOPE}.{ZONE}",
    f"192-168-1-1.{SCOPE.upper()}.{ZONE}",
    f"nope.{SCOPE}.{ZONE}",
    f"_acme-challenge.{SCOPE}.{ZONE}",
    f"{SCOPE}.{ZONE}",
    ZONE,
    f"ns1.{ZONE}",
    "example.com",
    f"a.b.c.{SCOPE}.{ZONE}",
]
_TYPES = ["A", "AAAA", "TXT", "SOA", "NS", "CAA", "MX", "ANY", "AXFR", "HTTPS", "NULL"]


@st.composite
def dns_queries(draw: st.DrawFn) -> bytes:
    """A well-formed query: a name the zone knows or not, any type, with or without EDNS."""
    query = dns.message.make_query(
        draw(st.sampled_from(_NAMES)), draw(st.sampled_from(_TYPES)), id=draw(st.integers(0, 65535))
    )
    if draw(st.booleans()):
        options = draw(
            st.lists(
                st.one_of(
                    st.builds(
                        lambda b: dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b),
                        st.binary(min_size=8, max_size=40),
                    ),
                    st.builds(
                        lambda code, b: dns.edns.GenericOption(code, b),
                        st.integers(1, 65535),
                        st.binary(max_size=20),
                    ),
                ),
                max_size=3,
            )
        )
        query.use_edns(
            draw(st.sampled_from([0, 0, 0, 1])),
            payload=draw(st.sampled_from([0, 512, 1232, 4096, 65535])),
            options=options,
        )
    query.flags = draw(st.sampled_from([query.flags, 0, 0x0100, 0x0110, 0x7800, 0x8000]))
    return query.to_wire()


def _cut(packet: bytes, draw: st.DrawFn) -> bytes:
    return packet[: draw(st.integers(0, max(0, len(packet) - 1)))]


def _counts(packet: bytes, draw: st.DrawFn) -> bytes:
    counts = [draw(st.sampled_from([0, 1, 2, 3, 255, 65535])) for _ in range(4)]
    return packet[:4] + struct.pack("!HHHH", *counts) + packet[12:]


def _pointer(packet: bytes, draw: st.DrawFn) -> bytes:
    """A compression pointer in place of a label: to itself (a loop), back, or past the end."""
    if len(packet) < 14:
        return packet
    at = draw(st.integers(12, len(packet) - 2))
    target = draw(st.sampled_from([at, 12, len(packet) + 10, 0x3FFF, at - 1]))
    return packet[:at] + struct.pack("!H", 0xC000 | (target & 0x3FFF)) + packet[at + 2 :]


def _label_length(packet: bytes, draw: st.DrawFn) -> bytes:
    """The first label's length byte lies: too long for the packet, over 63, reserved bits."""
    if len(packet) < 13:
        return packet
    return (
        packet[:12]
        + bytes([draw(st.sampled_from([64, 0x40, 0x80, 0xBF, 200, 63, 0]))])
        + (packet[13:])
    )


def _trailing(packet: bytes, draw: st.DrawFn) -> bytes:
    return packet + draw(st.binary(min_size=1, max_size=40))


def _opt_length(packet: bytes, draw: st.DrawFn) -> bytes:
    """The OPT record's RDLENGTH lies (a query's OPT follows its one question)."""
    at = _question_end(packet)
    if at is None or packet[10:12] == b"\x00\x00" or len(packet) < at + 11:
        return packet
    at += 9  # the OPT's root name, TYPE, CLASS (payload) and TTL (extended rcode, flags)
    length = draw(st.sampled_from([0, 1, 4, 200, 65535]))
    return packet[:at] + struct.pack("!H", length) + packet[at + 2 :]


def _question_end(packet: bytes) -> int | None:
    at = 12
    while at < len(packet) and packet[at] and packet[at] < 64:
        at += 1 + packet[at]
    return at + 5 if at < len(packet) and not packet[at] else None


def _flip(packet: bytes, draw: st.DrawFn) -> bytes:
    if not packet:
        return packet
    at = draw(st.integers(0, len(packet) - 1))
    return packet[:at] + bytes([packet[at] ^ (1 << draw(st.integers(0, 7)))]) + packet[at + 1 :]


_MUTATIONS = [_cut, _counts, _pointer, _label_length, _trailing, _opt_length, _flip]


@st.composite
def dns_packets(draw: st.DrawFn) -> bytes:
    """A valid query, unchanged or with one to three structural mutations."""
    packet = draw(dns_queries())
    for mutation in draw(st.lists(st.sampled_from(_MUTATIONS), max_size=3)):
        packet = mutation(packet, draw)
    return packet
