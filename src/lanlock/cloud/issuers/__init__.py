"""Issuers: where the cloud's certificates come from (the embedded CA, or an ACME CA)."""

from lanlock.cloud.issuers.base import IssuanceError, Issued, Issuer, IssuerUnavailable

__all__ = ["IssuanceError", "Issued", "Issuer", "IssuerUnavailable"]
