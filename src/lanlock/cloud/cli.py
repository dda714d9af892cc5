"""``lanlock cloud …``: serve the API, and the operator's commands on the store."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from lanlock import defaults
from lanlock.cloud import admin, authority, ca_budget
from lanlock.cloud.app import MAX_IN_FLIGHT, THREADS, THREADS_ALONE
from lanlock.cloud.authority import AuthorityError
from lanlock.cloud.issuers.acme import ProfileUnknown
from lanlock.cloud.secret import SecretKeyError, load_or_create_secret
from lanlock.cloud.server import CloudSettings, open_store
from lanlock.cloud.throttle import IssuanceBudget
from lanlock.config import (
    Duration,
    RoleGroup,
    default_data_dir,
    emit,
    json_flag,
    zone_option,
)
from lanlock.names import InvalidName
from lanlock.store import StoreConfigError
from lanlock.supervisor import PortInUse


def store_options(command: Any) -> Any:
    command = click.option(
        "--store",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the store [default: sqlite in the data folder]",
    )(command)
    return click.option(
        "--data",
        type=click.Path(path_type=Path),
        default=None,
        help="the cloud's data folder (secret key, default store)",
    )(command)


def _ca_limits(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ca_budget.parse_limit_setting(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return values


def settings_from(data: Path | None, store: str | None, **kw: Any) -> CloudSettings:
    return CloudSettings(data_dir=data or default_data_dir("cloud"), store_url=store, **kw)


@click.group(
    cls=RoleGroup,
    # Errors an operator can fix, turned into one clear line instead of a traceback.
    operator_errors=(
        admin.AdminError,
        SecretKeyError,
        AuthorityError,
        ProfileUnknown,
        InvalidName,
        StoreConfigError,
        PortInUse,
    ),
    store_errors=(SQLAlchemyError,),
)
def cloud() -> None:
    """The vendor's cloud: subscriptions, eligibility, certificates.

    The CA's keys are encrypted in the store with the cloud's secret key: LANLOCK_SECRET_KEY,
    the same for every replica of one store, or else the file secret.key in the data folder
    (made at first start).
    """


@cloud.command()
@store_options
@click.option("--host", default=defaults.LOOPBACK, show_default=True, help="address to listen on")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=defaults.CLOUD_PORT,
    show_default=True,
    help="port to listen on",
)
@zone_option(default=defaults.ZONE, show_default=True)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="serve HTTPS with this certificate chain (PEM)",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the private key of --tls-cert (PEM)",
)
@click.option(
    "--lifetime",
    type=Duration(dt.timedelta(minutes=1), dt.timedelta(days=397)),
    default=f"{defaults.CERTIFICATE_LIFETIME_DAYS}d",
    show_default=True,
    help="lifetime of certificates from the embedded CA, like 90d, 47d, 6d or 10m (boxes "
    "renew at two thirds of it)",
)
@click.option(
    "--failure-limit",
    type=click.IntRange(1),
    default=defaults.FAILURE_LIMIT,
    show_default=True,
    help="failed credential attempts per source / database before 429",
)
@click.option(
    "--failure-window",
    type=click.FloatRange(1),
    default=defaults.FAILURE_WINDOW,
    show_default=True,
    help="seconds over which failures are counted",
)
@click.option(
    "--issuer",
    type=click.Choice(["local", "acme"]),
    default=defaults.ISSUER,
    show_default=True,
    help="where certificates come from: the embedded CA, or an ACME CA",
)
@click.option("--acme-directory", default=None, metavar="URL", help="the ACME CA's directory URL")
@click.option(
    "--acme-ca-bundle",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA bundle for the ACME CA's HTTPS [default: system store]",
)
@click.option("--acme-email", default=None, help="contact address of the ACME account")
@click.option(
    "--acme-profile",
    default=None,
    metavar="NAME",
    help="the ACME profile to order certificates under (e.g. Let's Encrypt's shortlived or "
    "tlsserver); refused at start unless the CA's directory offers it [default: the CA's own]",
)
@click.option(
    "--ca-limit",
    multiple=True,
    metavar="NAME=COUNT/PERIOD",
    callback=lambda _c, _p, v: _ca_limits(v),
    help="one of the ACME CA's rate limits the cloud keeps to: certificates_per_domain, "
    "orders_per_account or duplicates, as 50/7d, or NAME=off; repeatable [default: Let's "
    "Encrypt's published limits for its directories, none for another CA]",
)
@click.option(
    "--zone-public-suffix",
    is_flag=True,
    default=False,
    help="the zone is on the Public Suffix List: each <scope>.<zone> is a registered domain "
    "of its own for the CA's per-domain limit",
)
@click.option(
    "--zone-dns",
    multiple=True,
    metavar="HOST:PORT",
    callback=lambda _c, _p, v: tuple(_host_port(x) for x in v),
    help="the zone's authoritative servers, asked before answering a DNS-01 challenge "
    "[default: the zone's NS]; repeatable",
)
@click.option(
    "--metrics-token",
    default=None,
    metavar="TOKEN",
    help="serve /metrics to the bearer of this token; off without one (give it in the "
    "environment: a command line is visible to every user of the machine)",
)
@click.option(
    "--box-issuance-limit",
    type=click.IntRange(1),
    default=IssuanceBudget.per_box,
    show_default=True,
    help="new certificates one box may get per --issuance-window (reuse never counts)",
)
@click.option(
    "--subscription-issuance-factor",
    type=click.IntRange(1),
    default=IssuanceBudget.per_box_slot,
    show_default=True,
    help="new certificates a subscription may get per --issuance-window, per box it may have",
)
@click.option(
    "--issuance-window",
    type=click.FloatRange(60),
    default=IssuanceBudget.window,
    show_default=True,
    help="seconds over which new certificates are counted",
)
@click.option(
    "--audit-days",
    type=click.FloatRange(1),
    default=CloudSettings.audit_days,
    show_default=True,
    help="days the audit trail keeps a request's row",
)
@click.option(
    "--trusted-proxy",
    multiple=True,
    metavar="CIDR",
    callback=lambda _c, _p, v: tuple(_network(x) for x in v),
    help="a load balancer whose X-Forwarded-For names the client (failures are counted per "
    "client network); repeatable [default: none, the peer is the client]",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=0,
    help="worker processes sharing the port, each a whole cloud on the store "
    "[default: 0, one per core]",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1),
    default=MAX_IN_FLIGHT,
    show_default=True,
    help="x509 requests a worker works on at once; past that it answers 503 with a "
    "Retry-After spread over 10 s at once instead of queueing",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=None,
    show_default=f"{THREADS_ALONE} with SQLite and the embedded CA, else {THREADS}",
    help="of a worker's requests in progress, how many do their blocking work at once "
    "(a worker is one core: more threads only fight over it)",
)
def serve(
    data: Path | None, store: str | None, tls_cert: Path | None, tls_key: Path | None, **kw: Any
) -> None:
    """Serve the HTTP API (POST /iot/x509, /healthz, /metrics)."""
    from lanlock.cloud.server import serve as run

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if kw["issuer"] == "acme" and not kw["acme_directory"]:
        raise click.UsageError("--issuer acme needs --acme-directory URL (the CA's directory)")
    run(settings_from(data, store, tls_cert=tls_cert, tls_key=tls_key, **kw))


@cloud.command()
@store_options
@json_flag
def migrate(data: Path | None, store: str | None, as_json: bool) -> None:
    """Bring the store's schema to this version's newest (serve does it at start too).

    Run it before the first `lanlock dns serve` on a new store, and after an upgrade when the
    DNS starts before the cloud: the DNS reads the cloud's schema and never changes it.
    """
    opened = _store(data, store)
    revision = opened.revision()
    emit({"revision": revision}, as_json, f"the store's schema is at revision {revision}")


@cloud.group()
def database() -> None:
    """Customers' databases."""


