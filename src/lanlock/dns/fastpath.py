"""The common questions, read and written by hand: A and AAAA for ``<label>.<scope>.<zone>``.

Written by hand because that is where the time goes: nearly every query the server sees is one
of these, and dnspython's object model (parse every section into objects, build a response
message, render it with a compression table) costs about 180 µs a question on the benchmark
machine, against 26 µs here for a question not seen before (most of it ``lanlock.names`` reading
and checking the label) and 0.35 µs for a repeated one (``bench/dns_paths.py``; BENCHMARKS.md).

Everything else goes to :mod:`lanlock.dns.answer`: this module returns None for any query it does
not fully understand, and never decides on its own what a name is — it asks ``Zone.node``
(:mod:`lanlock.dns.zone`), as the slow path does, so the two cannot disagree
(``tests/dns/test_paths.py`` checks that they do not).

Taken here: one question (QUERY opcode, class IN, type A or AAAA) for a name of exactly two labels
under the zone, the second 16 bytes long (a scope's length), nothing in the answer and authority
sections, and at most an OPT record with no option but a cookie. The reply depends on nothing but
those bytes (address answers are stateless), so whole replies are kept, keyed by the query minus
its ID: a repeated question costs one dict lookup.
"""

from __future__ import annotations

import struct

import dns.rdataclass
import dns.rdatatype

from lanlock.dns.answer import EDNS_PAYLOAD, PLAIN_UDP_LIMIT
from lanlock.dns.zone import Kind, Zone, address_rdtype
from lanlock.names import SCOPE_LENGTH

CACHE_LIMIT = 65536  # replies kept; about 10 MB at most, emptied when full
_ONE_QUESTION_ONLY = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_A_IN = struct.pack("!HH", dns.rdatatype.A, dns.rdataclass.IN)
_AAAA_IN = struct.pack("!HH", dns.rdatatype.AAAA, dns.rdataclass.IN)
_QUESTION_TYPES = {_A_IN: dns.rdatatype.A, _AAAA_IN: dns.rdatatype.AAAA}
_OPT_HEAD = b"\x00\x00\x29"  # root owner name, type OPT
_DO = 0x80  # the DO bit, in the first byte of the OPT flags
_COOKIE = b"\x00\x0a"  # EDNS option code 10
_NOERROR, _NXDOMAIN = 0, 3
_MAX_NAME_WIRE = 255  # RFC 1035 §2.3.4


