"""Make tests/fixtures/prev-release: the stores and box data folders of the previous release,
which tests/upgrade checks the current code upgrades in place.

Run it from the repository's root with the PREVIOUS release's code first on the path:

    PYTHONPATH=/tmp/prev-release/src .venv/bin/python -m tests.upgrade.make_fixtures \\
        --postgres postgresql+psycopg://lanlock:lanlock@127.0.0.1:5432/postgres

Every row comes from that release's own processes, started as an operator starts them: its
`lanlock cloud` admin commands seed the databases and subscriptions, a real `lanlock cloud serve`
(embedded CA) answers the x509 requests of a real `lanlock box run` paired through a real
`lanlock console serve`, and `lanlock box request` adds a second box (two certificates) and
refusals. The same is done once on SQLite and once on PostgreSQL (saved with `pg_dump`). Only
the helpers of tests/servers.py (free ports, waiting, stopping) come from this tree.

Secrets the release lets an operator choose are obviously fake (below); the keys, tokens and the
console's password it makes itself are throw-away values made for these fixtures only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.servers import free_port, lanlock_command, stop_process, wait_until_answering

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "prev-release"
RELEASE = "f696d67"
ZONE = "iot.test"
LIFETIME = "397d"  # the longest the release allows: the cloud reuses one for 2/3 of it
SECRET_KEY = "fixture-secret-key-NOT-A-SECRET-0123456789"  # the clouds' LANLOCK_SECRET_KEY
CODE = "FIXTURE-CODE-NOT-A-SECRET-0001"  # the box's subscription
PAUSED_CODE = "FIXTURE-PAUSED-NOT-A-SECRET-0002"
STAGING_CODE = "FIXTURE-STAGING-NOT-A-SECRET-0003"
WRONG_CODE = "FIXTURE-WRONG-CODE-0000"
STAGING_UUID = "00000000-0000-4000-8000-0000000005a9"
BOX_PASSWORD = "fixture-box-password-not-secret"
BOX_NAME = "Fixture till"
BOX_ADDRESS = "10.0.0.7"
SECOND_BOX_ADDRESS = "10.0.0.8"
WAIT = 60.0
# What a box data folder keeps across restarts; its logs and lock file are left out.
BOX_FILES = ("device-key.pem", "config.toml", "admin-password", "state.json", "tls")
# The release's processes get their settings from their flags alone (as `lanlock demo` does):
# a LANLOCK_* variable of the shell that runs this would change what they make.
ENVIRONMENT = {name: value for name, value in os.environ.items() if not name.startswith("LANLOCK_")}
ENVIRONMENT["LANLOCK_SECRET_KEY"] = SECRET_KEY

README = """\
# Fixtures of the previous release

What the release before the current one, as CI accepted it on 2026-11-30 (commit {release}),
left behind; tests/upgrade/test_upgrade.py checks that the current code upgrades each in place.
Made at {made_at} by tests/upgrade/make_fixtures.py, run from the repository's
root with that release's code first on the path:

    PYTHONPATH=/tmp/prev-release/src .venv/bin/python -m tests.upgrade.make_fixtures \\
        --postgres postgresql+psycopg://lanlock:lanlock@127.0.0.1:5432/postgres

* `cloud/cloud.db`: the cloud's SQLite store (zone `iot.test`, embedded CA): two databases,
  three subscriptions, two boxes (one revoked), three certificates, audit rows of issued and
  refused requests;
* `cloud-postgres.sql`: the same made on PostgreSQL, as `pg_dump --no-owner --no-privileges`
  wrote it (restore it with `psql` into an empty database);
* `console/`: the console's data folder (SQLite store, admin password), the box of `box/` paired;
* `box/`: the data folder (its logs left out) of the box paired with that console and certified
  by `cloud/cloud.db`; `box-postgres/`: the box certified by `cloud-postgres.sql`;
