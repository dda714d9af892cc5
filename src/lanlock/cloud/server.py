"""Putting the cloud together: settings → store → secret → CA → issuer → service → uvicorn.

With ``workers`` above one, the parent migrates the store and makes the CA once, binds the
listening socket, and supervises that many worker processes (:mod:`lanlock.supervisor`), each
a whole cloud on the shared socket: its own store pool and its own copy of the CA key. What must
be shared between them is already shared through the store (nonces, failure counts, leases,
quotas), as between replicas. Their metrics are added up across workers by
``prometheus_client``'s multiprocess mode, in a private folder that lives as long as the parent.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lanlock import defaults, names
from lanlock.cloud.app import MAX_IN_FLIGHT, THREADS, THREADS_ALONE, Admission, create_app
from lanlock.cloud.authority import load_or_create_authority
from lanlock.cloud.ca_budget import BudgetCollector, CABudget, default_limits, limits_with
from lanlock.cloud.expiry import ExpiryCollector
from lanlock.cloud.issuers import Issuer
from lanlock.cloud.issuers.acme import AcmeIssuer, AcmeSettings, check_profile
from lanlock.cloud.issuers.local import LocalIssuer
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import cloud_store
from lanlock.cloud.secret import load_or_create_secret
from lanlock.cloud.throttle import IssuanceBudget
from lanlock.cloud.x509 import X509Service, X509Settings
from lanlock.store import Store
from lanlock.supervisor import (
    SPREADS_OVER_SOCKETS,
    Supervisor,
    bind_per_worker,
    stop_when_orphaned,
    usable_cores,
)
from lanlock.web_common import run_server

log = logging.getLogger(__name__)
LISTEN_BACKLOG = 2048  # a fleet's herd arrives at once: let the kernel queue it


@dataclass
class CloudSettings:
    data_dir: Path
    store_url: str | None = None
    zone: str = defaults.ZONE
    host: str = defaults.LOOPBACK
    port: int = defaults.CLOUD_PORT
    lifetime: dt.timedelta = dt.timedelta(days=defaults.CERTIFICATE_LIFETIME_DAYS)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    failure_limit: int = defaults.FAILURE_LIMIT
    failure_window: float = defaults.FAILURE_WINDOW
    issuer: str = defaults.ISSUER
    acme_directory: str | None = None
    acme_ca_bundle: str | None = None
    acme_email: str | None = None
    acme_profile: str | None = None
    ca_limit: tuple[str, ...] = ()  # --ca-limit NAME=COUNT/PERIOD|NAME=off, over the defaults
    zone_public_suffix: bool = False
    zone_dns: tuple[tuple[str, int], ...] = ()
    lease_seconds: float = defaults.LEASE_SECONDS
    metrics_token: str | None = None
    trusted_proxy: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    box_issuance_limit: int = IssuanceBudget.per_box
    subscription_issuance_factor: int = IssuanceBudget.per_box_slot
    issuance_window: float = IssuanceBudget.window
    audit_days: float = X509Settings.audit_days
    workers: int = 0  # 0: one per core
    max_in_flight: int = MAX_IN_FLIGHT
    threads: int | None = None  # None: one with SQLite and the embedded CA, else THREADS

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'cloud.db'}"


def open_store(settings: CloudSettings) -> Store:
    # The folder holds the secret key that opens the CA's keys: private from the start.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = cloud_store(settings.store, pool_size=20)
    store.migrate()
    return store


def build_service(settings: CloudSettings, store: Store | None = None) -> X509Service:
    zone = names.normalize_zone(settings.zone)
    store = store or open_store(settings)
    secret = load_or_create_secret(settings.data_dir / "secret.key")
    metrics = CloudMetrics()
    metrics.add_collector(ExpiryCollector(store))
    issuer = make_issuer(settings, store, zone, secret, metrics)
    budget = ca_budget_of(settings, zone)
    if budget is not None:
        metrics.add_collector(BudgetCollector(store, budget))
    return X509Service(
        store,
        issuer,
        X509Settings(
            zone=zone,
            failure_limit=settings.failure_limit,
            failure_window=settings.failure_window,
            lease_seconds=settings.lease_seconds,
            audit_days=settings.audit_days,
            ca_budget=budget,
            issuance=IssuanceBudget(
                per_box=settings.box_issuance_limit,
                per_box_slot=settings.subscription_issuance_factor,
                window=settings.issuance_window,
            ),
        ),
        metrics,
    )


def ca_budget_of(settings: CloudSettings, zone: str) -> CABudget | None:
    """The CA's rate limits the cloud keeps to: Let's Encrypt's for its directories, changed by
    ``--ca-limit``. An ACME CA always has a budget, if only to hold what its ``rateLimited``
    answers ask; the embedded CA has none unless limits are given."""
    directory = settings.acme_directory if settings.issuer == "acme" else None
    limits = limits_with(default_limits(directory), settings.ca_limit)
    if not limits and directory is None:
        return None
    return CABudget(limits, zone, directory or "embedded", settings.zone_public_suffix)


def make_issuer(
    settings: CloudSettings, store: Store, zone: str, secret: bytes, metrics: CloudMetrics
) -> Issuer:
    if settings.issuer == "acme":
        return AcmeIssuer(store, acme_settings(settings), secret, zone, metrics)
    ca = load_or_create_authority(store, zone, secret)
    return LocalIssuer(ca, zone, settings.lifetime)


def acme_settings(settings: CloudSettings) -> AcmeSettings:
    if not settings.acme_directory:
        raise ValueError("--issuer acme needs --acme-directory URL (the CA's directory)")
    return AcmeSettings(
        directory_url=settings.acme_directory,
        zone_dns=settings.zone_dns,
        ca_bundle=settings.acme_ca_bundle,
        email=settings.acme_email,
        profile=settings.acme_profile,
    )


def serve(settings: CloudSettings) -> None:
    """Serve until SIGTERM or SIGINT, in one process or under a supervisor of ``workers``."""
    if settings.issuer == "acme":
        check_profile(acme_settings(settings))  # before anything starts
    count = settings.workers or usable_cores()
    if count == 1:
        run_worker(settings)
        return
    prepare(settings)
    sockets = listening_sockets(settings.host, settings.port, count)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    with tempfile.TemporaryDirectory(prefix="lanlock-cloud-metrics-") as metrics_dir:
        # Read by prometheus_client when a worker imports it: spawned workers start afresh.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        log.info("cloud on %s port %d, %d workers", settings.host, settings.port, count)
        supervisor = Supervisor(
            run_worker,
            [(settings, sock) for sock in sockets],
            "lanlock-cloud-worker",
            stop_grace=15.0,  # uvicorn gives requests in flight 10 s
            start_method="spawn",
        )
        status = supervisor.run()
    for sock in sockets:
        sock.close()
    if status:
        sys.exit(status)


def run_worker(settings: CloudSettings, sock: socket.socket | None = None) -> None:
    if sock is not None:
        stop_when_orphaned()
    service = build_service(settings)
    service.sweep_in_background()
    app = create_app(
        service,
        settings.metrics_token,
        settings.trusted_proxy,
        Admission(
            settings.max_in_flight,
            threads_for(settings, service),
            together=service.store.is_sqlite,  # with one thread (see Admission)
        ),
    )
    run_server(app, settings.host, settings.port, settings.tls_cert, settings.tls_key, sock)


def threads_for(settings: CloudSettings, service: X509Service) -> int:
    """``--threads``, or by default one where the work never waits on a network (SQLite and an
    instant issuer: the embedded CA), else :data:`THREADS` (see ``Admission``)."""
    if settings.threads is not None:
        return settings.threads
    instant = getattr(service.issuer, "instant", False)
    return THREADS_ALONE if service.store.is_sqlite and instant else THREADS


def prepare(settings: CloudSettings) -> None:
    """Migrate the store and make the secret and the CA once, before the workers start and
    would race to: building the service does exactly that (and starts nothing)."""
    build_service(settings).store.dispose()


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """A listening socket per worker on one port, where the kernel spreads connections over
    them; elsewhere one socket that every worker accepts from.

    Not one shared socket everywhere: whichever worker wakes first accepts, and with a load
    balancer's or a client's long-lived connections one of two workers took about nine in ten
    (bench/cloud_x509.py, --workers 2: 85 % and 9 % of a core)."""
    spread = count if SPREADS_OVER_SOCKETS else 1
    sockets = [
        group[0]
        for group in bind_per_worker(host, port, spread, (socket.SOCK_STREAM,), LISTEN_BACKLOG)
    ]
    return sockets if spread == count else sockets * count
