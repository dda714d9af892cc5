"""The apex's CAA records bind the configured CAs to the cloud's ACME accounts in the store
(RFC 8657 ``accounturi`` and ``validationmethods=dns-01``), so that no other account, even at the
same CA, can have a certificate issued under the zone (docs/design.md §7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from sqlalchemy import select

from lanlock.cloud.models import AcmeAccount, cloud_store
from tests.acme import ask_like_a_box, start_system
from tests.boxes import Customer, TestBox
from tests.dns.running import RunningDNS, running_dns, steady, store_accounts
from tests.dns.test_answers import negative
from tests.dns.test_challenges import LATE, STALE_AFTER, drop_database
from tests.servers import ZONE, fresh_store_url

ISSUERS = ("ca.example.org", "ca.example.net")
ISSUER_OPTIONS = [option for issuer in ISSUERS for option in ("--caa-issuer", issuer)]
ACCOUNT = "https://acme.ca.example.org/acme/acct/1234567"
OTHER_ACCOUNT = "https://acme-v02.api.ca.example.net/acme/acct/7654321"
TAGS = ("issue", "issuewild")
CAA_TTL = 60
FRESH_WITHIN = 5.0  # as for challenge values (test_challenges.py): a snapshot every 0.25 s
# Malformed account URIs, each with a mark of its own to find it in the log.
MALFORMED = {
    "semicolon": f"https://ca.example/acct/semicolon;accounturi={OTHER_ACCOUNT}",
    "space": "https://ca.example/acct/space validationmethods=http-01",
    "quote": 'https://ca.example/acct/quote"',
    "control": "https://ca.example/acct/control\x00",
    "non-ascii": "https://ca.example/acct/non-ascii-\u00e9",
    "plain-http": "http://ca.example/acct/plain-http",
    "not-a-url": "acct/not-a-url",
    "too-long": "https://ca.example/acct/too-long/" + "a" * 300,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    tmp = tmp_path_factory.mktemp("dns-caa")
    with running_dns(f"sqlite:///{tmp / 'store.db'}", tmp, *ISSUER_OPTIONS) as running:
        yield running


def bound(*account_uris: str, issuers: tuple[str, ...] = ISSUERS) -> set[str]:
    return {
        f'0 {tag} "{issuer}; accounturi={uri}; validationmethods=dns-01"'
        for issuer in issuers
        for uri in account_uris
        for tag in TAGS
    }


def unbound(issuers: tuple[str, ...] = ISSUERS) -> set[str]:
    return {f'0 {tag} "{issuer}"' for issuer in issuers for tag in TAGS}


def caa_records(server: RunningDNS, transport: str = "udp") -> set[str]:
    """The apex's CAA records as a client gets them (with EDNS: eight records pass 512 bytes)."""
    response = server.ask(ZONE, "CAA", transport, use_edns=0)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.TC
    return named(response)


def named(response: dns.message.Message) -> set[str]:
    return {rdata.to_text() for rrset in response.answer for rdata in rrset}


def settles(server: RunningDNS, expected: set[str], transport: str = "udp") -> None:
    steady(lambda: caa_records(server, transport), expected, FRESH_WITHIN, f"{ZONE} CAA")


def from_no_account(server: RunningDNS) -> None:
    """Start from a store without accounts, so that the answer a test then waits for cannot be
    one a former test left (the tests share the server)."""
    store_accounts(server.store_url)
    settles(server, unbound())


def test_caa_binds_the_issuers_to_the_stored_account_and_dns_01(
    server: RunningDNS, transport: str
) -> None:
    from_no_account(server)
    store_accounts(server.store_url, ACCOUNT)
    settles(server, bound(ACCOUNT), transport)
    response = server.ask(ZONE, "CAA", transport)
    assert [rrset.ttl for rrset in response.answer] == [CAA_TTL]


def test_every_issuer_is_bound_to_every_account_of_the_store(server: RunningDNS) -> None:
    """One account per ACME directory the cloud used: each is ours, so each is allowed."""
    store_accounts(server.store_url, ACCOUNT, OTHER_ACCOUNT, ACCOUNT)
    settles(server, bound(ACCOUNT, OTHER_ACCOUNT), "tcp")
    assert len(caa_records(server, "udp")) == 8


def test_a_changed_account_is_answered_within_seconds_and_the_serial_stays(
    server: RunningDNS,
) -> None:
    """The account is read with the challenge values, not with the settings: a new one shows
    within seconds, and the SOA serial (a checksum of the settings, the same on every replica)
    does not move."""
    store_accounts(server.store_url, ACCOUNT)
    settles(server, bound(ACCOUNT))
    serial = server.ask(ZONE, "SOA").answer[0][0].serial
    store = cloud_store(server.store_url, pool_size=1)
    try:
        with store.transaction() as session:
            account = session.scalars(select(AcmeAccount)).one()
            account.account_uri = OTHER_ACCOUNT
    finally:
        store.dispose()
    settles(server, bound(OTHER_ACCOUNT))
    assert server.ask(ZONE, "SOA").answer[0][0].serial == serial


