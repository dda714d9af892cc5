"""Boundary: one customer's box cannot get a certificate, or a CA authorization, for another.

The attacker is an eligible customer's box. It signs its request with its own device key and its
own customer's credentials, and hides another customer's name in its CSR: in the subject's CN (a
public CA copies it into the SANs), in a SAN of any type, in another letter case or with a final
dot. The cloud must refuse it with ``invalid_csr`` before anything is ordered or published: the
other scope's authorization is never attempted at the CA and no TXT value for it ever appears in
the zone's DNS.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from lanlock import names, pki
from lanlock.cloud.models import cloud_store
from tests.acme import AcmeSystem, start_system
from tests.boxes import Customer, TestBox
from tests.servers import ZONE, fresh_store_url, running_cloud

Victim = tuple[Customer, TestBox, str]  # the other customer, its box, its scope


def csr_with(
    key: object,
    common_name: str | None,
    san: list[x509.GeneralName],
) -> str:
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return pki.csr_pem(builder.sign(key, hashes.SHA256()))  # type: ignore[arg-type]


def dns_names(values: list[str]) -> list[x509.GeneralName]:
    return [x509.DNSName(v) for v in values]


# Each way of smuggling the victim's scope (or anything else) next to the box's own two names.
SMUGGLED: dict[str, Callable[[list[str], str], tuple[str | None, list[x509.GeneralName]]]] = {
    "CN wildcard of another scope": lambda own, other: (
        f"*.{other}.{ZONE}",
        dns_names(own),
    ),
    "CN base of another scope": lambda own, other: (f"{other}.{ZONE}", dns_names(own)),
    "CN another scope in upper case": lambda own, other: (
        f"*.{other}.{ZONE}".upper(),
        dns_names(own),
    ),
    "CN another scope with a final dot": lambda own, other: (
        f"*.{other}.{ZONE}.",
        dns_names(own),
    ),
    "SAN DNS another scope": lambda own, other: (
        own[0],
        dns_names([*own, f"*.{other}.{ZONE}"]),
    ),
    "SAN DNS another scope in upper case": lambda own, other: (
        own[0],
        dns_names([*own, f"{other}.{ZONE}".upper()]),
    ),
    "SAN DNS another scope with a final dot": lambda own, other: (
        own[0],
        dns_names([*own, f"{other}.{ZONE}."]),
    ),
    "SAN IP": lambda own, other: (
        own[0],
        [*dns_names(own), x509.IPAddress(ipaddress.ip_address("10.0.0.7"))],
    ),
    "SAN e-mail": lambda own, other: (
        own[0],
        [*dns_names(own), x509.RFC822Name(f"admin@{other}.{ZONE}")],
    ),
    "SAN URI": lambda own, other: (
        own[0],
        [*dns_names(own), x509.UniformResourceIdentifier(f"https://{other}.{ZONE}/")],
    ),
    "SAN DNS outside the zone": lambda own, other: (
        own[0],
        dns_names([*own, "www.example.com"]),
    ),
}


@dataclass
class TxtWatcher:
    """Asks the zone's DNS for the victim's challenge name over and over, keeping what it sees."""

    port: int
    name: str
    seen: list[str] = field(default_factory=list)
    asked: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TxtWatcher:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _watch(self) -> None:
        query = dns.message.make_query(self.name, dns.rdatatype.TXT)
        while not self._stop.wait(0.02):
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=1)
            except (dns.exception.Timeout, OSError):
                continue  # a lost datagram is simply asked again
            self.asked += 1
            self.seen += [str(rrset) for rrset in answer.answer]


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcmeSystem]:
    tmp = tmp_path_factory.mktemp("csr-acme")
    with fresh_store_url("sqlite", tmp) as url:
        system = start_system(tmp, url)
        yield system
        system.stop()


def registered_box(cloud_url: str, store_url: str) -> tuple[Customer, TestBox, str]:
    """A new customer's box, registered by a first (nameless) request; with its scope."""
    store = cloud_store(store_url, pool_size=1)
    customer = Customer.create(store)
    store.dispose()
    box = TestBox(cloud_url)
    first = box.ask(customer)
    assert first.refusal_code == "invalid_csr" and first.hint, first
    return customer, box, first.hint["scope"]


def orders_at(system: AcmeSystem) -> int:
    return system.pebble.log.read_text().count("/order-plz")


@pytest.mark.parametrize("smuggled", sorted(SMUGGLED))
def test_acme_cloud_refuses_a_csr_naming_anything_else_before_ordering(acme, smuggled):
    _, _, victim_scope = registered_box(acme.cloud.url, acme.store_url)
    customer, box, scope = registered_box(acme.cloud.url, acme.store_url)
    own = names.certificate_names(scope, ZONE)
    common_name, san = SMUGGLED[smuggled](own, victim_scope)
    orders_before = orders_at(acme)
    with TxtWatcher(acme.dns.port, f"_acme-challenge.{victim_scope}.{ZONE}") as watcher:
        answer = box.ask(customer, csr_pem=csr_with(box.tls_key, common_name, san))
    assert answer.refusal_code == "invalid_csr", answer
    assert orders_at(acme) == orders_before  # nothing was ordered
    assert victim_scope not in acme.pebble.log.read_text()  # never attempted at the CA
    assert watcher.asked > 0 and watcher.seen == []  # no TXT for the victim, ever


def test_acme_cloud_still_issues_for_exactly_the_two_names(acme):
    customer, box, scope = registered_box(acme.cloud.url, acme.store_url)
    own = names.certificate_names(scope, ZONE)
    answer = box.ask(customer, csr_pem=csr_with(box.tls_key, own[0], dns_names(own)))
    assert answer.result, answer
    leaf = pki.certificate_from_pem(answer.result.x509_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(own)
    assert san.get_values_for_type(x509.IPAddress) == []


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory: pytest.TempPathFactory):
    with running_cloud(tmp_path_factory.mktemp("csr-local")) as cloud:
        yield cloud


@pytest.mark.parametrize("smuggled", sorted(SMUGGLED))
def test_embedded_ca_cloud_refuses_the_same_csrs(local_cloud, smuggled):
    _, _, victim_scope = registered_box_local(local_cloud)
    customer, box, scope = registered_box_local(local_cloud)
    common_name, san = SMUGGLED[smuggled](names.certificate_names(scope, ZONE), victim_scope)
    answer = box.ask(customer, csr_pem=csr_with(box.tls_key, common_name, san))
    assert answer.refusal_code == "invalid_csr", answer


def registered_box_local(cloud) -> tuple[Customer, TestBox, str]:
    store = cloud_store(cloud.store_url, pool_size=1)
    customer = Customer.create(store)
    store.dispose()
    box = TestBox(cloud.url)
    first = box.ask(customer)
    assert first.result, first
    return customer, box, first.result.scope


def test_embedded_ca_certifies_exactly_the_two_names_for_a_nameless_csr(local_cloud):
    customer, box, scope = registered_box_local(local_cloud)
    answer = box.ask(customer, csr_pem=csr_with(box.tls_key, None, []))
    leaf = pki.certificate_from_pem(answer.result.x509_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == dns_names(names.certificate_names(scope, ZONE))
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value in set(
        names.certificate_names(scope, ZONE)
    )