@database.command("add")
@click.argument("uuid")
@click.option("--name", default="", help="a name for people")
@click.option(
    "--kind",
    type=click.Choice(["production", "staging", "development", "duplicate"]),
    default="production",
    show_default=True,
    help="what the database is for (only production databases get certificates)",
)
@store_options
@json_flag
def database_add(
    uuid: str, name: str, kind: str, data: Path | None, store: str | None, as_json: bool
) -> None:
    """Add a database."""
    row = admin.add_database(_store(data, store), uuid, name, kind)
    emit(row, as_json, f"database {row['uuid']} added ({row['kind']})")


@database.command("list")
@store_options
@json_flag
def database_list(data: Path | None, store: str | None, as_json: bool) -> None:
    """List databases with their subscriptions (codes masked)."""
    rows = admin.list_databases(_store(data, store))
    lines = [
        f"{r['uuid']}  {r['kind']:<11}  {r['name']}  "
        + ", ".join(
            f"{s['code']} {s['state']} ({s['iot_boxes']} boxes)" for s in r["subscriptions"]
        )
        for r in rows
    ]
    emit(rows, as_json, "\n".join(lines) or "no databases")


@cloud.group()
def subscription() -> None:
    """Subscriptions (contracts) and their IoT box lines."""


STATES = click.Choice(["in_progress", "draft", "paused", "closed"])


