"""The small interface every issuer implements (after certmagic's Issuer)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509


@dataclass(frozen=True)
class RenewalAdvice:
    """What a CA's renewal information (ACME ARI, RFC 9773) says of one certificate."""

    renew_after: dt.datetime | None = None  # a time drawn in the CA's suggested window
    next_check: dt.datetime | None = None  # when to ask again (its Retry-After); None: never


NO_ADVICE = RenewalAdvice()


@dataclass(frozen=True)
class Issued:
    leaf: x509.Certificate
    chain_pem: str  # the intermediates, PEM, leaf excluded
    advice: RenewalAdvice = NO_ADVICE  # the CA's own renewal advice (ACME ARI), if any


class IssuanceError(RuntimeError):
    """The CA refused or failed for this request (the box gets ``issuance_failed``)."""


class IssuerUnavailable(RuntimeError):
    """The CA cannot be reached right now (the box gets 503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CARateLimited(IssuerUnavailable):
    """The CA answered ``rateLimited`` (RFC 8555 §6.7): nothing of that limit is ordered
    before its ``Retry-After`` (:meth:`lanlock.cloud.ca_budget.CABudget.obey`)."""


class Issuer(Protocol):
    name: str
    # True when the CA insists that the CSR name exactly what it certifies (every ACME CA does).
    requires_csr_names: bool
    # True when an order names the certificate it replaces (ACME ARI's ``replaces``), so the
    # caller looks that certificate up.
    names_replaced: bool

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        scope: str,
        replacing: x509.Certificate | None = None,
    ) -> Issued:
        """A certificate for the scope's two names with the CSR's public key, or an exception
        above. The names come from ``scope`` alone, never from the CSR: the CSR is trusted for
        its key only (and has passed :mod:`lanlock.cloud.csr_policy`). ``replacing``: the
        scope's newest certificate that has not expired, which this one replaces."""
        ...

    def renewal_advice(self, leaf: x509.Certificate) -> RenewalAdvice:
        """The CA's renewal information of ``leaf`` now (NO_ADVICE when it offers none)."""
        ...
