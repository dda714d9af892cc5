"""The console's own store: its migrations agree with its models, on SQLite and PostgreSQL, it
can share a database with the cloud's store without a clash, and a console runs on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from lanlock.cloud.models import Base as CloudBase
from lanlock.cloud.models import cloud_store
from lanlock.console import boxes
from lanlock.console.models import VERSION_TABLE, Base, console_store
from lanlock.store.types import utcnow
from tests.console.conftest import CODE
from tests.console.running import (
    csrf_of,
    make_link,
    paired,
    race_for,
    report,
    running_console,
    status_fields,
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


def test_a_store_of_the_previous_release_upgrades_in_place_with_its_boxes(store_url: str):
    """c0003 adds not_before and urls: a box's row written before reads as an older box's."""
    store = console_store(store_url, pool_size=1)
    url = "https://10-0-0-7.abcdefghijklmnop.iot.test/"
    not_after = utcnow().replace(microsecond=0) + dt.timedelta(days=3)
    try:
        store.migrate("c0002")
        with store.engine.connect() as conn:
            conn.execute(
                text(
                    "INSERT INTO console_boxes (box_id, name, token, url, state, not_after, "
                    "paired_at, last_seen_at) VALUES ('b', 'Till', 't', :url, 'valid', "
                    ":not_after, :now, :now)"
                ),
                {"url": url, "not_after": not_after, "now": utcnow()},
            )
            conn.commit()
        store.migrate()
        [card] = boxes.cards(store)
        assert (card.name, card.url, card.not_after) == ("Till", url, not_after)
        assert (card.not_before, card.urls) == (None, (url,))
        warning = card.warning()
        assert warning is not None and not warning.lifetime_known  # 3 days left, lifetime unknown
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
        # The columns of c0003 on PostgreSQL: a JSON list of URLs, and the lifetime it warns by.
        urls = [status_fields(box_id)["url"], "https://fd00--7.abcdefghijklmnop.iot.test/"]
        now = utcnow()
        late = {
            "not_before": (now - dt.timedelta(days=80)).isoformat(),
            "not_after": (now + dt.timedelta(days=10)).isoformat(),
            "urls": urls,
        }
        with console.client() as http:
            assert report(http, box_id, token, late).status_code == 200
        [row] = [row for row in console.cli_json("boxes") if row["box_id"] == box_id]
        assert row["urls"] == urls and row["warning"]["lifetime_known"]
        assert f'href="{urls[1]}"' in admin.get(f"/iot/boxes/{box_id}").text
        admin.close()
