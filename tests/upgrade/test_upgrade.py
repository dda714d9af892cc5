"""Upgrades keep everything: the stores and the box data folder the previous release made
(tests/fixtures/prev-release, see its README) upgrade in place under this version, done the way
an operator does it: the same commands on the same files.

The fixtures age: the certificate they hold is handed out again by the cloud until its renewal
time (two thirds of its 397 days), and valid for all of them. Every check below holds at any
age; where the right answer changes with it (reuse, then renewal; valid, then expired), the test
asks the certificate which one is due.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import MetaData, create_engine, select, text
from sqlalchemy.engine import make_url

from lanlock import names, pki, renewal
from lanlock.box.cloud_client import CloudAnswer, post_x509, x509_payload
from lanlock.cloud.models import SCHEMA as CLOUD_SCHEMA
from lanlock.console.models import SCHEMA as CONSOLE_SCHEMA
from lanlock.store import Schema, alembic_config
from tests.console.running import log_in, report, running_console
from tests.dns.running import running_dns
from tests.realparts import require
from tests.servers import ZONE, free_port, fresh_store_url, lanlock_command, start_box, start_cloud

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "prev-release"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
SECRET_ENV = {"LANLOCK_SECRET_KEY": MANIFEST["secret_key"]}
BOX_OF = {"sqlite": "box", "postgres": "box-postgres"}  # the box folder each store issued for
# `lanlock cloud <name> list`: what the manifest calls it, and the key of its rows
LISTINGS = {"box": ("boxes", "box_id"), "database": ("databases", "uuid")}
Rows = dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]  # table: its columns, its rows


def head(schema: Schema) -> str:
    found = ScriptDirectory.from_config(alembic_config(schema)).get_current_head()
    assert found is not None
    return found


def lanlock(*args: str) -> str:
    """A command of this version, as the operator runs it after the upgrade; its output."""
    done = subprocess.run(
        lanlock_command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **SECRET_ENV},
    )
    assert done.returncode == 0, f"lanlock {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the fixture box --------------------------------------------------------------------------


def ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@dataclass
class FixtureBox:
    """A box data folder of the previous release, read without the box's code."""

    folder: Path

    @cached_property
    def config(self) -> dict[str, Any]:
        return tomllib.loads((self.folder / "config.toml").read_text())

    @cached_property
    def device_key(self) -> ec.EllipticCurvePrivateKey:
        return ec_key(self.folder / "device-key.pem")

    @property
    def box_id(self) -> str:
        return pki.box_id_for(self.device_key.public_key())

    @property
    def pair(self) -> Path:
        return self.folder / "tls" / "pairs" / (self.folder / "tls" / "current").read_text().strip()

    @cached_property
    def certificates(self) -> list[x509.Certificate]:
        return pki.certificates_from_pem((self.pair / "fullchain.pem").read_text())

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def tls_key(self) -> ec.EllipticCurvePrivateKey:
        return ec_key(self.pair / "privkey.pem")

    @property
    def https_name(self) -> str:
        return names.host_name("10.0.0.7", self.config["scope"], self.config["zone"])


def copy_box(folder: Path, to: Path) -> Path:
    """The folder as a box keeps it: git does not keep the private files' 0600."""
    shutil.copytree(folder, to)
    private = ["device-key.pem", "config.toml", "admin-password", "tls/pairs/*/privkey.pem"]
    for path in (found for pattern in private for found in to.glob(pattern)):
        path.chmod(0o600)
    return to


def fixture_root() -> x509.Certificate:
    """The embedded CA's root, as the previous release made it (its store holds it)."""
    # immutable: the fixture is read as it is, without a lock or a WAL file beside it
    uri = f"file:{FIXTURES / 'cloud' / 'cloud.db'}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        [(pem,)] = conn.execute("SELECT root_pem FROM certificate_authorities").fetchall()
    return pki.certificate_from_pem(pem)


def verify_in_its_lifetime(leaf: x509.Certificate, box: FixtureBox, root: x509.Certificate) -> None:
    """The chain and the name, as a browser checks them: now, or at the end of its life once it
    is over (the fixtures outlive their certificates)."""
    moment = min(now(), leaf.not_valid_after_utc - dt.timedelta(minutes=1))
    pki.verify_server_chain(leaf, box.certificates[1:], [root], box.https_name, at=moment)


def served_certificate(port: int, server_name: str) -> x509.Certificate:
    """The certificate an HTTPS client gets from the box, whatever its validity now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # verified after, at a moment inside its lifetime
    deadline = time.monotonic() + 10  # the HTTPS listener starts beside the HTTP one
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- the cloud's stores ------------------------------------------------------------------------


@dataclass
class Upgraded:
    """A copy of a cloud store of the previous release, read, migrated by this version and read
    again at once (the tests that run a cloud on it change it after)."""

    backend: str
    url: str
    data: Path
    before: Rows  # but the version table's
    after: Rows  # the tables and columns of ``before``
    listed: dict[str, list[dict[str, Any]]]  # by this version's `cloud box|database list`
    revision_before: str | None
    revision_after: str

    @property
    def made(self) -> dict[str, Any]:
        """What the previous release's own commands showed of this store."""
        return MANIFEST[self.backend]

    @property
    def box(self) -> FixtureBox:
        return FixtureBox(FIXTURES / BOX_OF[self.backend])


