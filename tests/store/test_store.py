"""The shared store on SQLite and PostgreSQL: migrations agree with the models, they run safely
from several processes at once, datetimes stay UTC, transactions roll back, and the embedded CA
is made once and kept encrypted."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from sqlalchemy import DateTime, inspect, select, text
from sqlalchemy.exc import StatementError

from lanlock import names, pki
from lanlock.cloud.authority import AuthorityError, load_or_create_authority
from lanlock.cloud.models import SCHEMA, AuthorityRecord, Base, Database, cloud_store
from lanlock.store import Store, alembic_config
from lanlock.store.types import UTCDateTime
from tests.servers import fresh_store_url, read_until

SECRET = b"store-test-secret-0123456789abcdef"
ZONE = "iot.test"


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A migrated store per backend, shared by the tests that do not need an empty one."""
    with fresh_store_url(request.param, tmp_path_factory.mktemp(request.param)) as url:
        store = cloud_store(url, pool_size=2)
        store.migrate()
        yield store
        store.dispose()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config(SCHEMA)).get_current_head()
    assert head is not None
    return head


def current_revisions(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


def schema_of(store: Store) -> dict[str, object]:
    """What the database holds, reflected: enough to tell whether anything changed."""
    inspector = inspect(store.engine)
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
        )
        for table in sorted(inspector.get_table_names())
    }


