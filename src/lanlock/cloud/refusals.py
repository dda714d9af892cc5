"""How a step of the x509 request says no (see :mod:`lanlock.cloud.x509`, which answers them)."""

from __future__ import annotations


class Refused(Exception):
    """Eligibility said no: answered as HTTP 200 with ``{"error": {code, message}}``."""

    def __init__(self, code: str, detail: str | None = None, **extra: str) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra


class Limited(Exception):
    """Too many failures from this network or against this database: 429 with Retry-After."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after
