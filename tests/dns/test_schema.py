"""The DNS reads the cloud's schema and never changes it: a store without it, or with one older
than the shared tables' contracts, is refused at start with the command that fixes it."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import MetaData, inspect

from lanlock import account_table, challenge_table
from lanlock.cli import main
from lanlock.cloud.models import SCHEMA, cloud_store
from lanlock.dns.challenges import REQUIRED_REVISION
from lanlock.store import alembic_config
from tests.dns.running import running_dns
from tests.servers import ZONE


def dns_serve(store_url: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["dns", "serve", "--store", store_url, "--port", "0"])
    return result.exit_code, result.output


def test_a_missing_sqlite_store_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "cloud.db"
    code, output = dns_serve(f"sqlite:///{path}")
    assert code == 1
    assert f"there is no store at {path}" in output
    assert f"lanlock cloud migrate --store sqlite:///{path}" in output
    assert "Traceback" not in output
    assert not path.exists()


def test_a_store_without_the_cloud_schema_is_refused_unchanged(store_url: str) -> None:
    store = cloud_store(store_url, pool_size=1)
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
            conn.commit()
        code, output = dns_serve(store_url)
        assert code == 1
        assert "the store holds no lanlock cloud schema" in output
        assert "lanlock cloud migrate --store" in output
        assert store.revision() is None  # the DNS did not migrate it
    finally:
        store.dispose()


def test_a_schema_older_than_the_contract_is_refused(store_url: str) -> None:
    store = cloud_store(store_url, pool_size=1)
    try:
        store.migrate("0003")
        code, output = dns_serve(store_url)
        assert code == 1
        assert (
            f"the store's cloud schema is at revision 0003, and this DNS reads revision "
            f"{REQUIRED_REVISION} or later"
        ) in output
        assert store.revision() == "0003"
    finally:
        store.dispose()


def test_cloud_migrate_makes_the_schema_the_dns_needs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    result = CliRunner().invoke(main, ["cloud", "migrate", "--store", url, "--json"])
    assert result.exit_code == 0, result.output
    head = ScriptDirectory.from_config(alembic_config(SCHEMA)).get_current_head()
    assert json.loads(result.output) == {"revision": head}
    with running_dns(url, tmp_path, workers=1, migrate=False) as server:
        assert server.ask(ZONE, "SOA").answer


def test_cloud_revisions_are_numbers_in_order() -> None:
    """The DNS compares revisions as numbers: every revision must be one, one above the last."""
    scripts = ScriptDirectory.from_config(alembic_config(SCHEMA))
    revisions = [s.revision for s in scripts.walk_revisions()][::-1]
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert int(REQUIRED_REVISION) <= len(revisions)


@pytest.mark.parametrize("contract", [challenge_table, account_table], ids=lambda c: c.NAME)
def test_each_shared_table_has_its_contract_s_columns_from_its_first_revision(
    store_url: str, contract: ModuleType
) -> None:
    """What the DNS reads is there from the revision each contract names (and the DNS asks for
    the later of them)."""
    store = cloud_store(store_url, pool_size=1)
    try:
        store.migrate(contract.FIRST_REVISION)
        with store.engine.connect() as conn:
            found = {c["name"]: c["nullable"] for c in inspect(conn).get_columns(contract.NAME)}
    finally:
        store.dispose()
    table = contract.define(MetaData())
    assert found == {column.name: column.nullable for column in table.columns}
    assert int(contract.FIRST_REVISION) <= int(REQUIRED_REVISION)