@subscription.command("add")
@click.argument("code")
@click.option("--database", "database_uuid", required=True, help="the database's UUID")
@click.option(
    "--state", type=STATES, default="in_progress", show_default=True, help="the contract's state"
)
@click.option(
    "--iot-boxes",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="quantity of the IoT box line (0: no line)",
)
@store_options
@json_flag
def subscription_add(
    code: str,
    database_uuid: str,
    state: str,
    iot_boxes: int,
    data: Path | None,
    store: str | None,
    as_json: bool,
) -> None:
    """Add a subscription to a database."""
    row = admin.add_subscription(_store(data, store), code, database_uuid, state, iot_boxes)
    emit(
        row,
        as_json,
        f"subscription {row['code']} added: {row['state']}, {row['iot_boxes']} IoT boxes",
    )


@subscription.command("set")
@click.argument("code")
@click.option("--state", type=STATES, default=None, help="the contract's new state")
@click.option(
    "--iot-boxes", type=click.IntRange(0), default=None, help="the new quantity of IoT boxes"
)
@store_options
@json_flag
def subscription_set(
    code: str,
    state: str | None,
    iot_boxes: int | None,
    data: Path | None,
    store: str | None,
    as_json: bool,
) -> None:
    """Change a subscription's state or its IoT box quantity."""
    row = admin.set_subscription(_store(data, store), code, state, iot_boxes)
    emit(row, as_json, f"subscription {row['code']}: {row['state']}, {row['iot_boxes']} IoT boxes")


@cloud.group()
def box() -> None:
    """Registered boxes."""


@box.command("list")
@store_options
@json_flag
def box_list(data: Path | None, store: str | None, as_json: bool) -> None:
    """List registered boxes."""
    rows = admin.list_boxes(_store(data, store))
    lines = [
        f"{r['box_id']}  {r['scope']}  {r['state']:<7}  {r['database']}  "
        f"last seen {r['last_seen_at']}  cert until {r['certificate_not_after']}"
        for r in rows
    ]
    emit(rows, as_json, "\n".join(lines) or "no boxes")


@box.command("revoke")
@click.argument("box_id")
@store_options
@json_flag
def box_revoke(box_id: str, data: Path | None, store: str | None, as_json: bool) -> None:
    """Refuse every future request of a box (its slot is freed)."""
    row = admin.set_box_state(_store(data, store), box_id, "revoked")
    emit(row, as_json, f"box {row['box_id']} revoked")


@cloud.group()
def ca() -> None:
    """The embedded certificate authority."""


@ca.command("root")
@store_options
@zone_option(
    default=None,
    help="the IoT zone the store's CA must be for; without it, the CA's own zone (and "
    f"{defaults.ZONE} for a CA made now)",
)
@json_flag
def ca_root(data: Path | None, store: str | None, zone: str | None, as_json: bool) -> None:
    """Print the root certificate (PEM) that browsers and boxes trust; made if missing."""
    settings = settings_from(data, store)
    opened = open_store(settings)
    root = authority.root_certificate(
        opened, load_or_create_secret(settings.data_dir / "secret.key"), zone
    )
    emit(root._asdict(), as_json, root.root_pem.rstrip())


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an address or a CIDR like 10.0.0.0/8") from None


def _store(data: Path | None, store: str | None) -> Any:
    return open_store(settings_from(data, store))
