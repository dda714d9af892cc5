"""``lanlock dns …``: the IoT zone's authoritative DNS server."""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import SQLAlchemyError

from lanlock import defaults, names
from lanlock.config import RoleGroup, default_data_dir, zone_option
from lanlock.dns import server
from lanlock.dns.challenges import SchemaMissing
from lanlock.dns.worker import TcpLimits, WorkerSettings
from lanlock.dns.zone import (
    Zone,
    ZoneError,
    ZoneSettings,
    nameservers_from,
    parse_address,
    parse_nameserver,
)
from lanlock.store import StoreConfigError
from lanlock.supervisor import PortInUse

TCP_DEFAULTS = TcpLimits()


def default_store() -> str:
    """The cloud's default store: the cloud publishes the challenges that the DNS answers."""
    return f"sqlite:///{default_data_dir('cloud') / 'cloud.db'}"


@click.group(
    cls=RoleGroup,
    operator_errors=(StoreConfigError, names.InvalidName, SchemaMissing),
    store_errors=(SQLAlchemyError,),
)
def dns() -> None:
    """The IoT zone's authoritative DNS server."""


@dns.command()
@click.option(
    "--store",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL of the store shared with the cloud [default: the cloud's default store]",
)
@zone_option(default=defaults.ZONE, show_default=True)
@click.option("--host", default=defaults.LOOPBACK, show_default=True, help="address to listen on")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=defaults.DNS_PORT,
    show_default=True,
    help="UDP and TCP port",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=0,
    help="worker processes [default: one per core; always 1 without Linux's SO_REUSEPORT]",
)
@click.option(
    "--ns",
    "nameservers",
    multiple=True,
    metavar="NAME=IP",
    help="a name server of the zone and its address (glue); repeat for more names and "
    "addresses [default: ns1.<zone>=127.0.0.1]",
)
@click.option(
    "--caa-issuer",
    multiple=True,
    default=[defaults.CAA_ISSUER],
    show_default=True,
    metavar="DOMAIN",
    help="the CA allowed to issue for the zone (CAA issue and issuewild), to the cloud's ACME "
    "accounts only once the store holds one; repeat for more",
)
@click.option(
    "--site-address",
    multiple=True,
    metavar="IP",
    help="A/AAAA of the zone's apex (the vendor's site); repeat for more",
)
@click.option(
    "--hostmaster",
    default=None,
    metavar="NAME",
    help="the SOA's contact in DNS form (hostmaster.example.com) [default: hostmaster.<zone>]",
)
@click.option(
    "--allow-public",
    is_flag=True,
    help="also answer names of public addresses (by default only LAN ranges)",
)
@click.option(
    "--rrl",
    type=click.FloatRange(0),
    default=0.0,
    metavar="N",
    help="response-rate limit: UDP answers a second per source /24 or /56, per worker; 0: off",
)
@click.option(
    "--tcp-idle-timeout",
    type=click.FloatRange(0.1),
    default=TCP_DEFAULTS.idle_timeout,
    show_default=True,
    metavar="SECONDS",
    help="close a TCP connection without a query for this long",
)
@click.option(
    "--tcp-max-lifetime",
    type=click.FloatRange(0.1),
    default=TCP_DEFAULTS.lifetime,
    show_default=True,
    metavar="SECONDS",
    help="close a TCP connection this long after it opened, however busy",
)
@click.option(
    "--tcp-max-queries",
    type=click.IntRange(1),
    default=TCP_DEFAULTS.max_queries,
    show_default=True,
    metavar="N",
    help="close a TCP connection after answering this many queries on it",
)
@click.option(
    "--tcp-max-connections",
    type=click.IntRange(1),
    default=TCP_DEFAULTS.max_connections,
    show_default=True,
    metavar="N",
    help="open TCP connections per worker",
)
@click.option(
    "--tcp-max-per-source",
    type=click.IntRange(1),
    default=TCP_DEFAULTS.max_per_source,
    show_default=True,
    metavar="N",
    help="open TCP connections per worker from one host (IPv4 address, IPv6 /64)",
)
def serve(
    store: str | None,
    zone: str,
    host: str,
    port: int,
    workers: int,
    nameservers: tuple[str, ...],
    caa_issuer: tuple[str, ...],
    site_address: tuple[str, ...],
    hostmaster: str | None,
    allow_public: bool,
    rrl: float,
    tcp_idle_timeout: float,
    tcp_max_lifetime: float,
    tcp_max_queries: int,
    tcp_max_connections: int,
    tcp_max_per_source: int,
) -> None:
    """Answer for the zone over UDP and TCP until SIGTERM or Ctrl-C."""
    try:
        zone_settings = zone_settings_from(
            zone, nameservers, caa_issuer, site_address, hostmaster, allow_public
        )
        Zone(zone_settings)  # every check of the settings, before anything starts
    except (ZoneError, names.InvalidName) as exc:
        raise click.UsageError(str(exc)) from None
    settings = server.ServerSettings(
        worker=WorkerSettings(
            zone=zone_settings,
            store_url=store or default_store(),
            tcp=TcpLimits(
                idle_timeout=tcp_idle_timeout,
                lifetime=tcp_max_lifetime,
                max_queries=tcp_max_queries,
                max_connections=tcp_max_connections,
                max_per_source=tcp_max_per_source,
            ),
            rrl_rate=rrl,
        ),
        host=host,
        port=port,
        workers=workers,
    )
    try:
        status = server.serve(settings)
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(status)


def zone_settings_from(
    zone: str,
    nameservers: tuple[str, ...],
    caa_issuers: tuple[str, ...],
    site_addresses: tuple[str, ...],
    hostmaster: str | None,
    allow_public: bool,
) -> ZoneSettings:
    zone = names.normalize_zone(zone)
    return ZoneSettings(
        zone=zone,
        nameservers=nameservers_from(parse_nameserver(text) for text in nameservers),
        caa_issuers=tuple(names.normalize_zone(issuer) for issuer in caa_issuers),
        site_addresses=tuple(parse_address(text, "--site-address") for text in site_addresses),
        hostmaster=names.normalize_zone(hostmaster) if hostmaster else "",
        allow_public=allow_public,
    )
