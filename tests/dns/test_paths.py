"""The hand-made fast path answers exactly what the dnspython slow path answers.

In-process: for generated questions the fast path takes, both replies are parsed by dnspython
and compared field by field, the question's bytes (letter case) included.
"""

from __future__ import annotations

import ipaddress
import struct

import dns.message
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanlock import names
from lanlock.dns.answer import Responder
from lanlock.dns.fastpath import FastPath
from lanlock.dns.zone import NameServer, Zone, ZoneSettings

ZONE = "iot.test"
BASE32 = "abcdefghijklmnopqrstuvwxyz234567ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class NoChallenges:
    def values(self, name: str) -> list[str] | None:
        return []


ZONES = [Zone(ZoneSettings(zone=ZONE)), Zone(ZoneSettings(zone=ZONE, allow_public=True))]


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def query_wire(
    qid: int, flags: int, labels: list[bytes], rdtype: int, edns: tuple[int, int, bytes] | None
) -> bytes:
    additional = b""
    if edns is not None:
        payload, do, options = edns
        additional = b"\x00" + struct.pack("!HHBBHH", 41, payload, 0, 0, do, len(options))
        additional += options
    header = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    return header + wire_name(*labels, b"iot", b"test") + struct.pack("!HH", rdtype, 1) + additional


def mixed_case(text: str, data: st.DataObject) -> bytes:
    return bytes(
        ord(c.upper()) if c.isascii() and c.isalpha() and data.draw(st.booleans()) else ord(c)
        for c in text
    )


ADDRESS_LABELS = st.ip_addresses().map(names.address_to_label)
# No option, cookies of every length (valid ones are 8 and 16-40 bytes), and other options.
EDNS_OPTIONS = st.one_of(
    st.just(b""),
    st.binary(min_size=0, max_size=48).map(lambda v: struct.pack("!HH", 10, len(v)) + v),
    st.tuples(st.sampled_from([3, 8, 12, 15, 65001]), st.binary(max_size=12)).map(
        lambda o: struct.pack("!HH", o[0], len(o[1])) + o[1]
    ),
    st.binary(min_size=1, max_size=12),  # not even options
)
OTHER_LABELS = st.one_of(
    st.text("abcdef0123456789-", min_size=1, max_size=63),
    st.binary(min_size=1, max_size=63).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["_acme-challenge", "www", "0--", "10-0-0-1-", "-10-0-0-1"]),
)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    zone=st.sampled_from(ZONES),
    label=st.one_of(ADDRESS_LABELS, OTHER_LABELS),
    scope=st.one_of(st.text(BASE32, min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
    rdtype=st.sampled_from([dns.rdatatype.A, dns.rdatatype.AAAA]),
    qid=st.integers(0, 0xFFFF),
    flags=st.sampled_from([0x0000, 0x0100, 0x0110, 0x0120, 0x0130, 0x0300]),  # RD, AD, CD, TC
    edns=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 0xFFFF), st.sampled_from([0, 0x8000]), EDNS_OPTIONS),
    ),
)
def test_the_fast_path_answers_as_the_slow_path_does(
    data: st.DataObject,
    zone: Zone,
    label: str,
    scope: str | bytes,
    rdtype: int,
    qid: int,
    flags: int,
    edns: tuple[int, int, bytes] | None,
) -> None:
    scope_bytes = mixed_case(scope, data) if isinstance(scope, str) else scope
    labels = [mixed_case(label, data), scope_bytes]
    wire = query_wire(qid, flags, labels, rdtype, edns)
    fast = FastPath(zone).answer(wire)
    if isinstance(scope, str) and label in ADDRESS_EXAMPLES:
        assert fast is not None  # the common question must not fall to the slow path
    if fast is None:
        return
    slow = Responder(zone, NoChallenges()).respond(wire, tcp=False)
    assert slow is not None
    assert_same_reply(dns.message.from_wire(fast), dns.message.from_wire(slow))


ADDRESS_EXAMPLES = {"10-0-0-7", "fe80--1", "8-8-8-8", "192-0-2-1"}