* `manifest.json`: what the release's own commands showed of each (`cloud box list`, `cloud
  database list`, `console boxes`, the box's state) and the settings the tests need.

Test data only: the cloud's secret key (`LANLOCK_SECRET_KEY`, in the manifest), the subscription
codes and the box's admin password are written to look fake; the keys, tokens, the console's
password and the CA in these files were made for these fixtures and protect nothing.

Make them again, with the release then before the current one, when a release changes a store
or the box's data folder; the certificates in them are reused by the cloud for two thirds of
their 397 days, and the tests expect a renewal instead once that is over.
"""


def lanlock(line: str, *more: str, check: bool = True) -> str:
    """One command of the release (``line``'s words, then ``more``), run to completion; its
    standard output."""
    done = subprocess.run(
        lanlock_command(*line.split(), *more),
        capture_output=True,
        text=True,
        timeout=120,
        env=ENVIRONMENT,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"lanlock {line} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def lanlock_json(line: str, *more: str) -> Any:
    return json.loads(lanlock(line, *more, "--json"))


@contextlib.contextmanager
def server(log: Path, line: str) -> Iterator[subprocess.Popen[bytes]]:
    """A long-running command of the release, stopped (SIGTERM) on the way out."""
    process = subprocess.Popen(
        lanlock_command(*line.split()),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=ENVIRONMENT,
    )
    try:
        yield process
    finally:
        stop_process(process)


def wait_for(what: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {WAIT:g} s")
        time.sleep(0.2)


def box_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


# --- the cloud -------------------------------------------------------------------------------


def seed_cloud(store: str, db_uuid: str) -> None:
    """Databases and subscriptions as an operator adds them: the box's, a paused one, and a
    staging database (which never gets certificates)."""
    lanlock(f"cloud database add {db_uuid} {store} --name", "Fixture shop")
    lanlock(f"cloud database add {STAGING_UUID} --kind staging {store} --name", "Fixture staging")
    lanlock(f"cloud subscription add {CODE} --database {db_uuid} --iot-boxes 3 {store}")
    lanlock(
        f"cloud subscription add {PAUSED_CODE} --database {db_uuid} --state paused "
        f"--iot-boxes 1 {store}"
    )
    lanlock(
        f"cloud subscription add {STAGING_CODE} --database {STAGING_UUID} --iot-boxes 2 {store}"
    )


@contextlib.contextmanager
def running_cloud(work: Path, store: str) -> Iterator[str]:
    port = free_port()
    log = work / f"cloud-{port}.log"
    line = f"cloud serve {store} --port {port} --zone {ZONE} --lifetime {LIFETIME} --workers 1"
    with server(log, line) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering("the cloud", process, log, url + "/healthz")
        yield url


def more_requests(work: Path, cloud_url: str, db_uuid: str, store: str) -> None:
    """A second box with two certificates (it asks twice, each time with a new key, as a box
    that lost its key does), then revoked; refusals for a wrong code and for a staging
    database: audit rows of each outcome."""
    second = f"box request --data {work / 'second-box'} --cloud {cloud_url} --db-uuid {db_uuid}"
    for _ in range(2):
        second_id = lanlock_json(f"{second} --code {CODE} --address {SECOND_BOX_ADDRESS}")["box_id"]
    third = f"box request --data {work / 'third-box'} --cloud {cloud_url}"
    lanlock(f"{third} --db-uuid {db_uuid} --code {WRONG_CODE}", check=False)
    lanlock(f"{third} --db-uuid {STAGING_UUID} --code {STAGING_CODE}", check=False)
    lanlock(f"cloud box revoke {second_id} {store}")


# --- a box -------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_box(work: Path, folder: Path, cloud_url: str) -> Iterator[dict[str, Any]]:
    """`lanlock box run` for the block, entered once the box holds a certificate from the
    cloud; its state then."""
    folder.mkdir(exist_ok=True)
    (folder / "admin-password").write_text(BOX_PASSWORD + "\n")  # taken at the first start
    (folder / "admin-password").chmod(0o600)
    http, https = free_port(), free_port()
    line = (
        f"box run --data {folder} --cloud {cloud_url} --address {BOX_ADDRESS} "
        f"--http-port {http} --https-port {https}"
    )
    with server(work / f"box-{http}.log", line):
        wait_for("the box's certificate", lambda: box_state(folder).get("state") == "valid")
        yield box_state(folder)


def paired_box(work: Path, cloud_url: str) -> dict[str, Any]:
    """The console set up for the cloud, a box paired through it that gets its certificate and
    reports it; what the console then lists."""
    console = f"--data {work / 'console'}"
    lanlock(f"console settings --cloud {cloud_url} {console}")
    port = free_port()
    log = work / f"console-{port}.log"
    with server(log, f"console serve {console} --port {port}") as process:
        wait_until_answering("the console", process, log, f"http://127.0.0.1:{port}/healthz")
        link = lanlock_json(f"console pair {console} --name", BOX_NAME)["link"]
        box = work / "box"
        lanlock(f"box connect {link} --data {box} --address {BOX_ADDRESS}")
        with running_box(work, box, cloud_url) as state:
            wait_for("the box's report", lambda: reported(console, state))
        return {"state": state, "console_boxes": lanlock_json(f"console boxes {console}")}


def reported(console: str, state: dict[str, Any]) -> bool:
    return [box["url"] for box in lanlock_json(f"console boxes {console}")] == [state["url"]]


# --- the two stores ---------------------------------------------------------------------------


def world(work: Path, store: str) -> dict[str, Any]:
    """A console, a cloud on ``store`` and a box paired through the console, then more
    requests; the data folders stay in ``work``."""
    console = f"--data {work / 'console'}"
    db_uuid = lanlock_json(f"console settings {console} --code {CODE}")["db_uuid"]
    seed_cloud(store, db_uuid)
    with running_cloud(work, store) as cloud_url:
        paired = paired_box(work, cloud_url)
        more_requests(work, cloud_url, db_uuid, store)
    return {"db_uuid": db_uuid, **paired, **cloud_listing(store)}


def postgres_world(work: Path, server_url: str, dump: Path) -> dict[str, Any]:
    """:func:`world` on a fresh PostgreSQL database, ``pg_dump``'d to ``dump``, then dropped."""
    work.mkdir()
    name = f"lanlock_fixture_{uuid.uuid4().hex[:8]}"
    url = make_url(server_url).set(database=name)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        made = world(
            work, f"--data {work / 'cloud'} --store {url.render_as_string(hide_password=False)}"
        )
        del made["console_boxes"]  # this world's console is not kept: the SQLite one is
        pg_dump(url.set(drivername="postgresql").render_as_string(hide_password=False), dump)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return made


def pg_dump(libpq_url: str, dump: Path) -> None:
    """A plain SQL dump that restores into any empty database, whoever owns it."""
    subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", "--file", str(dump), libpq_url],
        check=True,
        timeout=120,
    )


def cloud_listing(store: str) -> dict[str, Any]:
    """What the release's admin commands show of the store, for the tests to compare with."""
    return {
        "boxes": lanlock_json(f"cloud box list {store}"),
        "databases": lanlock_json(f"cloud database list {store}"),
    }


# --- the fixtures ----------------------------------------------------------------------------


def release_heads() -> dict[str, str]:
    """The schema revisions the release migrates to: what its stores are at."""
    from alembic.script import ScriptDirectory

    from lanlock.cloud.models import SCHEMA as CLOUD
    from lanlock.console.models import SCHEMA as CONSOLE
    from lanlock.store import alembic_config

    heads = {}
    for role, schema in (("cloud", CLOUD), ("console", CONSOLE)):
        heads[role] = ScriptDirectory.from_config(alembic_config(schema)).get_current_head()
    return heads


def checkpointed(database: Path) -> Path:
    """The SQLite file with its write-ahead log folded in: the one file is the whole store."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return database


def copy_box(folder: Path, to: Path) -> None:
    to.mkdir(parents=True)
    for name in BOX_FILES:
        source = folder / name
        if source.is_dir():
            shutil.copytree(source, to / name)
        elif source.exists():
            shutil.copy2(source, to / name)


def make(postgres_url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="lanlock-fixtures-") as tmp:
        work = Path(tmp)
        shutil.rmtree(OUT, ignore_errors=True)
        (OUT / "cloud").mkdir(parents=True)
        (OUT / "console").mkdir()
        sqlite = world(work, f"--data {work / 'cloud'}")
        postgres = postgres_world(work / "pg", postgres_url, OUT / "cloud-postgres.sql")
        shutil.copy2(checkpointed(work / "cloud" / "cloud.db"), OUT / "cloud" / "cloud.db")
        shutil.copy2(checkpointed(work / "console" / "console.db"), OUT / "console" / "console.db")
        shutil.copy2(work / "console" / "admin-password", OUT / "console" / "admin-password")
        copy_box(work / "box", OUT / "box")
        copy_box(work / "pg" / "box", OUT / "box-postgres")
    manifest = {
        "release": RELEASE,
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "schema_revisions": release_heads(),
        "zone": ZONE,
        "secret_key": SECRET_KEY,
        "box_password": BOX_PASSWORD,
        "sqlite": sqlite,
        "postgres": postgres,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (OUT / "README.md").write_text(README.format(release=RELEASE, made_at=manifest["made_at"]))


def check_release() -> None:
    """Refuse to make the fixtures with this tree's own code: they must be the old release's."""
    import lanlock

    where = Path(lanlock.__file__).resolve()
    if ROOT in where.parents:
        sys.exit(f"lanlock comes from {where}: put the previous release first (PYTHONPATH)")
    print(f"making the fixtures with {where.parent}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", required=True, help="a server URL; a role that may create databases"
    )
    check_release()
    make(parser.parse_args().postgres)
    print(f"written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
