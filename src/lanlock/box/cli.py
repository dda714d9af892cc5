"""``lanlock box …``: the box's command line."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import click
import httpx

from lanlock import defaults, errors, names, passwords, pki, renewal
from lanlock.box import addresses
from lanlock.box.cloud_client import post_x509, x509_payload
from lanlock.box.identity import IdentityError, load_or_create_device_key
from lanlock.box.settings import (
    STATE_FILE,
    BoxConfig,
    BoxConfigError,
    change_config,
    load_config,
)
from lanlock.config import RoleGroup, action_flag, default_data_dir, json_flag
from lanlock.masking import masked_code

DATA_OPTION = click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the box's data folder [default: the user's data folder]/lanlock/box",
)


def data_dir(data: Path | None) -> Path:
    return data or default_data_dir("box")


@click.group(cls=RoleGroup, operator_errors=(IdentityError, BoxConfigError))
def box() -> None:
    """The IoT box: its identity and certificates."""


@box.command()
@DATA_OPTION
@click.option(
    "--cloud",
    "cloud_url",
    default=defaults.CLOUD_URL,
    show_default=True,
    help="the cloud's URL",
)
@click.option(
    "--cloud-ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA bundle that signs the cloud's TLS certificate [default: system store]",
)
@click.option("--db-uuid", required=True, help="the database UUID")
@click.option("--code", required=True, help="the subscription (contract) code")
@click.option(
    "--address",
    default=defaults.BOX_REQUEST_ADDRESS,
    show_default=True,
    help="the box's LAN address",
)
@json_flag
def request(
    data: Path | None,
    cloud_url: str,
    cloud_ca: str | None,
    db_uuid: str,
    code: str,
    address: str,
    as_json: bool,
) -> None:
    """Ask the cloud once for a certificate, and say what it answered.

    A diagnostic: the TLS key is made for this request and thrown away.
    """
    _check_cloud_url(cloud_url)
    device_key = load_or_create_device_key(data_dir(data))
    tls_key = pki.new_private_key()
    payload = x509_payload(device_key, db_uuid, code, pki.csr_pem(pki.build_csr(tls_key)), address)
    try:
        verify = ssl.create_default_context(cafile=cloud_ca) if cloud_ca else True
        with httpx.Client(verify=verify, timeout=30) as client:
            answer = post_x509(client, cloud_url, device_key, payload)
    except httpx.HTTPError as exc:
        _fail(errors.LOAD_REQUEST_EXCEPTION, None, f"{type(exc).__name__}: {exc}", as_json)
    if answer.status != 200:
        _fail(errors.status_code(answer.status), None, answer.message, as_json)
    if answer.result is None:
        _fail(errors.LOAD_REQUEST_NO_RESULT, answer.refusal_code, answer.message, as_json)
    result = answer.result
    leaf = pki.certificate_from_pem(result.x509_pem)
    if leaf.public_key() != tls_key.public_key():
        _fail(errors.LOAD_REQUEST_NO_RESULT, None, "the certificate is not for our key", as_json)
    url = names.https_url(address, result.scope, result.zone)
    shown = {
        "state": "valid",
        "code": None,
        "reason": None,
        "url": url,
        "not_after": result.not_after,
        "scope": result.scope,
        "box_id": payload["box_id"],
    }
    click.echo(
        json.dumps(shown, indent=2)
        if as_json
        else f"certificate for {result['subject_cn']} valid until {result['not_after']}\n"
        f"HTTPS URL: {url}"
    )


def _check_cloud_url(url: str) -> None:
    parsed = httpx.URL(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http" and parsed.host in ("127.0.0.1", "::1", "localhost"):
        return  # plain HTTP only to a loopback cloud (docs/design.md §3): development and tests
    raise click.UsageError(f"the cloud URL must be https:// (plain http only on loopback): {url}")


def _fail(code: str, reason: str | None, detail: str | None, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "state": "error",
                    "code": code,
                    "reason": reason,
                    "url": None,
                    "not_after": None,
                    "detail": detail,
                    "help": errors.describe(code, reason),
                },
                indent=2,
            )
        )
    else:
        click.echo(errors.render_text(code, reason), err=True)
        if detail and not (reason and detail == errors.refusal(reason).meaning):
            click.echo(f"\nThe cloud said: {detail}", err=True)
    raise SystemExit(1)


@box.command()
@DATA_OPTION
@click.option("--host", default=defaults.LOOPBACK, show_default=True, help="address to listen on")
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=defaults.BOX_HTTP_PORT,
    show_default=True,
    help="port of the homepage over HTTP",
)
@click.option(
    "--https-port",
    type=click.IntRange(1, 65535),
    default=defaults.BOX_HTTPS_PORT,
    show_default=True,
    help="port of the homepage over HTTPS, under the box's name",
)
@click.option("--address", default=None, help="the box's LAN address [default: detected]")
@click.option("--cloud", "cloud_url", default=None, help="the cloud's URL [default: from pairing]")
@click.option(
    "--cloud-ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA bundle that signs the cloud's TLS certificate [default: system store]",
)
@click.option(
    "--retry-first",
    type=click.FloatRange(0.1),
    default=defaults.RETRY_FIRST,
    show_default=True,
    help="seconds before the first retry after a failed load (then doubling)",
)
@click.option(
    "--retry-cap",
    type=click.FloatRange(1),
    default=defaults.RETRY_CAP,
    show_default=True,
    help="the longest wait between retries, in seconds",
)
@click.option(
    "--homepage-check-interval",
    type=click.FloatRange(0),
    default=defaults.HOMEPAGE_CHECK_INTERVAL,
    show_default=True,
    hidden=True,
    help="opening the homepage checks the certificate at most this often (seconds)",
)
@click.option(
    "--report-interval",
    type=click.FloatRange(1),
    default=defaults.REPORT_INTERVAL,
    show_default=True,
    hidden=True,
    help="seconds between status reports to the console when nothing changes",
)
@click.option(
    "--address-check-interval",
    type=click.FloatRange(0.1),
    default=addresses.READ_INTERVAL,
    show_default=True,
    hidden=True,
    help="seconds between two readings of the box's LAN addresses (without --address)",
)
@click.option(
    "--check-in-interval",
    type=click.FloatRange(1),
    default=renewal.CHECK_IN.total_seconds(),
    show_default=True,
    hidden=True,
    help="seconds between two check-ins with the cloud while the certificate is valid",
)
def run(data: Path | None, cloud_url: str | None, address: str | None, **kw: object) -> None:
    """Run the agent: certificate lifecycle, homepage on HTTP and HTTPS."""
    from lanlock.box.agent import BoxSettings, run_agent

    if cloud_url:
        _check_cloud_url(cloud_url)
    if address:
        names.address_to_label(address)  # a clear error now rather than a bad name later
    _check_low_ports(str(kw["host"]), kw["http_port"], kw["https_port"])  # type: ignore[arg-type]
    run_agent(BoxSettings(data_dir=data_dir(data), cloud_url=cloud_url, address=address, **kw))  # type: ignore[arg-type]


def _check_low_ports(host: str, *ports: int) -> None:
    """A port below 1024 this process may not listen on fails here, with what to do, rather
    than in a listener (a traceback for ``--host ::``). Any other error is the listener's to say."""
    for port in (port for port in ports if port < 1024):
        try:
            family, kind, _, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            with socket.socket(family, kind) as probe:
                probe.bind(where)
        except PermissionError:
            raise click.ClickException(
                f"cannot listen on {host} port {port}: permission denied. Ports below 1024 need "
                "the capability CAP_NET_BIND_SERVICE (the systemd unit gives it), or choose "
                "ports above 1023 (--http-port, --https-port)"
            ) from None
        except OSError:
            pass


