"""Prometheus metrics of the cloud, each on the app's own registry (no global state)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.registry import Collector


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
        self.shed = Counter(
            "lanlock_x509_shed",
            "x509 requests answered 503 at once because the worker was at --max-in-flight",
            registry=self.registry,
        )
        self.bad_nonce_retries = Counter(
            "lanlock_acme_bad_nonce_retries",
            "Requests to the ACME CA retried after badNonce",
            registry=self.registry,
        )

        self._collectors: list[Collector] = []

    def add_collector(self, collector: Collector) -> None:
        """A collector computed at each scrape (the fleet's expiry, from the store)."""
        self._collectors.append(collector)
        self.registry.register(collector)

    def count(self, outcome: str, code: str | None = None) -> None:
        self.requests.labels(outcome=outcome, code=code or "").inc()

    def render(self) -> bytes:
        """This process's metrics, or under ``--workers`` every worker's added up."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            for collector in self._collectors:
                registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)
