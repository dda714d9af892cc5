"""Keys, CSRs, the embedded CA and chain verification, judged by cryptography's verifier."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lanlock import names, pki

ZONE = "iot.test"

# A CSR for an SM2 key (OpenSSL: `openssl genpkey -algorithm SM2`, `openssl req -new -sm3`): a
# curve that cryptography cannot load at all, unlike the weak keys it can load and we refuse.
SM2_CSR = """\
-----BEGIN CERTIFICATE REQUEST-----
MIHGMG4CAQAwDDEKMAgGA1UEAwwBeDBZMBMGByqGSM49AgEGCCqBHM9VAYItA0IA
BNPuShjvfNeBKTrs7EyHE3eJRdROS9eyEgvHGQPaqGYccncssNM9W1leJ62BsnjQ
sVE8/w3Azf4ucVY9+pnIrlygADAKBggqgRzPVQGDdQNIADBFAiBW4Ps/VHRfK7V7
VNN+xHNR6x2cgOwv8Ss8lJ6u1QfFBQIhAL50FD4P9qpTuOXo5rmMJCYELLhFMUVV
djJit1ZtL2XX
-----END CERTIFICATE REQUEST-----
"""


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.CertificateAuthority.create(ZONE)


@pytest.fixture(scope="module")
def other_ca() -> pki.CertificateAuthority:
    return pki.CertificateAuthority.create(ZONE)


def ext(cert: x509.Certificate | x509.CertificateSigningRequest, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def csr_of(key: object, hash_algorithm: hashes.HashAlgorithm | None = None) -> str:
    """A CSR signed by ``key`` (any type cryptography can sign with), as PEM."""
    if hash_algorithm is None and not isinstance(key, ed25519.Ed25519PrivateKey):
        hash_algorithm = hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "box")]))
        .sign(key, hash_algorithm)  # type: ignore[arg-type]
    )
    return pki.csr_pem(csr)


def pem_of(der: bytes, label: str) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


# --- keys and CSRs ------------------------------------------------------------------------------


def test_new_key_is_p256_and_csr_round_trips_with_names():
    key = pki.new_private_key()
    assert isinstance(key.curve, ec.SECP256R1)
    wanted = names.certificate_names(names.new_scope(), ZONE)
    csr = pki.parse_csr(pki.csr_pem(pki.build_csr(key, wanted)))
    assert csr.public_key() == key.public_key()
    assert pki.csr_names(csr) == wanted
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == wanted[0]


def test_csr_without_names_is_valid_and_names_nothing():
    csr = pki.parse_csr(pki.csr_pem(pki.build_csr(pki.new_private_key())))
    assert pki.csr_names(csr) == []
    assert len(csr.subject) == 0


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="P-256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="P-384"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="RSA-2048"),
    ],
)
def test_parse_csr_accepts_the_keys_of_the_design(make_key):
    key = make_key()
    assert pki.parse_csr(csr_of(key)).public_key() == key.public_key()


@pytest.mark.parametrize(
    ("make_key", "reason"),
    [
        pytest.param(
            lambda: rsa.generate_private_key(65537, 1024),
            r"RSA key has 1024 bits; at least 2048",
            id="RSA-1024",
        ),
        pytest.param(
            lambda: ec.generate_private_key(ec.SECP521R1()),
            r"curve secp521r1 is not P-256 or P-384",
            id="P-521",
        ),
        pytest.param(
            lambda: dsa.generate_private_key(1024),
            r"key type is not EC P-256, EC P-384 or RSA",
            id="DSA",
        ),
        pytest.param(
            ed25519.Ed25519PrivateKey.generate,
            r"key type is not EC P-256, EC P-384 or RSA",
            id="Ed25519",
        ),
    ],
)
def test_parse_csr_refuses_weak_or_foreign_keys_saying_why(make_key, reason):
    # The message names the problem and what would be accepted.
    with pytest.raises(pki.InvalidCSR, match=reason):
        pki.parse_csr(csr_of(make_key()))


def test_parse_csr_refuses_a_key_cryptography_cannot_even_load():
    # "Raises InvalidCSR with the reason; never anything else, whatever the input": a box that
    # sends an SM2 CSR must get `invalid_csr`, not an internal error of the cloud.
    with pytest.raises(pki.InvalidCSR):
        pki.parse_csr(SM2_CSR)


def test_parse_csr_refuses_a_csr_whose_signature_does_not_hold():
    key = pki.new_private_key()
    good = pki.build_csr(key)
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature's s: still DER, no longer a valid signature
    tampered = pem_of(bytes(der), "CERTIFICATE REQUEST")
    assert x509.load_pem_x509_csr(tampered.encode()).public_key() == key.public_key()
    with pytest.raises(pki.InvalidCSR, match="signature"):
        pki.parse_csr(tampered)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "\x00" * 32,
        "\ud800 lone surrogate",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\n",
    ],
)
def test_parse_csr_refuses_garbage_with_invalid_csr_only(garbage):
    with pytest.raises(pki.InvalidCSR, match="not a PEM certificate request"):
        pki.parse_csr(garbage)


def test_parse_csr_refuses_a_certificate_in_place_of_a_csr(ca):
    with pytest.raises(pki.InvalidCSR):
        pki.parse_csr(ca.root_pem)


def test_parse_csr_refuses_a_truncated_csr():
    pem = pki.csr_pem(pki.build_csr(pki.new_private_key()))
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(pki.InvalidCSR):
        pki.parse_csr(pem_of(der[:-10], "CERTIFICATE REQUEST"))


# --- box_id -------------------------------------------------------------------------------------


def design_box_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """docs/design.md §3, computed here independently of lanlock."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(spki).digest()).decode("ascii").rstrip("=")
    return encoded.lower()[:26]


