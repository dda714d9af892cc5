"""``lanlock demo``: the system on loopback with embedded defaults, nothing to set up.

For now it runs the cloud (embedded CA, SQLite) with a seeded production database whose
in-progress subscription has 3 IoT boxes, and prints the command that asks it for a certificate.
Running it again reuses its data folder, its CA and its database.
"""

from __future__ import annotations

import json
import secrets
import shlex
import uuid
from pathlib import Path

import click

from lanlock.cloud import admin
from lanlock.cloud.server import DEFAULT_PORT, CloudSettings, open_store, serve
from lanlock.config import option
from lanlock.fileio import write_atomic

DEMO_ZONE = "iot.localhost"
DEMO_BOXES = 3


def seed(settings: CloudSettings) -> dict[str, str]:
    """The demo's database and subscription: made on the first run, read on the next ones."""
    path = settings.data_dir / "demo.json"
    if path.exists():
        return json.loads(path.read_text())
    store = open_store(settings)
    credentials = {"db_uuid": str(uuid.uuid4()), "code": "DEMO-" + secrets.token_hex(8)}
    admin.add_database(store, credentials["db_uuid"], "demo shop", "production")
    admin.add_subscription(
        store, credentials["code"], credentials["db_uuid"], "in_progress", DEMO_BOXES
    )
    store.dispose()
    write_atomic(path, json.dumps(credentials, indent=2).encode(), mode=0o600)
    return credentials


@click.command()
@option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".lanlock/demo"),
    show_default=True,
    help="the demo's data folder (reused when run again)",
)
@option("--zone", default=DEMO_ZONE, show_default=True)
@option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="the cloud's port",
)
def demo(data: Path, zone: str, port: int) -> None:
    """Run lanlock on loopback with a seeded demo database; Ctrl-C stops it."""
    from lanlock.cloud.server import build_service

    settings = CloudSettings(data_dir=data / "cloud", zone=zone, port=port)
    credentials = seed(settings)
    root = build_service(settings).issuer.ca.root_pem  # type: ignore[attr-defined]
    root_path = data / "root-ca.pem"
    write_atomic(root_path, root.encode())
    cloud_url = f"http://127.0.0.1:{port}"
    ask = shlex.join(
        [
            "lanlock",
            "box",
            "request",
            "--data",
            str(data / "box"),
            "--cloud",
            cloud_url,
            "--db-uuid",
            credentials["db_uuid"],
            "--code",
            credentials["code"],
        ]
    )
    click.echo(
        f"lanlock demo — zone {zone}\n"
        f"  cloud         {cloud_url}  (health: {cloud_url}/healthz)\n"
        f"  database      {credentials['db_uuid']} (production, {DEMO_BOXES} IoT boxes)\n"
        f"  demo root CA  {root_path.resolve()}\n\n"
        f"Ask the cloud for a certificate, as a box would (in another terminal):\n"
        f"  .venv/bin/{ask}\n\n"
        "Ctrl-C stops the demo.\n"
    )
    serve(settings)