def assert_same_reply(fast: dns.message.Message, slow: dns.message.Message) -> None:
    assert fast.id == slow.id
    assert fast.flags == slow.flags
    assert fast.rcode() == slow.rcode()
    assert (fast.edns, fast.payload, fast.ednsflags) == (slow.edns, slow.payload, slow.ednsflags)
    for section in ("question", "answer", "authority", "additional"):
        fast_rrsets, slow_rrsets = getattr(fast, section), getattr(slow, section)
        assert [r.name.labels for r in fast_rrsets] == [r.name.labels for r in slow_rrsets]
        assert [(r.rdtype, r.ttl, sorted(map(str, r))) for r in fast_rrsets] == [
            (r.rdtype, r.ttl, sorted(map(str, r))) for r in slow_rrsets
        ]


@pytest.mark.parametrize("label", sorted(ADDRESS_EXAMPLES))
def test_common_questions_take_the_fast_path(label: str) -> None:
    wire = query_wire(1, 0x0100, [label.encode(), b"abcdefghijklmnop"], dns.rdatatype.A, None)
    assert FastPath(ZONES[0]).answer(wire) is not None


def test_a_configured_name_shaped_like_an_address_name_is_left_to_the_slow_path() -> None:
    server = NameServer(f"10-0-0-1.abcdefghijklmnop.{ZONE}", (ipaddress.ip_address("192.0.2.1"),))
    zone = Zone(ZoneSettings(zone=ZONE, nameservers=(server,)))
    wire = query_wire(1, 0, [b"10-0-0-1", b"abcdefghijklmnop"], dns.rdatatype.A, None)
    assert FastPath(zone).answer(wire) is None
    reply = dns.message.from_wire(Responder(zone, NoChallenges()).respond(wire, tcp=False) or b"")
    assert [r.to_text() for r in reply.answer[0]] == ["192.0.2.1"]


def test_a_repeated_question_is_answered_from_the_cache_with_its_own_id() -> None:
    fast = FastPath(ZONES[0])
    first = query_wire(1, 0, [b"10-0-0-7", b"abcdefghijklmnop"], dns.rdatatype.A, None)
    second = struct.pack("!H", 2) + first[2:]
    assert fast.answer(first)[:2] == b"\x00\x01"  # type: ignore[index]
    reply = fast.answer(second)
    assert reply is not None and reply[:2] == b"\x00\x02" and reply[2:] == fast.answer(first)[2:]  # type: ignore[index]


@pytest.mark.parametrize(
    ("options", "fast"),
    [
        (b"", True),
        (struct.pack("!HH", 10, 8) + b"c" * 8, True),  # a client cookie, as BIND resolvers send
        (struct.pack("!HH", 10, 24) + b"c" * 24, True),  # client and server cookie
        (struct.pack("!HH", 10, 5) + b"c" * 5, False),  # a malformed cookie: FORMERR, slowly
        (struct.pack("!HH", 12, 4) + bytes(4), False),  # padding changes the reply's size
        (struct.pack("!HH", 8, 4) + bytes(4), False),  # client subnet
    ],
)
def test_edns_options_other_than_a_cookie_are_left_to_the_slow_path(
    options: bytes, fast: bool
) -> None:
    edns = (1232, 0, options)
    wire = query_wire(1, 0, [b"10-0-0-7", b"abcdefghijklmnop"], dns.rdatatype.A, edns)
    assert (FastPath(ZONES[0]).answer(wire) is not None) is fast


@settings(max_examples=100, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    label=ADDRESS_LABELS,
    rdtype=st.sampled_from([dns.rdatatype.A, dns.rdatatype.AAAA]),
    edns=st.one_of(st.none(), st.just((1232, 0, struct.pack("!HH", 10, 8) + b"c" * 8))),
)
def test_the_fast_path_declines_every_cut_of_a_question_it_takes(
    zone: Zone, label: str, rdtype: int, edns: tuple[int, int, bytes] | None
) -> None:
    """A cut query is the slow path's to refuse (FORMERR): the fast path neither answers nor
    raises on any prefix, the bare 12-byte header announcing one question included."""
    wire = query_wire(1, 0x0100, [label.encode(), b"abcdefghijklmnop"], rdtype, edns)
    fast = FastPath(zone)
    assert fast.answer(wire) is not None
    assert [cut for cut in range(len(wire)) if fast.answer(wire[:cut]) is not None] == []
