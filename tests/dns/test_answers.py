"""What a client sees for every kind of name of the zone, over UDP and over TCP
(docs/design.md §7)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.dns.conftest import CAA_ISSUER, NS1, NS1_V4, NS1_V6, NS2, SITE_V4, SITE_V6
from tests.dns.running import RunningDNS

ZONE = "iot.test"
NEGATIVE_TTL = 30


def authoritative(response: dns.message.Message, rcode: int = dns.rcode.NOERROR) -> None:
    """Every in-zone answer: the rcode expected, AA set, RA never (the server never recurses)."""
    assert response.rcode() == rcode, dns.rcode.to_text(response.rcode())
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA


def only_answer(response: dns.message.Message) -> dns.rrset.RRset:
    authoritative(response)
    assert len(response.answer) == 1, response.answer
    return response.answer[0]


def texts(rrset: dns.rrset.RRset) -> set[str]:
    return {rdata.to_text() for rdata in rrset}


def negative(response: dns.message.Message, rcode: int) -> None:
    """NODATA or NXDOMAIN as RFC 2308 wants them: no answer, the zone's SOA in AUTHORITY."""
    authoritative(response, rcode)
    assert response.answer == []
    assert len(response.authority) == 1
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name == dns.name.from_text(ZONE)
    assert soa.ttl == NEGATIVE_TTL
    assert soa[0].minimum == NEGATIVE_TTL


def test_an_ipv4_label_answers_its_address(
    dns_server: RunningDNS, transport: str, scope: str
) -> None:
    answer = only_answer(dns_server.ask(f"192-168-1-42.{scope}.{ZONE}", "A", transport))
    assert texts(answer) == {"192.168.1.42"}
    assert answer.name == dns.name.from_text(f"192-168-1-42.{scope}.{ZONE}")
    assert answer.ttl == 3600


@pytest.mark.parametrize(
    ("label", "address"),
    [
        ("fe80--1", "fe80::1"),
        ("0--1", "::1"),
        ("fd12-3456-789a-1--7", "fd12:3456:789a:1::7"),
        ("fe80--a00-27ff-fe4e-66a1", "fe80::a00:27ff:fe4e:66a1"),
    ],
)
def test_an_ipv6_label_answers_its_address(
    dns_server: RunningDNS, transport: str, scope: str, label: str, address: str
) -> None:
    answer = only_answer(dns_server.ask(f"{label}.{scope}.{ZONE}", "AAAA", transport))
    assert texts(answer) == {address}


@pytest.mark.parametrize(
    ("label", "rdtype"),
    [("10-0-0-7", "AAAA"), ("fe80--1", "A"), ("10-0-0-7", "TXT"), ("10-0-0-7", "MX")],
)
def test_an_address_name_without_the_type_asked_is_nodata(
    dns_server: RunningDNS, transport: str, scope: str, label: str, rdtype: str
) -> None:
    negative(dns_server.ask(f"{label}.{scope}.{ZONE}", rdtype, transport), dns.rcode.NOERROR)


@pytest.mark.parametrize(
    "name",
    [
        "{scope}.iot.test",  # a scope: the parent of address names
        "_acme-challenge.{scope}.iot.test",  # may hold TXT values; none published
    ],
)
@pytest.mark.parametrize("rdtype", ["A", "TXT"])
def test_empty_non_terminals_are_nodata(
    dns_server: RunningDNS, transport: str, scope: str, name: str, rdtype: str
) -> None:
    negative(dns_server.ask(name.format(scope=scope), rdtype, transport), dns.rcode.NOERROR)


@pytest.mark.parametrize(
    "name",
    [
        "www.iot.test",
        "_acme-challenge.iot.test",
        "not-a-scope.iot.test",
        "10-0-0-7.not-a-scope.iot.test",
        "10-0-0-7.abcdefghijklmno1.iot.test",  # 16 characters, but '1' is not base32
        "x.10-0-0-7.{scope}.iot.test",
        "a.b.{scope}.iot.test",
        "010-0-0-7.{scope}.iot.test",  # not canonical: a leading zero
        "10-0-0-07.{scope}.iot.test",
        "10-0-0-256.{scope}.iot.test",
        "10-0-0.{scope}.iot.test",
        "fe80-0-0-0-0-0-0-1.{scope}.iot.test",  # not canonical: RFC 5952 says fe80--1
        "FE80--1.{scope}.iot.test.extra.iot.test",
        "www.{scope}.iot.test",
    ],
)
def test_names_that_cannot_exist_are_nxdomain(
    dns_server: RunningDNS, transport: str, scope: str, name: str
) -> None:
    negative(dns_server.ask(name.format(scope=scope), "A", transport), dns.rcode.NXDOMAIN)


@pytest.mark.parametrize(
    ("label", "rdtype"),
    [
        ("8-8-8-8", "A"),  # public
        ("2606-4700-4700--1111", "AAAA"),  # public
        ("192-0-2-1", "A"),  # documentation
        ("224-0-0-1", "A"),  # multicast
        ("0-0-0-0", "A"),
        ("0--ffff-a00-7", "AAAA"),  # IPv4-mapped: a second name for 10.0.0.7
    ],
)
def test_addresses_outside_the_allowed_ranges_are_nxdomain(
    dns_server: RunningDNS, transport: str, scope: str, label: str, rdtype: str
) -> None:
    negative(dns_server.ask(f"{label}.{scope}.{ZONE}", rdtype, transport), dns.rcode.NXDOMAIN)


