"""Properties of the CSR policy: a box's CSR names nothing, or only its own two names.

Any identity beyond ``*.<scope>.<zone>`` and ``<scope>.<zone>``, in any position (the subject's
CN or another subject attribute, a SAN of any type, a PKCS#10 attribute, an extension a CA might
read), in any letter case or with a final dot, is found; the two names alone, or none, pass.
Every CSR goes through PEM and :func:`lanlock.pki.parse_csr` first, as it does on the wire.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AttributeOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from lanlock import names, pki
from lanlock.cloud.csr_policy import foreign_identities

ZONE = "iot.test"
KEY = pki.new_private_key()  # the key plays no part in the policy; one keeps the tests fast

scopes = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=16, max_size=16)
dns_text = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.*_", min_size=1)


@dataclass(frozen=True)
class Csr:
    subject: list[x509.NameAttribute]
    san: list[x509.GeneralName]
    attributes: list[tuple[x509.ObjectIdentifier, bytes]]
    extensions: list[x509.ExtensionType]

    def parsed(self) -> x509.CertificateSigningRequest:
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(self.subject))
        if self.san:
            builder = builder.add_extension(x509.SubjectAlternativeName(self.san), critical=False)
        for extension in self.extensions:
            builder = builder.add_extension(extension, critical=False)
        for oid, value in self.attributes:
            builder = builder.add_attribute(oid, value)
        return pki.parse_csr(pki.csr_pem(builder.sign(KEY, hashes.SHA256())))


def look_alikes(own: list[str]) -> st.SearchStrategy[str]:
    """Names a careless comparison would take for the box's own: other case, final dot."""
    return (
        st.sampled_from(own)
        .flatmap(
            lambda name: st.sampled_from(
                [name.upper(), name + ".", name.upper() + ".", name.title()]
            )
        )
        .filter(lambda name: name not in own)
    )


def foreign_dns(own: list[str]) -> st.SearchStrategy[str]:
    other_scope = scopes.map(lambda s: names.certificate_names(s, ZONE)).flatmap(st.sampled_from)
    return st.one_of(other_scope, look_alikes(own), dns_text).filter(lambda n: n not in own)


def foreign_identity(own: list[str]) -> st.SearchStrategy[tuple[str, object]]:
    """One identity beyond the box's names, with where it goes in the CSR."""
    addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
    return st.one_of(
        st.tuples(st.just("cn"), foreign_dns(own).filter(lambda n: len(n) <= 64)),
        st.tuples(st.just("san-dns"), foreign_dns(own)),
        st.tuples(st.just("san-ip"), addresses),
        st.tuples(st.just("san-email"), foreign_dns(own).map(lambda n: f"admin@{n}")),
        st.tuples(st.just("san-uri"), foreign_dns(own).map(lambda n: f"https://{n}/")),
        st.tuples(
            st.just("subject"),
            st.tuples(
                st.sampled_from(
                    [NameOID.ORGANIZATION_NAME, NameOID.EMAIL_ADDRESS, NameOID.LOCALITY_NAME]
                ),
                st.text("abcxyz.-0123", min_size=1, max_size=40),
            ),
        ),
        st.tuples(
            st.just("attribute"),
            st.tuples(
                st.sampled_from([AttributeOID.UNSTRUCTURED_NAME, AttributeOID.CHALLENGE_PASSWORD]),
                st.text("abcxyz.-0123", min_size=1, max_size=30).map(str.encode),
            ),
        ),
        st.tuples(st.just("ca"), st.just(x509.BasicConstraints(ca=True, path_length=None))),
    )


def csr_with(own_part: list[str], common_name: str | None, extras: list[tuple[str, object]]) -> Csr:
    csr = Csr(
        subject=[x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [],
        san=[x509.DNSName(n) for n in own_part],
        attributes=[],
        extensions=[],
    )
    for where, value in extras:
        if where == "cn":
            csr.subject[:] = [x509.NameAttribute(NameOID.COMMON_NAME, value)]  # type: ignore[arg-type]
        elif where == "san-dns":
            csr.san.append(x509.DNSName(value))  # type: ignore[arg-type]
        elif where == "san-ip":
            csr.san.append(x509.IPAddress(ipaddress.ip_address(value)))  # type: ignore[arg-type]
        elif where == "san-email":
            csr.san.append(x509.RFC822Name(value))  # type: ignore[arg-type]
        elif where == "san-uri":
            csr.san.append(x509.UniformResourceIdentifier(value))  # type: ignore[arg-type]
        elif where == "subject":
            oid, text = value  # type: ignore[misc]
            csr.subject.append(x509.NameAttribute(oid, text))
        elif where == "attribute":
            csr.attributes.append(value)  # type: ignore[arg-type]
        elif where == "ca":
            csr.extensions.append(value)  # type: ignore[arg-type]
    return csr


def _slot(extra: tuple[str, object]) -> object:
    """What a CSR can hold once: a PKCS#10 attribute per type, one basic constraints."""
    where, value = extra
    return (where, value[0]) if where == "attribute" else (where, str(value))  # type: ignore[index]


@st.composite
def hostile_csrs(draw: st.DrawFn) -> tuple[list[str], Csr]:
    own = names.certificate_names(draw(scopes), ZONE)
    own_part = draw(st.lists(st.sampled_from(own), unique=True))
    common_name = draw(st.one_of(st.none(), st.sampled_from(own)))
    extras = draw(st.lists(foreign_identity(own), min_size=1, max_size=3, unique_by=_slot))
    return own, csr_with(own_part, common_name, extras)


@st.composite
def honest_csrs(draw: st.DrawFn) -> tuple[list[str], Csr]:
    own = names.certificate_names(draw(scopes), ZONE)
    own_part = draw(st.permutations(own).flatmap(lambda p: st.sampled_from([[], p[:1], p])))
    common_name = draw(st.one_of(st.none(), st.sampled_from(own)))
    return own, csr_with(list(own_part), common_name, [])


@settings(max_examples=300, deadline=None)
@given(hostile_csrs())
def test_any_identity_beyond_the_two_names_is_found(case: tuple[list[str], Csr]) -> None:
    own, csr = case
    assert foreign_identities(csr.parsed(), own)


@settings(max_examples=100, deadline=None)
@given(honest_csrs())
def test_the_two_names_alone_or_none_pass(case: tuple[list[str], Csr]) -> None:
    own, csr = case
    assert foreign_identities(csr.parsed(), own) == []


@settings(max_examples=100, deadline=None)
@given(hostile_csrs())
def test_a_box_without_a_scope_yet_may_name_nothing(case: tuple[list[str], Csr]) -> None:
    """A new box knows no scope: with no own names, any name at all is foreign."""
    _, csr = case
    assert foreign_identities(csr.parsed(), [])


def test_the_message_shows_a_hostile_string_short_and_printable() -> None:
    own = names.certificate_names("a" * 16, ZONE)
    hostile = "evil\x1b[31m" + "x" * 500
    found = foreign_identities(csr_with(own, own[0], [("san-uri", hostile)]).parsed(), own)
    assert len(found) == 1 and len(found[0]) < 120
    assert "\x1b" not in found[0]
