"""What a box's CSR may carry: its public key, and at most its own two names.

The cloud certifies names it derives from the box's scope, never names read from the CSR. But a
CSR is also handed to the CA as it is (an ACME order is finalized with the box's own CSR, so
that the private key never leaves the box), and public CAs read names from places beyond the
DNS SANs: the subject's CN is copied into the certificate's SANs, IP and e-mail SANs are
identities of their own. A CSR that carries anything beyond ``*.<scope>.<zone>`` and
``<scope>.<zone>`` is therefore refused outright, wherever the extra identity hides:

* the subject may hold nothing but a CN, and the CN must be one of the box's names;
* a SAN may hold nothing but DNS names, each one of the box's names;
* extensions beyond those a TLS server CSR normally carries are refused, since a CA that reads
  an extension we do not inspect might read an identity from it;
* attributes beyond the extension request (a challenge password, an ``unstructuredName``, …)
  are refused for the same reason.

Names are compared exactly: the box writes them in lower case without a final dot, so a name
that differs only in case or by a trailing dot is refused too rather than normalised into a
match a CA might read differently.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from lanlock import errors, names, pki
from lanlock.cloud.models import Box
from lanlock.cloud.refusals import Refused

# Extensions a TLS server CSR may carry that name no one: their values are ignored by our CA and
# by ACME CAs alike (both set key usage and constraints themselves).
HARMLESS_EXTENSIONS = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }
)
# PKCS#10's extensionRequest attribute (RFC 2985 §5.4.2), where the SAN travels; cryptography
# names no constant for it. No other attribute is needed.
EXTENSION_REQUEST = x509.ObjectIdentifier("1.2.840.113549.1.9.14")
SHOWN_LENGTH = 80  # a hostile CSR's strings end up in a refusal message and the audit line


# A request's CSR as parsed, or why it did not parse: kept to be refused in its turn (§5's
# order puts eligibility first), parsed once for the express lane and the full way.
ParsedCSR = x509.CertificateSigningRequest | pki.InvalidCSR


def load(csr_pem: str) -> ParsedCSR:
    """The CSR parsed and decoded, its signature and key not checked yet (:func:`check`)."""
    try:
        return pki.load_csr(csr_pem)
    except pki.InvalidCSR as exc:
        return exc


def check(loaded: ParsedCSR) -> ParsedCSR:
    """The CSR once its signature holds and its key is strong, or why not."""
    if isinstance(loaded, pki.InvalidCSR):
        return loaded
    try:
        return pki.check_csr(loaded)
    except pki.InvalidCSR as exc:
        return exc


def checked_csr(parsed: ParsedCSR, box: Box | None, zone: str) -> x509.CertificateSigningRequest:
    """The CSR, once it parsed and names nothing beyond the box's own names (none for a box
    the cloud has not registered yet: it does not know its scope); else Refused."""
    if isinstance(parsed, pki.InvalidCSR):
        raise Refused(errors.INVALID_CSR, str(parsed))
    csr = parsed
    own = set(names.certificate_names(box.scope, zone)) if box else set()
    if foreign := foreign_identities(csr, own):
        raise Refused(
            errors.INVALID_CSR,
            f"the CSR also names {', '.join(foreign)}; a CSR names nothing, or only this "
            "box's *.<scope>.<zone> and <scope>.<zone> (lower case, no final dot)",
        )
    return csr


def check_names_for_ca(
    csr: x509.CertificateSigningRequest, box: Box, zone: str, exact_names: bool
) -> None:
    """A CA that needs ``exact_names`` (every ACME CA) finalizes only a CSR naming exactly the
    order's names.

    A box learns its scope from its first answer, so its first CSR names nothing: it is refused
    here with its scope and zone, and asks again at once with the right names. The box stays
    registered (it is eligible, and its next request is served): the slot it took is the one it
    keeps.
    """
    wanted = names.certificate_names(box.scope, zone)
    if exact_names and set(pki.csr_names(csr)) != set(wanted):
        raise Refused(
            errors.INVALID_CSR,
            f"this CA needs the CSR to name exactly {' and '.join(wanted)}",
            scope=box.scope,
            zone=zone,
        )


def foreign_identities(
    csr: x509.CertificateSigningRequest, own_names: Collection[str]
) -> list[str]:
    """Everything the CSR names or asks for beyond ``own_names``, described for a message.

    An empty list means the CSR is acceptable: it names nothing, or only names in
    ``own_names``. The caller has parsed the CSR already (its extensions and attributes load).
    """
    return [
        *_subject_findings(csr, own_names),
        *_extension_findings(csr, own_names),
        *_attribute_findings(csr),
    ]


def _subject_findings(csr: x509.CertificateSigningRequest, own: Collection[str]) -> Iterator[str]:
    for attribute in csr.subject:
        value = _shown(attribute.value)
        if attribute.oid != NameOID.COMMON_NAME:
            yield f"subject {attribute.rfc4514_attribute_name}={value}"
        elif attribute.value not in own:
            yield f"subject CN={value}"


def _extension_findings(csr: x509.CertificateSigningRequest, own: Collection[str]) -> Iterator[str]:
    for extension in csr.extensions:
        if isinstance(extension.value, x509.SubjectAlternativeName):
            yield from _san_findings(extension.value, own)
        elif isinstance(extension.value, x509.BasicConstraints):
            if extension.value.ca:
                yield "basic constraints CA:TRUE"
        elif extension.oid not in HARMLESS_EXTENSIONS:
            yield f"extension {extension.oid.dotted_string}"


def _san_findings(san: x509.SubjectAlternativeName, own: Collection[str]) -> Iterator[str]:
    for general_name in san:
        if isinstance(general_name, x509.DNSName) and general_name.value in own:
            continue
        kind = type(general_name).__name__
        yield f"SAN {kind} {_shown(general_name.value)}"


def _attribute_findings(csr: x509.CertificateSigningRequest) -> Iterator[str]:
    for attribute in csr.attributes:
        if attribute.oid != EXTENSION_REQUEST:
            yield f"attribute {attribute.oid.dotted_string}"


def _shown(value: object) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text[:SHOWN_LENGTH] + ("…" if len(text) > SHOWN_LENGTH else ""))
