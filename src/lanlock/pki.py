"""Keys, CSRs, the embedded certificate authority and chain verification.

Everything here is a thin, opinionated layer over ``cryptography``: the choices (curves, profile,
lifetimes) are made once, so that the cloud, the box and the tests cannot drift apart. Certificates
follow the public web profile, because a browser and ``cryptography``'s own verifier are the
judges of what we issue.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from lanlock import defaults

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

DEFAULT_LEAF_LIFETIME = dt.timedelta(days=defaults.CERTIFICATE_LIFETIME_DAYS)
ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=1825)
# Back-date notBefore a little: a box or browser whose clock runs a few minutes slow must not see
# a certificate that is "not yet valid".
CLOCK_SKEW = dt.timedelta(minutes=5)
MIN_RSA_BITS = 2048
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)

__all__ = [
    "DEFAULT_LEAF_LIFETIME",
    "CertificateAuthority",
    "InvalidCSR",
    "VerificationError",
    "box_id_for",
    "build_csr",
    "certificate_from_pem",
    "certificates_from_pem",
    "check_csr",
    "csr_digest",
    "decrypt_private_key",
    "encrypt_private_key",
    "key_fingerprint",
    "load_csr",
    "new_private_key",
    "parse_csr",
    "private_key_pem",
    "self_signed_certificate",
    "to_pem",
    "verify_server_chain",
]


class InvalidCSR(ValueError):
    """A CSR that cannot be used: the message says why, in words a user can act on."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- keys -------------------------------------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key: what every device and TLS key in lanlock is."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, for keys that stay on the device in a 0600 file."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def encrypt_private_key(key: PrivateKey, secret: bytes) -> bytes:
    """PKCS#8 PEM encrypted with ``secret`` (how the cloud keeps its CA keys at rest)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )


def decrypt_private_key(pem: bytes, secret: bytes | None) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=secret)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported private key type")
    return key


def public_key_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_fingerprint(key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: how the cloud recognises "the same key"."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def certificate_from_pem(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def certificates_from_pem(pem: str | bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; an empty bundle is an empty list, not an error."""
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificates(data) if data.strip() else []


# --- CSRs -------------------------------------------------------------------------------------


def build_csr(key: PrivateKey, names: Sequence[str] = ()) -> x509.CertificateSigningRequest:
    """A CSR for ``names`` (possibly none: the cloud sets the names it certifies).

    An EC key signs deterministically (RFC 6979): the same key and names make the same CSR,
    byte for byte, at every request. The cloud then knows a CSR it has checked before by its
    digest (:func:`csr_digest`) and need not check its signature again, and the box keeps no
    CSR of its own. RFC 6979 also needs no randomness at signing time, a weakness of ECDSA
    on small devices."""
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if names else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    deterministic = True if isinstance(key, ec.EllipticCurvePrivateKey) else None
    return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=deterministic)


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_csr(pem: str) -> x509.CertificateSigningRequest:
    """Parse a CSR and insist that it is usable: it parses, its signature holds, its key is strong.

    Raises InvalidCSR with the reason; never anything else, whatever the input.
    """
    return check_csr(load_csr(pem))


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    """A CSR parsed and decoded, its signature and key not checked yet (:func:`check_csr`).

    Raises InvalidCSR with the reason; never anything else, whatever the input.
    """
    try:
        csr = x509.load_pem_x509_csr(pem.encode("utf-8", "surrogateescape"))
        csr.public_key()
        _ = csr.signature_hash_algorithm  # an algorithm the signature check would not know
        # Decoded lazily by cryptography: a malformed or duplicated extension would otherwise
        # raise later, in the middle of the policy checks.
        _ = csr.subject, csr.extensions, csr.attributes
    except UnsupportedAlgorithm as exc:
        raise _unsupported() from exc
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidCSR("the CSR is not a PEM certificate request that can be parsed") from exc
    return csr


def check_csr(csr: x509.CertificateSigningRequest) -> x509.CertificateSigningRequest:
    """``csr`` (from :func:`load_csr`) once its signature holds and its key is strong; else
    InvalidCSR with the reason."""
    try:
        signature_ok = csr.is_signature_valid
    except UnsupportedAlgorithm as exc:
        raise _unsupported() from exc
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise InvalidCSR("the CSR is not a PEM certificate request that can be parsed") from exc
    if not signature_ok:
        raise InvalidCSR("the CSR's signature does not verify with its own key")
    check_key_strength(csr.public_key())
    return csr


def csr_digest(csr: x509.CertificateSigningRequest) -> str:
    """The SHA-256 of the CSR's DER, as sent (cryptography keeps the bytes it parsed)."""
    return hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()


