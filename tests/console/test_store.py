"""The console's own store: its migrations agree with its models, on SQLite and PostgreSQL, it
can share a database with the cloud's store without a clash, and a console runs on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from lanlock.cloud.models import Base as CloudBase
from lanlock.cloud.models import cloud_store
from lanlock.console.models import VERSION_TABLE, Base, console_store
from tests.console.conftest import CODE
from tests.console.running import (
    csrf_of,
    make_link,
    paired,
    race_for,
    report,
    running_console,
)
from tests.servers import fresh_store_url


def test_migrations_make_what_the_models_describe(store_url: str):
    store = console_store(store_url, pool_size=1)
    try:
        store.migrate()
        store.migrate()  # a second start changes nothing
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.dispose()


def test_the_console_and_the_cloud_can_share_one_database(store_url: str):
    cloud = cloud_store(store_url, pool_size=1)
    console = console_store(store_url, pool_size=1)
    try:
        cloud.migrate()
        console.migrate()
        tables = set(inspect(console.engine).get_table_names())
        assert tables == set(CloudBase.metadata.tables) | set(Base.metadata.tables) | {
            "alembic_version",
            VERSION_TABLE,
        }
    finally:
        cloud.dispose()
        console.dispose()


def test_a_console_on_postgresql_pairs_once_per_link_and_takes_reports(tmp_path: Path):
    with (
        fresh_store_url("postgres", tmp_path) as url,
        running_console(tmp_path / "console", store_url=url) as console,
    ):
        admin = console.logged_in()
        page = admin.get("/settings").text
        admin.post("/settings", data={"csrf": csrf_of(page), "code": CODE})
        assert race_for(console, make_link(admin)) == [200, 410, 410, 410]
        box_id, token = paired(console, admin)
        with console.client() as http:
            assert report(http, box_id, token).status_code == 200
        assert "HTTPS ready" in admin.get(f"/iot/boxes/{box_id}").text
        admin.close()
