"""Every question the fast path leaves, answered with dnspython's object model.

Correctness first here: dnspython parses every section, EDNS and its options, and renders with
name compression and truncation. It costs about 100 µs a question, which is fine for the apex,
the challenge TXT records, EDNS options, unusual opcodes and garbage; the address questions that
make up nearly all of the traffic go through :mod:`lanlock.dns.fastpath` instead.

What comes from the store (the challenge values, the ACME accounts that the apex's CAA records
name) is read from a worker's snapshot: none taken lately is SERVFAIL, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rrset

from lanlock.dns import caa
from lanlock.dns.zone import Kind, Node, Zone, address_rdtype

# Advertised and used as the UDP answer limit: the DNS flag day 2020 size, which avoids IP
# fragmentation on practically every path.
EDNS_PAYLOAD = 1232
PLAIN_UDP_LIMIT = 512  # RFC 1035, for a query without EDNS
TCP_LIMIT = 65535
_NO_TRANSFER = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
_ADDRESS_RDATA = {dns.rdatatype.A: dns.rdtypes.IN.A.A, dns.rdatatype.AAAA: dns.rdtypes.IN.AAAA.AAAA}


class ChallengeValues(Protocol):
    def values(self, scope: str) -> list[str] | None: ...


class AccountUris(Protocol):
    def account_uris(self) -> tuple[str, ...] | None: ...


def error_reply(wire: bytes, rcode: int) -> bytes | None:
    """A bare header answering ``wire`` with ``rcode``, for a query that cannot be parsed.

    None when there is nobody to answer: fewer than 12 bytes, or a response (answering responses
    would let two servers bounce packets at each other forever).
    """
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    flags = 0x80 | (wire[2] & 0x79)  # QR, the query's opcode and RD
    return wire[:2] + bytes((flags, rcode)) + bytes(8)


class Responder:
    """Answers any query for the zone from a :class:`Zone`, the published challenges and the
    cloud's ACME accounts; without ``accounts`` (in-process uses: benchmarks, property tests) the
    CAA records name the issuers alone, as for a store without accounts."""

    def __init__(
        self, zone: Zone, challenges: ChallengeValues, accounts: AccountUris | None = None
    ) -> None:
        self.zone = zone
        self._challenges = challenges
        self._accounts = accounts
        self._negative_soa = dns.rrset.from_rdata_list(
            zone.origin,
            min(zone.settings.negative_ttl, zone.settings.apex_ttl),  # RFC 2308 §3
            list(zone.soa),
        )

    def respond(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The answer's bytes, or None to send nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.message.ShortHeader:
            return None
        except Exception:  # garbage raises many kinds of error; all of them mean FORMERR
            return error_reply(wire, dns.rcode.FORMERR)
        if query.flags & dns.flags.QR:
            return None
        response = self.response(query)
        return response.to_wire(max_size=_limit(query, tcp), prefer_truncation=True)

    def response(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
        response.flags |= query.flags & dns.flags.CD  # RFC 4035 §3.1.6
        if query.edns >= 0 and query.ednsflags & dns.flags.DO:
            response.ednsflags |= dns.flags.DO  # RFC 3225 §3
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)  # RFC 6891 §6.1.3: we speak EDNS version 0
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            self._answer(response, query.question[0])
        return response

    def _answer(self, response: dns.message.Message, question: dns.rrset.RRset) -> None:
        qname, rdtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(self.zone.origin):
            response.set_rcode(dns.rcode.REFUSED)  # not ours: never recurse, never forward
            return
        if rdtype in _NO_TRANSFER:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        labels = tuple(
            label.lower().decode("latin-1") for label in qname.relativize(self.zone.origin).labels
        )
        node = self.zone.node(labels)
        if node.kind is Kind.NONEXISTENT:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._negative_soa)
        elif node.kind is Kind.CHALLENGE and rdtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            self._challenge(response, qname, self.zone.challenge_scope(labels))
        elif not labels and rdtype == dns.rdatatype.CAA:
            self._caa(response, qname)  # it names the store's accounts: not a static record
        else:
            self._records(response, qname, rdtype, node)

    def _records(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        node: Node,
    ) -> None:
        records = node.records
        if node.address is not None:
            address_type = address_rdtype(node.address)
            rdata = _ADDRESS_RDATA[address_type](dns.rdataclass.IN, address_type, str(node.address))
            records = {address_type: dns.rdataset.from_rdata(self.zone.settings.address_ttl, rdata)}
        if rdtype == dns.rdatatype.ANY and records:
            rdtype = next(iter(records))  # RFC 8482: one RRset of the name, not all of them
        rdataset = records.get(rdtype)
        if rdataset is None:
            response.authority.append(self._negative_soa)  # NODATA (RFC 2308 §2.2)
            return
        response.answer.append(dns.rrset.from_rdata_list(qname, rdataset.ttl, list(rdataset)))
        if rdtype == dns.rdatatype.NS:
            for name, glue in self.zone.glue():
                response.additional.append(dns.rrset.from_rdata_list(name, glue.ttl, list(glue)))

    def _challenge(self, response: dns.message.Message, qname: dns.name.Name, scope: str) -> None:
        values = self._challenges.values(scope)
        rdatas = None if values is None else [_txt(value) for value in values]
        self._from_store(response, qname, self.zone.settings.challenge_ttl, rdatas)

    def _caa(self, response: dns.message.Message, qname: dns.name.Name) -> None:
        uris = () if self._accounts is None else self._accounts.account_uris()
        rdatas = None if uris is None else caa.records(self.zone.settings.caa_issuers, uris)
        self._from_store(response, qname, self.zone.settings.caa_ttl, rdatas)

    def _from_store(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        ttl: int,
        rdatas: Sequence[dns.rdata.Rdata] | None,
    ) -> None:
        """Records made from the store's snapshot; None: no snapshot lately."""
        if rdatas is None:
            response.set_rcode(dns.rcode.SERVFAIL)  # the store is out of reach: do not guess
        elif not rdatas:
            response.authority.append(self._negative_soa)
        else:
            response.answer.append(dns.rrset.from_rdata_list(qname, ttl, rdatas))


def _txt(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    data = value.encode()
    # One TXT string holds at most 255 bytes; longer values are split, as RFC 7208 §3.3 reads them.
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def _limit(query: dns.message.Message, tcp: bool) -> int:
    """The largest answer this client accepts over this transport (RFC 6891 §6.2.5)."""
    if tcp:
        return TCP_LIMIT
    if query.edns < 0:
        return PLAIN_UDP_LIMIT
    return min(max(query.payload, PLAIN_UDP_LIMIT), EDNS_PAYLOAD)