def _unsupported() -> InvalidCSR:
    return InvalidCSR(
        "the CSR's key type or curve is not supported; use EC P-256, EC P-384 or RSA >= 2048"
    )


def check_key_strength(public_key: object) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ACCEPTED_CURVES):
            raise InvalidCSR(f"the CSR's EC curve {public_key.curve.name} is not P-256 or P-384")
        return
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise InvalidCSR(
                f"the CSR's RSA key has {public_key.key_size} bits; at least {MIN_RSA_BITS} needed"
            )
        return
    raise InvalidCSR("the CSR's key type is not EC P-256, EC P-384 or RSA")


def csr_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """The DNS names a CSR asks for (its SAN), lower case; [] when it names none."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]


# --- certificates -----------------------------------------------------------------------------


ALL_ADDRESSES = [
    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
    x509.IPAddress(ipaddress.ip_network("::/0")),
]


def _serial() -> int:
    # 159 random bits: positive, under 20 octets, unpredictable (CA/B Forum asks for 64+ bits).
    return secrets.randbits(159) | 1


def _ca_certificate(
    subject: x509.Name,
    public_key: PublicKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    issuer_public: PublicKey,
    lifetime: dt.timedelta,
    path_length: int | None,
    zone: str,
) -> x509.Certificate:
    now = utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # A root that users import into their trust store can only ever vouch for the IoT zone:
        # whoever steals the CA key cannot impersonate any other site to them. A permitted DNS
        # subtree says nothing about IP addresses (RFC 5280 §4.2.1.10 constrains only the name
        # forms it lists), so every address is excluded outright, as the CA/B Forum's
        # technically-constrained sub-CA profile also asks.
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(zone)], excluded_subtrees=ALL_ADDRESSES
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
        )
        .sign(
            issuer_key,
            hashes.SHA256() if isinstance(issuer_key, rsa.RSAPrivateKey) else hashes.SHA384(),
        )
    )


def leaf_certificate(
    public_key: PublicKey,
    names: Sequence[str],
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
) -> x509.Certificate:
    """A server certificate in the public web profile for ``names`` (the first is the CN)."""
    now = utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def self_signed_certificate(
    key: PrivateKey, names: Sequence[str], lifetime: dt.timedelta = dt.timedelta(days=30)
) -> x509.Certificate:
    """A temporary self-signed server certificate, so that HTTPS answers before the real one."""
    now = utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """The embedded CA: a root that users trust and an intermediate that signs leaves.

    The root's key signs only the intermediate; keeping leaves one step away from the root is
    what public CAs do and lets an operator replace the intermediate without touching users.
    """

    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: PrivateKey
    root_key: PrivateKey | None = None

    @classmethod
    def create(cls, zone: str, organization: str = "lanlock") -> CertificateAuthority:
        root_key = ec.generate_private_key(ec.SECP384R1())
        inter_key = new_private_key()
        root_name = _ca_name(organization, f"{organization} IoT root CA ({zone})")
        inter_name = _ca_name(organization, f"{organization} IoT issuing CA ({zone})")
        root = _ca_certificate(
            root_name,
            root_key.public_key(),
            root_name,
            root_key,
            root_key.public_key(),
            ROOT_LIFETIME,
            1,
            zone,
        )
        inter = _ca_certificate(
            inter_name,
            inter_key.public_key(),
            root_name,
            root_key,
            root_key.public_key(),
            INTERMEDIATE_LIFETIME,
            0,
            zone,
        )
        return cls(root=root, intermediate=inter, intermediate_key=inter_key, root_key=root_key)

    def issue(
        self,
        public_key: PublicKey,
        names: Sequence[str],
        lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
    ) -> x509.Certificate:
        return leaf_certificate(
            public_key, names, self.intermediate, self.intermediate_key, lifetime
        )

    @property
    def chain_pem(self) -> str:
        """The intermediates a server sends after its leaf (not the root)."""
        return to_pem(self.intermediate)

    @property
    def root_pem(self) -> str:
        return to_pem(self.root)


def _ca_name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def verify_server_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    host: str,
    at: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """Verify ``leaf`` for ``host`` the way a browser would; return the built chain.

    Raises ``VerificationError`` (re-exported here) when the chain, the names, the validity
    period or the profile do not hold.
    """
    builder = PolicyBuilder().store(Store(list(roots)))
    if at is not None:
        builder = builder.time(at)
    verifier = builder.build_server_verifier(x509.DNSName(host))
    return verifier.verify(leaf, list(intermediates))


def box_id_for(public_key: PublicKey) -> str:
    """A box's identity, derived from its device key (docs/design.md §3): 26 base32 characters."""
    digest = hashlib.sha256(public_key_der(public_key)).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:26]
