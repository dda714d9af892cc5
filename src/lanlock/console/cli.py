"""``lanlock console …``: serve the customer's database and its IoT app, and its admin commands."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from lanlock import defaults
from lanlock.config import RoleGroup, action_flag, default_data_dir, emit, json_flag
from lanlock.console import boxes as box_cards
from lanlock.console import pairing, record, server
from lanlock.console.server import ConsoleSettings, open_console
from lanlock.masking import masked_code
from lanlock.names import InvalidName
from lanlock.passwords import PASSWORD_FILE
from lanlock.store import Store, StoreConfigError
from lanlock.store.types import utcnow


def console_options(command: Any) -> Any:
    command = click.option(
        "--store",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the console's store [default: sqlite in the data folder]",
    )(command)
    return click.option(
        "--data",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="the console's data folder (admin password, default store) "
        "[default: the user's data folder]/lanlock/console",
    )(command)


def first_start_note(data_dir: Path) -> str:
    # Never the password itself: what a server prints lands in journals and container logs.
    return (
        "First start of this console. Its admin password is in "
        f"{data_dir / PASSWORD_FILE} (readable by this user only); "
        "`lanlock console password` shows it."
    )


def settings_from(data: Path | None, store: str | None, **kw: Any) -> ConsoleSettings:
    return ConsoleSettings(data_dir=data or default_data_dir("console"), store_url=store, **kw)


def _open(data: Path | None, store: str | None) -> tuple[Store, ConsoleSettings]:
    settings = settings_from(data, store)
    opened, made = open_console(settings)
    if made:
        click.echo(first_start_note(settings.data_dir), err=True)  # stdout: the command's data
    return opened, settings


@click.group(
    cls=RoleGroup,
    operator_errors=(StoreConfigError, InvalidName),
    store_errors=(SQLAlchemyError,),
)
def console() -> None:
    """The customer's database and its IoT app: pairs boxes and shows their HTTPS state."""


@console.command()
@console_options
@click.option("--host", default=defaults.LOOPBACK, show_default=True, help="address to listen on")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=defaults.CONSOLE_PORT,
    show_default=True,
    help="port to listen on",
)
@click.option(
    "--public-url",
    default=None,
    metavar="URL",
    help="the URL boxes and browsers reach the console at, put in pairing links "
    "[default: http://HOST:PORT]",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="serve HTTPS with this certificate chain (PEM); the session cookie is then Secure",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="the private key of --tls-cert (PEM)",
)
def serve(data: Path | None, store: str | None, **kw: Any) -> None:
    """Serve the IoT app (pages for the admin) and the boxes' API (pairing, status reports)."""
    if bool(kw["tls_cert"]) != bool(kw["tls_key"]):
        raise click.UsageError("--tls-cert and --tls-key go together")
    settings = settings_from(data, store, **kw)
    try:
        url = settings.url
    except record.SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--public-url") from None
    opened, made = open_console(settings)
    if made:
        click.echo(first_start_note(settings.data_dir))
    if settings.listens_everywhere and not settings.public_url:
        click.echo(f"warning: give --public-url: boxes cannot reach {url}", err=True)
    click.echo(f"lanlock console on {url}")
    server.serve(settings, opened)


@console.command()
@console_options
@click.option("--name", default=None, help="a name for the box that uses the link")
@json_flag
def pair(data: Path | None, store: str | None, name: str | None, as_json: bool) -> None:
    """Print a one-time pairing link (15 minutes) for `lanlock box connect LINK`."""
    opened, _ = _open(data, store)
    try:
        link = pairing.new_link(opened, name)
    except record.SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    emit(link.as_dict(), as_json, link.url)
    if not as_json:
        click.echo(
            f"valid once, until {link.expires_at:%Y-%m-%d %H:%M} UTC; "
            "on the box: lanlock box connect LINK",
            err=True,
        )
    if not record.load(opened).enterprise_code:
        click.echo(f"note: {pairing.NO_SUBSCRIPTION} (lanlock console settings --code)", err=True)


@console.command()
@console_options
@click.option("--code", default=None, help="the subscription (contract) code handed to boxes")
@click.option(
    "--cloud", "cloud_url", default=None, help="the cloud's URL handed to boxes ('' clears)"
)
@json_flag
def settings(
    data: Path | None, store: str | None, code: str | None, cloud_url: str | None, as_json: bool
) -> None:
    """Show the database UUID and settings; set the subscription code or the cloud URL."""
    opened, _ = _open(data, store)
    try:
        current = record.update_settings(opened, code, cloud_url)
    except record.SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    shown = {
        "db_uuid": current.db_uuid,
        "code_masked": masked_code(current.enterprise_code) or None,
        "cloud_url": current.cloud_url,
        "public_url": pairing.console_url(current),
    }
    emit(
        shown,
        as_json,
        f"database UUID: {shown['db_uuid']}\n"
        f"subscription code: {shown['code_masked'] or '(not set)'}\n"
        f"cloud URL: {shown['cloud_url'] or '(the boxes own)'}\n"
        f"console URL: {shown['public_url']}",
    )


@console.command("boxes")
@console_options
@json_flag
def list_boxes(data: Path | None, store: str | None, as_json: bool) -> None:
    """List the paired boxes: state or error code, HTTPS URL, validity, last report."""
    # A box whose certificate runs out unrenewed (lanlock.console.expiry) ends its line with
    # "! <summary>"; its JSON carries "warning" (null otherwise).
    opened, _ = _open(data, store)
    cards = box_cards.cards(opened)
    now = utcnow()  # one moment for the whole list
    rows = [card.as_dict(now) | {"meaning": (card.help or {}).get("meaning")} for card in cards]
    emit(rows, as_json, "\n".join(_box_line(card, now) for card in cards) or "no boxes")


def _box_line(c: box_cards.BoxCard, now: dt.datetime) -> str:
    line = (
        f"{c.box_id}  {c.name}  {'removing' if c.removed else c.state}"
        f"{'  ' + c.help['code'] if c.help else ''}"
        f"  {' '.join(c.urls) or '-'}  until {c.not_after.isoformat() if c.not_after else '-'}"
        f"  seen {c.last_seen_at.isoformat(timespec='seconds')}"
    )
    warning = c.warning(now)
    return f"{line}  ! {warning.summary}" if warning else line


@console.command()
@console_options
@action_flag("--reset", help="make a new password (the old one stops working)")
def password(data: Path | None, store: str | None, reset: bool) -> None:
    """Show the admin password of the console's pages (or make a new one)."""
    opened, settings = _open(data, store)
    current, made = record.show_password(opened, settings.data_dir, reset)
    click.echo(current)
    if made:
        click.echo("a new admin password: the old one and every login session ended", err=True)
