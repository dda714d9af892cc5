"""Putting the cloud together: settings → store → secret → CA → issuer → service → uvicorn."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lanlock import defaults, names
from lanlock.cloud.app import create_app
from lanlock.cloud.authority import load_or_create_authority
from lanlock.cloud.issuers import Issuer
from lanlock.cloud.issuers.acme import AcmeIssuer, AcmeSettings
from lanlock.cloud.issuers.local import LocalIssuer
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import cloud_store
from lanlock.cloud.secret import load_or_create_secret
from lanlock.cloud.throttle import IssuanceBudget
from lanlock.cloud.x509 import X509Service, X509Settings
from lanlock.store import Store
from lanlock.web_common import run_server


@dataclass
class CloudSettings:
    data_dir: Path
    store_url: str | None = None
    zone: str = defaults.ZONE
    host: str = defaults.LOOPBACK
    port: int = defaults.CLOUD_PORT
    lifetime_days: int = defaults.CERTIFICATE_LIFETIME_DAYS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    failure_limit: int = defaults.FAILURE_LIMIT
    failure_window: float = defaults.FAILURE_WINDOW
    issuer: str = defaults.ISSUER
    acme_directory: str | None = None
    acme_ca_bundle: str | None = None
    acme_email: str | None = None
    zone_dns: tuple[tuple[str, int], ...] = ()
    lease_seconds: float = defaults.LEASE_SECONDS
    metrics_token: str | None = None
    trusted_proxy: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    box_issuance_limit: int = IssuanceBudget.per_box
    subscription_issuance_factor: int = IssuanceBudget.per_box_slot
    issuance_window: float = IssuanceBudget.window
    audit_days: float = X509Settings.audit_days

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
    issuer = make_issuer(settings, store, zone, secret, metrics)
    return X509Service(
        store,
        issuer,
        X509Settings(
            zone=zone,
            failure_limit=settings.failure_limit,
            failure_window=settings.failure_window,
            lease_seconds=settings.lease_seconds,
            audit_days=settings.audit_days,
            issuance=IssuanceBudget(
                per_box=settings.box_issuance_limit,
                per_box_slot=settings.subscription_issuance_factor,
                window=settings.issuance_window,
            ),
        ),
        metrics,
    )


def make_issuer(
    settings: CloudSettings, store: Store, zone: str, secret: bytes, metrics: CloudMetrics
) -> Issuer:
    if settings.issuer == "acme":
        if not settings.acme_directory:
            raise ValueError("--issuer acme needs --acme-directory URL (the CA's directory)")
        return AcmeIssuer(
            store,
            AcmeSettings(
                directory_url=settings.acme_directory,
                zone_dns=settings.zone_dns,
                ca_bundle=settings.acme_ca_bundle,
                email=settings.acme_email,
            ),
            secret,
            zone,
            metrics,
        )
    ca = load_or_create_authority(store, zone, secret)
    return LocalIssuer(ca, zone, dt.timedelta(days=settings.lifetime_days))


def serve(settings: CloudSettings) -> None:
    app = create_app(build_service(settings), settings.metrics_token, settings.trusted_proxy)
    run_server(app, settings.host, settings.port, settings.tls_cert, settings.tls_key)