class FastPath:
    """Replies to the common questions, or None for anything else."""

    def __init__(self, zone: Zone) -> None:
        self._zone = zone
        self._zone_wire = zone.origin.to_wire()  # lower case, as normalize_zone made it
        settings = zone.settings
        soa = zone.soa[0].to_wire()  # uncompressed; compression is optional (RFC 1035 §4.1.4)
        negative_ttl = min(settings.negative_ttl, settings.apex_ttl)
        self._soa_after_owner = (
            struct.pack("!HHIH", dns.rdatatype.SOA, dns.rdataclass.IN, negative_ttl, len(soa)) + soa
        )
        self._address_ttl = struct.pack("!I", settings.address_ttl)
        # The header and the shortest question taken (a one-byte label, the scope, the zone,
        # QTYPE and QCLASS): anything shorter is declined before a byte of it is read.
        self._shortest_query = 12 + 2 + 1 + SCOPE_LENGTH + len(self._zone_wire) + 4
        self._cache: dict[bytes, bytes] = {}

    def answer(self, query: bytes) -> bytes | None:
        """The reply to ``query`` if it is a common question, else None."""
        reply_after_id = self._cache.get(query[2:])
        if reply_after_id is not None:
            return query[:2] + reply_after_id
        reply = self._build(query)
        if reply is not None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[query[2:]] = reply[2:]
        return reply

    def _build(self, query: bytes) -> bytes | None:
        if (
            len(query) < self._shortest_query
            or query[2] & 0xF8
            or query[4:10] != _ONE_QUESTION_ONLY
        ):
            return None  # too short, a response, another opcode, or not exactly one question
        label_length = query[12]
        scope_at = 13 + label_length
        zone_at = scope_at + 1 + SCOPE_LENGTH
        name_end = zone_at + len(self._zone_wire)
        if (
            not 0 < label_length < 64
            or query[scope_at : scope_at + 1] != b"\x10"  # SCOPE_LENGTH as a length byte
            or query[zone_at:name_end].lower() != self._zone_wire
            or name_end - 12 > _MAX_NAME_WIRE
        ):
            return None
        rdtype = _QUESTION_TYPES.get(query[name_end : name_end + 4])
        opt = self._reply_opt(query[name_end + 4 :], query[10:12])
        if rdtype is None or opt is None:
            return None
        # bytes.lower() then latin-1, exactly as the slow path turns dnspython's labels to text.
        labels = (
            query[13:scope_at].lower().decode("latin-1"),
            query[scope_at + 1 : zone_at].lower().decode("latin-1"),
        )
        sections = self._sections(labels, rdtype, zone_at)
        if sections is None:
            return None
        rcode, answer, authority = sections
        header = query[:2] + bytes((0x84 | (query[2] & 0x01), (query[3] & 0x10) | rcode))
        counts = struct.pack("!HHHH", 1, bool(answer), bool(authority), bool(opt))
        reply = header + counts + query[12 : name_end + 4] + answer + authority + opt
        return reply if len(reply) <= PLAIN_UDP_LIMIT else None

    def _sections(
        self, labels: tuple[str, str], rdtype: int, zone_at: int
    ) -> tuple[int, bytes, bytes] | None:
        """(rcode, answer, authority) in wire form, or None when the slow path must answer."""
        node = self._zone.node(labels)
        if node.kind is Kind.STATIC:
            return None  # a configured name (say, a name server) shaped like an address name
        # The SOA's owner is the zone, already written at ``zone_at`` in the question.
        soa = struct.pack("!H", 0xC000 | zone_at) + self._soa_after_owner
        if node.kind is Kind.NONEXISTENT:
            return _NXDOMAIN, b"", soa
        if node.address is None or address_rdtype(node.address) != rdtype:
            return _NOERROR, b"", soa  # NODATA: the name exists, not with this type
        packed = node.address.packed
        # The owner is the question's name: a pointer to offset 12, its case as asked.
        answer = b"\xc0\x0c" + struct.pack("!HH", rdtype, dns.rdataclass.IN)
        return _NOERROR, answer + self._address_ttl + struct.pack("!H", len(packed)) + packed, b""

    @staticmethod
    def _reply_opt(additional: bytes, arcount: bytes) -> bytes | None:
        """The reply's OPT record (b"" for none), or None when the query's is not simple."""
        if arcount == b"\x00\x00":
            return b"" if not additional else None
        if (
            arcount != b"\x00\x01"
            or len(additional) < 11
            or additional[:3] != _OPT_HEAD
            or additional[6] != 0  # EDNS version 0; others get BADVERS from the slow path
            or int.from_bytes(additional[9:11], "big") != len(additional) - 11
            or not _ignorable(additional[11:])
        ):
            return None
        do = additional[7] & _DO  # RFC 3225: the DO bit is copied to the reply
        return _OPT_HEAD + struct.pack("!HBBBBH", EDNS_PAYLOAD, 0, 0, do, 0, 0)


def _ignorable(options: bytes) -> bool:
    """No options, or one well-formed DNS cookie (RFC 7873), which BIND resolvers always send.

    The server does not do cookies, and RFC 7873 §5.2 lets it answer as if there were none;
    other options (padding, client subnet …) change the reply or can be malformed, so the
    slow path reads them.
    """
    if not options:
        return True
    size = len(options) - 4
    return (
        options[:2] == _COOKIE
        and int.from_bytes(options[2:4], "big") == size
        and (size == 8 or 16 <= size <= 40)
    )