def test_box_id_is_26_lower_case_base32_characters_of_the_spki_hash():
    key = pki.new_private_key()
    box_id = pki.box_id_for(key.public_key())
    assert re.fullmatch(r"[a-z2-7]{26}", box_id)
    assert box_id == design_box_id(key.public_key())


def test_box_id_is_stable_for_a_key_and_differs_between_keys():
    key = pki.new_private_key()
    reloaded = serialization.load_pem_private_key(pki.private_key_pem(key), None)
    assert pki.box_id_for(key.public_key()) == pki.box_id_for(key.public_key())
    assert pki.box_id_for(reloaded.public_key()) == pki.box_id_for(key.public_key())
    assert pki.box_id_for(pki.new_private_key().public_key()) != pki.box_id_for(key.public_key())


def test_key_fingerprint_is_the_sha256_of_the_spki():
    key = pki.new_private_key().public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pki.key_fingerprint(key) == hashlib.sha256(spki).hexdigest()


# --- the embedded CA ----------------------------------------------------------------------------


def test_leaf_follows_the_public_web_profile(ca):
    scope = names.new_scope()
    key = pki.new_private_key()
    before = dt.datetime.now(dt.UTC)
    leaf = ca.issue(key.public_key(), names.certificate_names(scope, ZONE))
    after = dt.datetime.now(dt.UTC)

    assert leaf.public_key() == key.public_key()
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"*.{scope}.{ZONE}"
    )
    san = ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert san == [f"*.{scope}.{ZONE}", f"{scope}.{ZONE}"]
    assert ext(leaf, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    )
    issuer_ski = ext(ca.intermediate, x509.SubjectKeyIdentifier).value.digest
    assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == issuer_ski
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key_usage = ext(leaf, x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value.digital_signature
    assert not key_usage.value.key_cert_sign
    assert ext(leaf, x509.BasicConstraints).value.ca is False
    assert leaf.issuer == ca.intermediate.subject
    leaf.verify_directly_issued_by(ca.intermediate)

    # 90 days by default, back-dated a little for slow clocks, never post-dated.
    assert before + dt.timedelta(days=90) - dt.timedelta(seconds=1) <= leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc <= after + dt.timedelta(days=90)
    assert leaf.not_valid_before_utc <= before
    assert dt.timedelta(days=90) == pki.DEFAULT_LEAF_LIFETIME


def test_leaf_lifetime_is_a_setting(ca):
    leaf = ca.issue(pki.new_private_key().public_key(), [f"x.{ZONE}"], dt.timedelta(days=7))
    now = dt.datetime.now(dt.UTC)
    assert abs(leaf.not_valid_after_utc - (now + dt.timedelta(days=7))) < dt.timedelta(minutes=1)


def test_root_and_intermediate_are_ca_certificates_constrained_to_the_zone(ca):
    for cert in (ca.root, ca.intermediate):
        basic = ext(cert, x509.BasicConstraints)
        assert basic.critical and basic.value.ca is True
        usage = ext(cert, x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign
        constraints = ext(cert, x509.NameConstraints).value
        assert constraints.permitted_subtrees == [x509.DNSName(ZONE)]
        assert ext(cert, x509.SubjectKeyIdentifier).value.digest == (
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
        )
    assert ca.root.issuer == ca.root.subject
    ca.root.verify_directly_issued_by(ca.root)
    assert ca.intermediate.issuer == ca.root.subject
    ca.intermediate.verify_directly_issued_by(ca.root)
    root_ski = ext(ca.root, x509.SubjectKeyIdentifier).value.digest
    assert ext(ca.intermediate, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    assert ext(ca.intermediate, x509.BasicConstraints).value.path_length == 0
    assert ca.root_key is not None and ca.root_key.public_key() == ca.root.public_key()
    assert ca.intermediate_key.public_key() == ca.intermediate.public_key()
    # A server sends the intermediate after its leaf, not the root.
    assert pki.certificates_from_pem(ca.chain_pem) == [ca.intermediate]
    assert pki.certificate_from_pem(ca.root_pem) == ca.root


def test_verify_server_chain_accepts_the_box_names(ca):
    scope = names.new_scope()
    leaf = ca.issue(pki.new_private_key().public_key(), names.certificate_names(scope, ZONE))
    chain = pki.verify_server_chain(leaf, [ca.intermediate], [ca.root], f"10-0-0-7.{scope}.{ZONE}")
    assert chain == [leaf, ca.intermediate, ca.root]
    pki.verify_server_chain(leaf, [ca.intermediate], [ca.root], f"fe80--1.{scope}.{ZONE}")
    pki.verify_server_chain(leaf, [ca.intermediate], [ca.root], f"{scope}.{ZONE}")
    # Within its lifetime, any instant will do.
    pki.verify_server_chain(
        leaf,
        [ca.intermediate],
        [ca.root],
        f"10-0-0-7.{scope}.{ZONE}",
        at=leaf.not_valid_after_utc - dt.timedelta(seconds=1),
    )


def test_verify_server_chain_rejects_other_names_times_and_issuers(ca, other_ca):
    scope = names.new_scope()
    leaf = ca.issue(pki.new_private_key().public_key(), names.certificate_names(scope, ZONE))
    host = f"10-0-0-7.{scope}.{ZONE}"
    wrong_hosts = [
        f"10-0-0-7.{scope}.iot.example",  # another zone
        f"10-0-0-7.{names.new_scope()}.{ZONE}",  # another scope
        f"a.10-0-0-7.{scope}.{ZONE}",  # two labels under the scope: the wildcard covers one
        ZONE,  # the zone itself
    ]
    for wrong in wrong_hosts:
        with pytest.raises(pki.VerificationError):
            pki.verify_server_chain(leaf, [ca.intermediate], [ca.root], wrong)
    second = dt.timedelta(seconds=1)
    for moment in (leaf.not_valid_after_utc + second, leaf.not_valid_before_utc - second):
        with pytest.raises(pki.VerificationError):
            pki.verify_server_chain(leaf, [ca.intermediate], [ca.root], host, at=moment)
    # A leaf from another CA does not chain to this root, with either CA's intermediate.
    stranger = other_ca.issue(
        pki.new_private_key().public_key(), names.certificate_names(scope, ZONE)
    )
    for intermediates in ([other_ca.intermediate], [ca.intermediate]):
        with pytest.raises(pki.VerificationError):
            pki.verify_server_chain(stranger, intermediates, [ca.root], host)
    # Without the intermediate the chain cannot be built either.
    with pytest.raises(pki.VerificationError):
        pki.verify_server_chain(leaf, [], [ca.root], host)


def test_name_constraint_keeps_the_ca_inside_its_zone(ca):
    # Whoever holds the CA key can sign for any name, but a client that trusts the root accepts
    # only names under the zone.
    key = pki.new_private_key().public_key()
    inside = ca.issue(key, ["www.iot.test"])
    pki.verify_server_chain(inside, [ca.intermediate], [ca.root], "www.iot.test")
    for name in ("www.example.com", "iot.test.example.com", "notiot.test"):
        outside = ca.issue(key, [name])
        with pytest.raises(pki.VerificationError):
            pki.verify_server_chain(outside, [ca.intermediate], [ca.root], name)


def test_a_ca_for_another_zone_cannot_vouch_for_this_zone():
    foreign = pki.CertificateAuthority.create("iot.example")
    scope = names.new_scope()
    leaf = foreign.issue(pki.new_private_key().public_key(), names.certificate_names(scope, ZONE))
    with pytest.raises(pki.VerificationError):
        pki.verify_server_chain(
            leaf, [foreign.intermediate], [foreign.root], f"10-0-0-7.{scope}.{ZONE}"
        )


# --- keys at rest -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(pki.new_private_key, id="EC"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="RSA"),
    ],
)
def test_encrypted_private_key_round_trips_with_the_secret_only(make_key):
    key = make_key()
    secret = b"correct horse battery staple"
    pem = pki.encrypt_private_key(key, secret)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert pki.private_key_pem(key) not in pem
    back = pki.decrypt_private_key(pem, secret)
    assert back.private_numbers() == key.private_numbers()
    with pytest.raises(ValueError):
        pki.decrypt_private_key(pem, b"another secret, same length!")
    with pytest.raises(TypeError):
        pki.decrypt_private_key(pem, None)


def test_plain_private_key_pem_is_pkcs8_and_loads_without_a_secret():
    key = pki.new_private_key()
    pem = pki.private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pki.decrypt_private_key(pem, None).private_numbers() == key.private_numbers()


# --- the temporary certificate and lifetimes ----------------------------------------------------


def test_self_signed_certificate_has_the_names_and_its_own_key():
    key = pki.new_private_key()
    wanted = ["10-0-0-7.example.invalid", "box.invalid"]
    cert = pki.self_signed_certificate(key, wanted)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == cert.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == wanted[0]
    san = ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert san == wanted
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    cert.verify_directly_issued_by(cert)
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    # Two boxes never share a temporary certificate.
    assert pki.self_signed_certificate(key, wanted).serial_number != cert.serial_number


def test_certificates_from_pem_reads_bundles_and_empty_text(ca):
    assert pki.certificates_from_pem("") == []
    assert pki.certificates_from_pem(" \n") == []
    bundle = ca.chain_pem + ca.root_pem
    assert pki.certificates_from_pem(bundle) == [ca.intermediate, ca.root]
    assert pki.certificates_from_pem(bundle.encode()) == [ca.intermediate, ca.root]