@pytest.mark.parametrize("accounts", [(), (None,)], ids=["no account", "not registered yet"])
def test_without_an_account_caa_names_the_issuers_alone(
    server: RunningDNS, accounts: tuple[None, ...]
) -> None:
    """The embedded CA never registers one, and the cloud registers its account at its first
    ACME order: until then the CAs are named alone, as before accounts were bound."""
    store_accounts(server.store_url, ACCOUNT)
    settles(server, bound(ACCOUNT))
    store_accounts(server.store_url, *accounts)
    settles(server, unbound())


@pytest.mark.parametrize("mark", sorted(MALFORMED))
def test_a_malformed_account_uri_is_not_served_and_is_logged(server: RunningDNS, mark: str) -> None:
    from_no_account(server)  # a snapshot with the malformed URI, which logs it, is then awaited
    store_accounts(server.store_url, MALFORMED[mark], ACCOUNT)
    settles(server, bound(ACCOUNT))
    assert mark in server.log_text()


def test_malformed_account_uris_alone_leave_the_issuers_named_alone(server: RunningDNS) -> None:
    store_accounts(server.store_url, ACCOUNT)
    settles(server, bound(ACCOUNT))
    store_accounts(server.store_url, *MALFORMED.values())
    settles(server, unbound())


@pytest.mark.parametrize(
    ("name", "rcode"),
    [
        ("abcdefghijklmnop.iot.test", dns.rcode.NOERROR),  # a scope: CAA climbs to the apex
        ("_dmarc.iot.test", dns.rcode.NOERROR),
        ("ns1.iot.test", dns.rcode.NOERROR),
        ("www.iot.test", dns.rcode.NXDOMAIN),
    ],
)
def test_caa_is_only_at_the_apex(
    server: RunningDNS, transport: str, name: str, rcode: dns.rcode.Rcode
) -> None:
    store_accounts(server.store_url, ACCOUNT)
    settles(server, bound(ACCOUNT))
    negative(server.ask(name, "CAA", transport), rcode)
    any_answer = server.ask(ZONE, "ANY", transport).answer
    assert [rrset.rdtype for rrset in any_answer] == [dns.rdatatype.SOA]  # RFC 8482: one RRset


def test_a_lost_store_turns_caa_to_servfail_never_to_the_issuers_alone(tmp_path: Path) -> None:
    """PostgreSQL goes away (its database dropped): the account read before is named for a few
    seconds, then CAA answers SERVFAIL, as TXT does (test_challenges.py), rather than the wider
    records of a store without accounts. One worker: one snapshot, one clock."""
    with (
        fresh_store_url("postgres", tmp_path) as url,
        running_dns(url, tmp_path, *ISSUER_OPTIONS, workers=1) as server,
    ):
        store_accounts(url, ACCOUNT)
        settles(server, bound(ACCOUNT))
        drop_database(url)
        lost_at = time.monotonic()
        response = server.ask(ZONE, "CAA", timeout=1.5)
        while response.rcode() != dns.rcode.SERVFAIL:
            assert named(response) == bound(ACCOUNT)
            assert time.monotonic() - lost_at < STALE_AFTER + LATE, "CAA still answered"
            time.sleep(0.1)
            response = server.ask(ZONE, "CAA", timeout=1.5)
        assert time.monotonic() - lost_at > STALE_AFTER - 2  # the account was named meanwhile


def test_the_account_the_cloud_registers_at_pebble_is_in_caa_by_its_first_order(
    tmp_path: Path,
) -> None:
    """The real cloud registers its account at its first ACME order and writes the URI before it
    publishes the order's challenge values; the DNS reads both in one snapshot, accounts second,
    so the CAA names the account by the time the CA can look (the challenges were visible)."""
    with fresh_store_url("sqlite", tmp_path) as url:
        system = start_system(tmp_path, url)
        try:
            assert caa_records(system.dns) == unbound(("letsencrypt.org",))  # nothing ordered yet
            store = cloud_store(url, pool_size=1)
            try:
                customer = Customer.create(store)
                assert ask_like_a_box(TestBox(system.cloud.url), customer).result
                with store.transaction() as session:
                    uri = session.scalars(select(AcmeAccount.account_uri)).one()
            finally:
                store.dispose()
            pebble_host = system.pebble.directory.removesuffix("/dir")
            assert uri is not None and uri.startswith(pebble_host + "/")
            # One worker, whose snapshot showed the challenges: no waiting.
            assert caa_records(system.dns) == bound(uri, issuers=("letsencrypt.org",))
        finally:
            system.stop()
