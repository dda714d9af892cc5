"""ARI's ``replaces`` (RFC 9773): a renewal order names the certificate it replaces, by the CA's
certificate ID; an expired certificate, or a CA without renewal information, gets a new order
without it.

Debian's pebble (2.4) offers no renewal information, so no order carries ``replaces`` against it
(the ACME tests of test_acme.py run that path): the ID is checked against RFC 9773's own example,
the newOrder body as it is serialised, and the choice against directories with and without
``renewalInfo``.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from acme import messages
from lanlock import pki
from lanlock.cloud.issuers.acme import AcmeIssuer, ReplacingOrder, ari_cert_id

# RFC 9773 §4.1's example: this AKI key identifier and serial make this ID.
RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
RFC_SERIAL = 0x87654321
RFC_ID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
NOW = dt.datetime.now(dt.UTC)


def certificate(serial: int, not_after: dt.datetime, aki: bytes = RFC_AKI) -> x509.Certificate:
    key = pki.new_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s.iot.example")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_after - dt.timedelta(days=90))
        .not_valid_after(not_after)
        .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )


def client_with(directory: dict) -> SimpleNamespace:
    return SimpleNamespace(directory=messages.Directory.from_json(directory))


WITH_ARI = {
    "newNonce": "https://ca/nonce",
    "newOrder": "https://ca/order",
    "renewalInfo": "https://ca/renewal-info",
}
WITHOUT_ARI = {"newNonce": "https://ca/nonce", "newOrder": "https://ca/order"}


def test_the_certificate_id_is_rfc_9773s():
    assert ari_cert_id(certificate(RFC_SERIAL, NOW + dt.timedelta(days=30))) == RFC_ID


def test_a_serial_without_its_top_bit_gets_no_leading_zero():
    assert ari_cert_id(certificate(0x7F, NOW + dt.timedelta(days=30))).endswith(".fw")


def test_a_renewal_names_the_certificate_it_replaces_to_a_ca_with_renewal_information():
    current = certificate(RFC_SERIAL, NOW + dt.timedelta(days=30))
    assert AcmeIssuer._replaces(client_with(WITH_ARI), current) == RFC_ID


def test_an_expired_certificate_is_ordered_afresh():
    expired = certificate(RFC_SERIAL, NOW - dt.timedelta(minutes=1))
    assert AcmeIssuer._replaces(client_with(WITH_ARI), expired) is None


def test_a_ca_without_renewal_information_is_not_sent_replaces():
    current = certificate(RFC_SERIAL, NOW + dt.timedelta(days=30))
    assert AcmeIssuer._replaces(client_with(WITHOUT_ARI), current) is None
    assert AcmeIssuer._replaces(client_with(WITH_ARI), None) is None


def test_new_order_carries_replaces_only_when_there_is_one():
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="s.iot.example")]
    renewal = ReplacingOrder(identifiers=identifiers, replaces=RFC_ID).to_partial_json()
    assert renewal["replaces"] == RFC_ID
    assert "replaces" not in ReplacingOrder(identifiers=identifiers).to_partial_json()
