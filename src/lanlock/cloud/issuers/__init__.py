"""Issuers: where the cloud's certificates come from (the embedded CA, or an ACME CA)."""

from lanlock.cloud.issuers.base import (
    CARateLimited,
    IssuanceError,
    Issued,
    Issuer,
    IssuerUnavailable,
)

__all__ = ["CARateLimited", "IssuanceError", "Issued", "Issuer", "IssuerUnavailable"]