def test_the_apex_soa(dns_server: RunningDNS, transport: str) -> None:
    soa = only_answer(dns_server.ask(ZONE, "SOA", transport))
    assert len(soa) == 1
    record = soa[0]
    assert record.mname == dns.name.from_text(NS1)
    assert record.rname == dns.name.from_text(f"hostmaster.{ZONE}")
    assert record.serial > 0
    assert record.refresh > record.retry > 0
    assert record.expire > record.refresh
    assert record.minimum == NEGATIVE_TTL


def test_the_apex_ns_come_with_glue_for_the_in_zone_name(
    dns_server: RunningDNS, transport: str
) -> None:
    response = dns_server.ask(ZONE, "NS", transport)
    assert texts(only_answer(response)) == {f"{NS1}.", f"{NS2}."}
    glue = {
        (rrset.name.to_text(), rdata.to_text()) for rrset in response.additional for rdata in rrset
    }
    assert glue == {(f"{NS1}.", NS1_V4), (f"{NS1}.", NS1_V6)}


@pytest.mark.parametrize(("rdtype", "address"), [("A", NS1_V4), ("AAAA", NS1_V6)])
def test_an_in_zone_name_server_answers_its_addresses(
    dns_server: RunningDNS, transport: str, rdtype: str, address: str
) -> None:
    assert texts(only_answer(dns_server.ask(NS1, rdtype, transport))) == {address}


def test_caa_lets_only_the_configured_ca_issue(dns_server: RunningDNS, transport: str) -> None:
    """The store holds no ACME account: the CA is named alone (test_caa.py binds accounts)."""
    caa = only_answer(dns_server.ask(ZONE, "CAA", transport))
    assert texts(caa) == {f'0 issue "{CAA_ISSUER}"', f'0 issuewild "{CAA_ISSUER}"'}


@pytest.mark.parametrize(("rdtype", "address"), [("A", SITE_V4), ("AAAA", SITE_V6)])
def test_the_apex_answers_the_site_addresses(
    dns_server: RunningDNS, transport: str, rdtype: str, address: str
) -> None:
    assert texts(only_answer(dns_server.ask(ZONE, rdtype, transport))) == {address}


@pytest.mark.parametrize(
    ("name", "rdtype", "record"),
    [
        (ZONE, "MX", "0 ."),  # null MX, RFC 7505
        (ZONE, "TXT", '"v=spf1 -all"'),
        (f"_dmarc.{ZONE}", "TXT", '"v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s"'),
    ],
)
def test_the_zone_sends_and_receives_no_mail(
    dns_server: RunningDNS, transport: str, name: str, rdtype: str, record: str
) -> None:
    assert texts(only_answer(dns_server.ask(name, rdtype, transport))) == {record}


@pytest.mark.parametrize("name", ["example.com", "test", ".", "iot.test.example.com", "xiot.test"])
def test_names_outside_the_zone_are_refused(
    dns_server: RunningDNS, transport: str, name: str
) -> None:
    response = dns_server.ask(name, "A", transport)
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & (dns.flags.AA | dns.flags.RA)
    assert response.answer == []


def test_zone_transfers_are_refused(dns_server: RunningDNS) -> None:
    response = dns_server.ask(ZONE, "AXFR", "tcp")
    assert response.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(
    ("name", "rdtype", "record"),
    [
        (ZONE, dns.rdatatype.SOA, None),
        ("10-0-0-7.{scope}.iot.test", dns.rdatatype.A, "10.0.0.7"),
        ("fe80--1.{scope}.iot.test", dns.rdatatype.AAAA, "fe80::1"),
    ],
)
def test_any_gets_one_rrset(
    dns_server: RunningDNS, transport: str, scope: str, name: str, rdtype: int, record: str | None
) -> None:
    """RFC 8482: ANY is answered with one RRset of the name, never all of them."""
    answer = only_answer(dns_server.ask(name.format(scope=scope), "ANY", transport))
    assert answer.rdtype == rdtype
    assert record is None or texts(answer) == {record}


def test_any_at_an_empty_name_is_nodata(dns_server: RunningDNS, transport: str, scope: str) -> None:
    negative(dns_server.ask(f"{scope}.{ZONE}", "ANY", transport), dns.rcode.NOERROR)


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("10-0-0-7.{scope}.iot.test", "A"),  # the fast path
        ("10-0-0-7.{scope}.iot.test", "AAAA"),
        ("nothing.{scope}.iot.test", "A"),
        ("iot.test", "SOA"),  # the slow path
        ("_dmarc.iot.test", "TXT"),
    ],
)
def test_the_question_comes_back_in_the_case_it_was_asked(
    dns_server: RunningDNS, transport: str, scope: str, name: str, rdtype: str
) -> None:
    """DNS 0x20: resolvers randomise the letter case and check it in the answer."""
    asked = "".join(c.upper() if i % 2 else c for i, c in enumerate(name.format(scope=scope)))
    response = dns_server.ask(asked, rdtype, transport)
    assert response.question[0].name.to_text() == asked + "."
    for rrset in response.answer:
        assert rrset.name.to_text() == asked + "."