def assert_schema_matches_models(store: Store) -> None:
    inspector = inspect(store.engine)
    assert set(inspector.get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    for name, table in Base.metadata.tables.items():
        reflected = {c["name"]: c for c in inspector.get_columns(name)}
        assert set(reflected) == set(table.columns.keys()), name
        for column in table.columns:
            found = reflected[column.name]
            assert found["nullable"] == column.nullable, f"{name}.{column.name} nullable"
            model_type = column.type.impl if isinstance(column.type, UTCDateTime) else column.type
            assert found["type"]._type_affinity is model_type._type_affinity, (
                f"{name}.{column.name}: {found['type']!r} in the store, {model_type!r} in the model"
            )
            if getattr(model_type, "length", None):
                assert found["type"].length == model_type.length, f"{name}.{column.name} length"
            if isinstance(model_type, DateTime) and not store.is_sqlite:
                # PostgreSQL must store instants (timestamptz), not wall-clock times.
                assert found["type"].timezone, f"{name}.{column.name} is not timestamptz"
        primary = inspector.get_pk_constraint(name)["constrained_columns"]
        assert primary == [c.name for c in table.primary_key.columns], name
        model_fks = {
            (
                tuple(fk.parent.name for fk in constraint.elements),
                constraint.referred_table.name,
                (constraint.ondelete or "").upper(),
            )
            for constraint in table.foreign_key_constraints
        }
        found_fks = {
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                (fk["options"].get("ondelete") or "").upper(),
            )
            for fk in inspector.get_foreign_keys(name)
        }
        assert found_fks == model_fks, name
        model_indexes = {(i.name, tuple(c.name for c in i.columns)) for i in table.indexes}
        found_indexes = {(i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(name)}
        assert model_indexes <= found_indexes, name
        unique_columns = {(c.name,) for c in table.columns if c.unique}
        found_unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
        found_unique |= {
            tuple(i["column_names"]) for i in inspector.get_indexes(name) if i["unique"]
        }
        assert unique_columns <= found_unique, name
    # Alembic's own comparison, with types: nothing a new migration would have to add.
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


# --- migrations ---------------------------------------------------------------------------------


def test_migrate_creates_every_table_of_the_models(store_url):
    store = cloud_store(store_url, pool_size=2)
    try:
        store.migrate()
        assert_schema_matches_models(store)
        assert current_revisions(store) == [head_revision()]
    finally:
        store.dispose()


def test_migrating_twice_changes_nothing_and_keeps_the_data(store):
    with store.transaction() as session:
        session.add(Database(uuid="kept", name="kept across migrations"))
    before = schema_of(store)
    store.migrate()
    again = cloud_store(store.url.render_as_string(hide_password=False), pool_size=1)
    try:
        again.migrate()
    finally:
        again.dispose()
    assert schema_of(store) == before
    assert current_revisions(store) == [head_revision()]
    with store.transaction() as session:
        assert session.get(Database, "kept").name == "kept across migrations"


def run_at_once(script: str, *args: str, count: int = 2) -> list[str]:
    """Start ``count`` Python processes, let each get ready, then release them together."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            read_until(process, "ready\n", seconds=60)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    return [out.strip() for out, _ in results]


MIGRATE_SCRIPT = """
    import sys
    from lanlock.cloud.models import cloud_store
    store = cloud_store(sys.argv[1], pool_size=1)
    print("ready", flush=True)
    sys.stdin.readline()
    store.migrate()
    print("migrated")
"""


def test_processes_migrating_a_fresh_store_at_once_all_succeed(store_url):
    assert run_at_once(MIGRATE_SCRIPT, store_url) == ["migrated"] * 2
    store = cloud_store(store_url, pool_size=1)
    try:
        assert_schema_matches_models(store)
        assert current_revisions(store) == [head_revision()]
    finally:
        store.dispose()


# --- datetimes and transactions -----------------------------------------------------------------


def test_aware_datetimes_come_back_as_the_same_instant_in_utc(store):
    plus_two = dt.timezone(dt.timedelta(hours=2))
    written = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=plus_two)
    with store.transaction() as session:
        session.add(Database(uuid="tz", created_at=written))
    with store.transaction() as session:
        read = session.get(Database, "tz").created_at
        # Comparisons in SQL see instants too, whatever offset the caller used.
        just_before = dt.datetime(2030, 1, 2, 1, 4, 5, tzinfo=dt.UTC)
        just_after = dt.datetime(2030, 1, 2, 1, 4, 6, tzinfo=dt.UTC)
        found = session.scalars(
            select(Database.uuid).where(
                Database.created_at > just_before, Database.created_at < just_after
            )
        )
        assert list(found) == ["tz"]
    assert read == written
    assert read.utcoffset() == dt.timedelta(0)
    assert (read.hour, read.microsecond) == (1, 678901)


def test_a_naive_datetime_is_refused_and_nothing_is_written(store):
    with pytest.raises(StatementError) as info, store.transaction() as session:
        session.add(Database(uuid="naive", created_at=dt.datetime(2030, 1, 2, 3, 4, 5)))
    assert isinstance(info.value.orig, ValueError)
    assert "naive datetime" in str(info.value)
    with store.transaction() as session:
        assert session.get(Database, "naive") is None


def test_default_datetimes_are_aware_utc_now(store):
    before = dt.datetime.now(dt.UTC)
    with store.transaction() as session:
        session.add(Database(uuid="now"))
    with store.transaction() as session:
        created = session.get(Database, "now").created_at
    assert created.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= created <= dt.datetime.now(dt.UTC)


def test_transaction_rolls_back_on_exception_and_commits_otherwise(store):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as session:
        session.add(Database(uuid="rolled-back"))
        session.flush()  # the row reached the database inside the transaction
        raise Boom
    with store.transaction() as session:
        session.add(Database(uuid="committed"))
    # Another engine (another replica) sees the committed row, and only it.
    other = cloud_store(store.url.render_as_string(hide_password=False), pool_size=1)
    try:
        with other.transaction() as session:
            assert session.get(Database, "rolled-back") is None
            assert session.get(Database, "committed") is not None
    finally:
        other.dispose()


# --- the embedded CA in the store ---------------------------------------------------------------


def test_authority_is_made_once_and_shared(store_url):
    store = cloud_store(store_url, pool_size=1)
    replica = cloud_store(store_url, pool_size=1)
    try:
        store.migrate()
        with store.transaction() as session:
            assert session.scalars(select(AuthorityRecord)).all() == []
        first = load_or_create_authority(store, ZONE, SECRET)
        again = load_or_create_authority(replica, ZONE, SECRET)
        with store.transaction() as session:
            assert len(session.scalars(select(AuthorityRecord)).all()) == 1
    finally:
        store.dispose()
        replica.dispose()
    assert again.root == first.root
    assert again.intermediate == first.intermediate
    assert again.intermediate_key.private_numbers() == first.intermediate_key.private_numbers()
    # What the loaded CA signs verifies under the root made the first time.
    scope = names.new_scope()
    leaf = again.issue(pki.new_private_key().public_key(), names.certificate_names(scope, ZONE))
    pki.verify_server_chain(leaf, [again.intermediate], [first.root], f"10-0-0-7.{scope}.{ZONE}")


def test_authority_with_another_secret_is_refused_naming_the_setting(store):
    load_or_create_authority(store, ZONE, SECRET)
    with pytest.raises(AuthorityError, match="LANLOCK_SECRET_KEY"):
        load_or_create_authority(store, ZONE, b"another-secret-0123456789abcdef")


def test_authority_for_another_zone_is_refused_naming_both_zones(store):
    load_or_create_authority(store, ZONE, SECRET)
    with pytest.raises(AuthorityError) as info:
        load_or_create_authority(store, "iot.example", SECRET)
    assert ZONE in str(info.value)
    assert "iot.example" in str(info.value)


def test_authority_keys_are_stored_encrypted(store):
    ca = load_or_create_authority(store, ZONE, SECRET)
    with store.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT root_key_encrypted, intermediate_key_encrypted FROM certificate_authorities"
            )
        ).one()
    plain_intermediate = pki.private_key_pem(ca.intermediate_key)
    for stored, cert in zip(row, (ca.root, ca.intermediate), strict=True):
        stored = bytes(stored)
        assert b"ENCRYPTED PRIVATE KEY" in stored
        assert b"-----BEGIN PRIVATE KEY-----" not in stored
        assert plain_intermediate not in stored
        with pytest.raises(TypeError):  # a password is needed to read it
            serialization.load_pem_private_key(stored, password=None)
        assert pki.decrypt_private_key(stored, SECRET).public_key() == cert.public_key()


AUTHORITY_SCRIPT = """
    import sys
    from lanlock import pki
    from lanlock.cloud.authority import load_or_create_authority
    from lanlock.cloud.models import cloud_store
    store = cloud_store(sys.argv[1], pool_size=1)
    store.migrate()
    print("ready", flush=True)
    sys.stdin.readline()
    ca = load_or_create_authority(store, "iot.test", b"store-test-secret-0123456789abcdef")
    print(pki.key_fingerprint(ca.root.public_key()))
"""


def test_replicas_starting_at_once_agree_on_one_authority(store_url):
    store = cloud_store(store_url, pool_size=1)
    try:
        store.migrate()
        roots = run_at_once(AUTHORITY_SCRIPT, store_url)
        assert len(set(roots)) == 1
        assert (
            pki.key_fingerprint(load_or_create_authority(store, ZONE, SECRET).root.public_key())
            == roots[0]
        )
    finally:
        store.dispose()


def test_certificates_of_an_older_store_get_their_subscription_at_0007(store_url):
    """The budget counts a subscription's certificates by the subscription they were issued
    under: those issued before 0007 are given their box's."""
    store = cloud_store(store_url, pool_size=1)
    try:
        store.migrate("0006")
        with store.engine.connect() as conn:
            conn.execute(
                text(
                    "INSERT INTO databases (uuid, name, kind, created_at) "
                    "VALUES ('db', '', 'production', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO subscriptions (code, database_uuid, state, created_at) "
                    "VALUES ('SUB', 'db', 'in_progress', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO boxes (box_id, device_key_der, scope, database_uuid, "
                    "subscription_code, state, created_at, last_seen_at) VALUES ('b', :der, "
                    "'s', 'db', 'SUB', 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"der": b"key"},
            )
            conn.execute(
                text(
                    "INSERT INTO certificates (box_id, scope, key_fingerprint, serial, issuer, "
                    "not_before, not_after, x509_pem, chain_pem, created_at) VALUES ('b', 's', "
                    "'f', '1', 'local', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '', '', "
                    "CURRENT_TIMESTAMP)"
                )
            )
            conn.commit()
        store.migrate()
        with store.engine.connect() as conn:
            codes = conn.execute(text("SELECT subscription_code FROM certificates")).scalars()
            assert list(codes) == ["SUB"]
    finally:
        store.dispose()