@box.command()
@DATA_OPTION
@json_flag
def status(data: Path | None, as_json: bool) -> None:
    """The certificate state: URL and validity, or the error code and what to do."""

    path = data_dir(data) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        state = {
            "state": "unknown",
            "code": None,
            "reason": None,
            "url": None,
            "not_after": None,
            "message": "the agent has not run yet: `lanlock box run`",
        }
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if as_json:
        click.echo(json.dumps(state, indent=2))
    else:
        click.echo(_status_text(state))
    raise SystemExit(0 if state.get("state") == "valid" and not state.get("code") else 1)


def _status_text(state: dict[str, object]) -> str:
    lines = [f"state: {state.get('state')} (checked {state.get('checked_at', 'never')})"]
    # A state written before the box had several addresses has its one URL only.
    urls = state.get("urls") or ([state["url"]] if state.get("url") else [])
    lines.extend(f"HTTPS URL: {url}" for url in urls)
    if state.get("not_after"):
        lines.append(f"valid until: {state['not_after']}")
    if state.get("code"):
        lines.append("")
        lines.append(errors.render_text(str(state["code"]), state.get("reason")))  # type: ignore[arg-type]
    if state.get("message"):
        lines.append(f"detail: {state['message']}")
    return "\n".join(lines)


@box.command()
@DATA_OPTION
@click.option("--db-uuid", default=None, help="the database UUID")
@click.option("--code", default=None, help="the subscription (contract) code")
@click.option(
    "--console", "console_url", default=None, help="the console's URL (for set-ups without pairing)"
)
@action_flag("--clear", help="forget the credentials")
def credentials(
    data: Path | None, db_uuid: str | None, code: str | None, console_url: str | None, clear: bool
) -> None:
    """Set (or clear) the database UUID and subscription code; a running agent checks at once."""

    def change(config: BoxConfig) -> None:
        if clear:
            config.db_uuid = config.enterprise_code = None
        if db_uuid is not None:
            config.db_uuid = db_uuid.strip() or None
        if code is not None:
            config.enterprise_code = code.strip() or None
        if console_url is not None:
            config.console_url = console_url.strip() or None

    config = change_config(data_dir(data), change)
    shown = masked_code(config.enterprise_code) or "(none)"
    click.echo(
        f"database {config.db_uuid or '(none)'}, code {shown}, "
        f"console {config.console_url or '(none)'}"
    )


