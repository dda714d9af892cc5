"""``lanlock box …``: the box's command line."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import click
import httpx

from lanlock import errors, names, pki
from lanlock.box.cloud_client import post_x509, x509_payload
from lanlock.box.identity import load_or_create_device_key
from lanlock.config import default_data_dir, option


@click.group()
def box() -> None:
    """The IoT box: its identity and certificates."""


@box.command()
@option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the box's data folder (device key)",
)
@option(
    "--cloud",
    "cloud_url",
    default="http://127.0.0.1:8700",
    show_default=True,
    help="the cloud's URL",
)
@option(
    "--cloud-ca",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CA bundle that signs the cloud's TLS certificate [default: system store]",
)
@option("--db-uuid", required=True, help="the database UUID")
@option("--code", required=True, help="the subscription (contract) code")
@option("--address", default="10.0.0.7", show_default=True, help="the box's LAN address")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
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
    device_key = load_or_create_device_key(data or default_data_dir("box"))
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
    leaf = pki.certificate_from_pem(result["x509_pem"])
    if leaf.public_key() != tls_key.public_key():
        _fail(errors.LOAD_REQUEST_NO_RESULT, None, "the certificate is not for our key", as_json)
    url = names.https_url(address, result["scope"], result["zone"])
    shown = {
        "state": "valid",
        "code": None,
        "reason": None,
        "url": url,
        "not_after": result["not_after"],
        "scope": result["scope"],
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
        return  # plain HTTP only to a loopback cloud (DESIGN §13): development and tests
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
