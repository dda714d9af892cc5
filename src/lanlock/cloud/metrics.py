"""Prometheus metrics of the cloud, each on the app's own registry (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class CloudMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lanlock_x509_requests",
            "x509 requests by outcome (issued, reused, refused, "
            "malformed, unauthorized, limited, unavailable) and code",
            ["outcome", "code"],
            registry=self.registry,
        )
        self.issuance_seconds = Histogram(
            "lanlock_issuance_seconds",
            "Time to obtain a new certificate from the issuer",
            ["issuer"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120),
        )
        self.issued = Counter(
            "lanlock_certificates_issued",
            "Certificates issued",
            ["issuer"],
            registry=self.registry,
        )

        self.audit_dropped = Counter(
            "lanlock_audit_dropped",
            "Unauthenticated requests (400, 401) not written to the audit trail, over its cap",
            registry=self.registry,
        )
        self.bad_nonce_retries = Counter(
            "lanlock_acme_bad_nonce_retries",
            "Requests to the ACME CA retried after badNonce",
            registry=self.registry,
        )

    def count(self, outcome: str, code: str | None = None) -> None:
        self.requests.labels(outcome=outcome, code=code or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