@box.command()
@DATA_OPTION
@action_flag("--reset", help="make a new password (the old one stops working)")
def password(data: Path | None, reset: bool) -> None:
    """Show the box's admin password (or make a new one)."""
    folder = data_dir(data)
    current = passwords.read_password_file(folder)
    if reset or not current or not load_config(folder).password_hash:
        current = passwords.new_password()
        passwords.write_password_file(folder, current)
        hashed = passwords.hash_password(current)
        change_config(folder, lambda config: setattr(config, "password_hash", hashed))
    click.echo(current)


@box.command()
@click.argument("link")
@DATA_OPTION
@click.option(
    "--address", default=None, help="the box's LAN address [default: as the agent saw it]"
)
def connect(link: str, data: Path | None, address: str | None) -> None:
    """Pair the box with a console, using the one-time link the console made."""
    from lanlock import __version__
    from lanlock.box import console_client

    folder = data_dir(data)
    device_key = load_or_create_device_key(folder)
    seen = _read_json(folder / STATE_FILE)
    address = address or seen.get("address") or addresses.lan_addresses()[0]
    try:
        pairing = console_client.pair(link, device_key, socket.gethostname(), address, __version__)
    except console_client.PairingError as exc:
        raise click.ClickException(f"pairing failed: {exc}") from None
    change_config(folder, pairing.store_in)
    click.echo(
        f"paired with {pairing.console_url} as {pairing.name!r}; a running agent asks "
        "for its certificate now (see `lanlock box status`)"
    )


@box.command()
@DATA_OPTION
def disconnect(data: Path | None) -> None:
    """Forget the console, the credentials and the token; a running agent wipes its certificate."""
    change_config(data_dir(data), BoxConfig.forget_console)
    click.echo("disconnected: the console, credentials and token are forgotten")


def _read_json(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
