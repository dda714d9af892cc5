"""The embedded CA as an issuer: instant, offline, trusted by whoever imports its root."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from lanlock import names, pki
from lanlock.cloud.issuers.base import NO_ADVICE, Issued, RenewalAdvice


class LocalIssuer:
    name = "local"
    requires_csr_names = False  # the embedded CA sets the names whatever the CSR says
    names_replaced = False
    # Issues at once, offline (a signature): the x509 request issues in the transaction that
    # decides it, under the scope's lease (lanlock.cloud.issuance.Issuance.issues_in_first_look).
    instant = True

    def __init__(self, ca: pki.CertificateAuthority, zone: str, lifetime: dt.timedelta) -> None:
        self.ca = ca
        self.zone = zone
        self.lifetime = lifetime
        self.chain_pem = ca.chain_pem  # encoded once

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        scope: str,
        replacing: x509.Certificate | None = None,  # nothing to tell the embedded CA
    ) -> Issued:
        certified = names.certificate_names(scope, self.zone)
        leaf = self.ca.issue(csr.public_key(), certified, self.lifetime)  # type: ignore[arg-type]
        return Issued(leaf=leaf, chain_pem=self.chain_pem)

    def renewal_advice(self, leaf: x509.Certificate) -> RenewalAdvice:
        return NO_ADVICE  # the embedded CA never pulls a renewal forward