@contextlib.contextmanager
def old_store(backend: str, tmp: Path) -> Iterator[str]:
    """The previous release's cloud store in a place of its own: the SQLite file copied, the
    PostgreSQL dump restored into a new database."""
    with fresh_store_url(backend, tmp) as url:
        if backend == "sqlite":
            shutil.copyfile(FIXTURES / "cloud" / "cloud.db", str(make_url(url).database))
        else:
            restore(url, FIXTURES / "cloud-postgres.sql")
        yield url


def restore(url: str, dump: Path) -> None:
    require(shutil.which("psql") is not None, "psql is not installed (restores the dump)")
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(
        ["psql", "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-f", str(dump), libpq],
        check=True,
        capture_output=True,
        timeout=60,
    )


def every_row(url: str, only: Rows | None = None) -> Rows:
    """Every table's rows (or those of ``only``'s tables and columns), in a stable order."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        found: Rows = {}
        with engine.connect() as conn:
            for name, table in metadata.tables.items():
                if only is not None and name not in only:
                    continue
                wanted = only[name][0] if only else tuple(table.columns.keys())
                rows = conn.execute(select(*(table.c[c] for c in wanted))).all()
                found[name] = (wanted, sorted(map(tuple, rows), key=repr))
        return found
    finally:
        engine.dispose()


@pytest.fixture(params=list(BOX_OF), scope="module")
def upgraded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Upgraded]:
    tmp = tmp_path_factory.mktemp(f"upgraded-{request.param}")
    with old_store(request.param, tmp) as url:
        before = every_row(url)
        [(revision_before,)] = before.pop("alembic_version")[1]  # the one row migrating changes
        store = ("--store", url, "--data", str(tmp), "--json")
        migrated = json.loads(lanlock("cloud", "migrate", *store))["revision"]
        after = every_row(url, only=before)
        listed = {name: json.loads(lanlock("cloud", name, "list", *store)) for name in LISTINGS}
        yield Upgraded(request.param, url, tmp, before, after, listed, revision_before, migrated)


def test_the_cloud_store_migrates_forward_to_this_version(upgraded: Upgraded) -> None:
    assert upgraded.revision_before == MANIFEST["schema_revisions"]["cloud"]
    assert upgraded.revision_after == head(CLOUD_SCHEMA) != upgraded.revision_before


def test_every_row_the_previous_release_wrote_is_kept(upgraded: Upgraded) -> None:
    # What the fixtures hold (their README), so that this test means something.
    held = {"databases": 2, "subscriptions": 3, "boxes": 2, "certificates": 3, "audit": 5}
    assert {name: len(upgraded.before[name][1]) for name in held} == held
    assert upgraded.after == upgraded.before


def test_the_counts_a_subscription_keeps_start_from_its_rows(upgraded: Upgraded) -> None:
    """Migration 0010: each subscription's active boxes as counted, and every certificate it
    has so far in the period before this one (an upper bound of any window)."""
    engine = create_engine(upgraded.url)
    try:
        with engine.connect() as conn:
            kept = conn.execute(
                text(
                    "SELECT code, active_boxes, issued_last_period, issued_this_period "
                    "FROM subscriptions ORDER BY code"
                )
            ).all()
            counted = conn.execute(
                text(
                    "SELECT s.code, "
                    "(SELECT count(*) FROM boxes b WHERE b.subscription_code = s.code "
                    "AND b.state = 'active'), "
                    "(SELECT count(*) FROM certificates c WHERE c.subscription_code = s.code), 0 "
                    "FROM subscriptions s ORDER BY s.code"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in kept] == [tuple(row) for row in counted]
    # What the fixtures hold (their README): two boxes, one revoked; three certificates.
    assert sum(row[1] for row in kept) == 1 and sum(row[2] for row in kept) == 3


def test_the_admin_commands_show_what_the_previous_release_showed(upgraded: Upgraded) -> None:
    for name, (made, key) in LISTINGS.items():
        shown = {row[key]: row for row in upgraded.listed[name]}
        assert len(shown) == len(upgraded.made[made])
        for old in upgraded.made[made]:  # every field the previous release showed, its value
            assert {field: shown[old[key]][field] for field in old} == old


def ask_for_certificate(cloud_url: str, box: FixtureBox) -> CloudAnswer:
    """The request the box makes, signed with its device key, for the key it already holds."""
    config = box.config
    csr = pki.build_csr(box.tls_key, names.certificate_names(config["scope"], config["zone"]))
    payload = x509_payload(
        box.device_key, config["db_uuid"], config["enterprise_code"], pki.csr_pem(csr), "10.0.0.7"
    )
    with httpx.Client(timeout=30) as client:
        return post_x509(client, cloud_url, box.device_key, payload)


def reusable(leaf: x509.Certificate) -> bool:
    """Whether the cloud still hands ``leaf`` out again: until its renewal time
    (lanlock.cloud.reuse; the embedded CA gives no renewal advice of its own)."""
    return now() < renewal.renewal_time(leaf.not_valid_before_utc, leaf.not_valid_after_utc)


def test_a_current_cloud_hands_the_box_its_certificate_again(
    upgraded: Upgraded, tmp_path: Path
) -> None:
    box = upgraded.box
    cloud = start_cloud(upgraded.url, tmp_path / "data", env=SECRET_ENV)
    try:
        answer = ask_for_certificate(cloud.url, box)
    finally:
        cloud.stop()
    assert answer.status == 200 and answer.result is not None, answer.message
    assert (answer.result.scope, answer.result.zone) == (box.config["scope"], ZONE)
    leaf = pki.certificate_from_pem(answer.result.x509_pem)
    assert leaf.public_key() == box.tls_key.public_key()
    if reusable(box.leaf):
        assert leaf.serial_number == box.leaf.serial_number
        assert leaf == box.leaf
    else:  # past its reuse window: a renewal for the same box, under the same CA
        assert leaf.serial_number != box.leaf.serial_number
        leaf.verify_directly_issued_by(box.certificates[1])
    listed = ("cloud", "box", "list", "--store", upgraded.url, "--data", str(upgraded.data))
    boxes = json.loads(lanlock(*listed, "--json"))  # the same boxes: none registered anew
    assert sorted(b["box_id"] for b in boxes) == sorted(b["box_id"] for b in upgraded.made["boxes"])


def test_the_current_dns_starts_on_the_upgraded_store(upgraded: Upgraded, tmp_path: Path) -> None:
    name = upgraded.box.https_name
    with running_dns(upgraded.url, tmp_path, workers=1, migrate=False) as server:
        answer = server.ask(name, "A")
    assert [record.address for rrset in answer.answer for record in rrset] == ["10.0.0.7"]


# --- the console's store -----------------------------------------------------------------------

CARD_FIELDS = ("box_id", "name", "address", "url", "state", "code", "not_after", "paired_at")


def console_revision(database: Path) -> str:
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM console_alembic_version").scalar()
    finally:
        engine.dispose()


def test_the_console_store_migrates_and_still_lists_and_trusts_its_box(tmp_path: Path) -> None:
    folder = tmp_path / "console"
    shutil.copytree(FIXTURES / "console", folder)
    database = folder / "console.db"
    assert console_revision(database) == MANIFEST["schema_revisions"]["console"]
    [made] = MANIFEST["sqlite"]["console_boxes"]
    box = FixtureBox(FIXTURES / "box")
    with running_console(folder, store_url=f"sqlite:///{database}") as console:
        [listed] = console.cli_json("boxes")
        with console.client() as http:
            assert log_in(http, (folder / "admin-password").read_text().strip()).status_code == 303
            cards = http.get("/iot").text
            # The box's report, signed with the token it got at pairing, is still taken.
            accepted = report(http, box.box_id, box.config["token"], {"url": made["url"]})
    assert console_revision(database) == head(CONSOLE_SCHEMA)
    assert {f: listed[f] for f in CARD_FIELDS} == {f: made[f] for f in CARD_FIELDS}
    assert made["name"] in cards and made["url"] in cards
    assert accepted.status_code == 200, accepted.text


# --- the box's data folder ---------------------------------------------------------------------


def test_a_current_box_keeps_its_key_id_certificate_and_settings(tmp_path: Path) -> None:
    old = FixtureBox(FIXTURES / "box")
    folder = copy_box(old.folder, tmp_path / "box")
    nowhere = f"http://127.0.0.1:{free_port()}"  # no cloud: what it serves is what it kept
    box = start_box(folder, "--cloud", nowhere)
    try:
        served = served_certificate(box.https_port, old.https_name)
        checked_before = json.loads((old.folder / "state.json").read_text())["checked_at"]
        state = box.wait_for(lambda s: s.get("checked_at") != checked_before)
    finally:
        box.stop()
    assert served == old.leaf
    verify_in_its_lifetime(served, old, fixture_root())
    assert (folder / "device-key.pem").read_bytes() == (old.folder / "device-key.pem").read_bytes()
    assert state["box_id"] == old.box_id == MANIFEST["sqlite"]["state"]["box_id"]
    assert state["state"] == ("valid" if now() < old.leaf.not_valid_after_utc else "error")
    assert FixtureBox(folder).pair.name == old.pair.name
    kept = tomllib.loads((folder / "config.toml").read_text())
    assert {key: kept.get(key) for key in old.config} == old.config  # credentials included
    assert lanlock("box", "password", "--data", str(folder)).strip() == MANIFEST["box_password"]
