"""Statements run on the DBAPI cursor (``lanlock.store.prepared``) write and read values exactly
as SQLAlchemy Core does, on SQLite and PostgreSQL, and fail as Core fails."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lanlock.cloud.models import SCHEMA
from lanlock.store import Store
from lanlock.store.prepared import Prepared
from lanlock.store.types import UTCDateTime
from tests.servers import fresh_store_url

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("at", UTCDateTime, nullable=True),
    Column("count", Integer, nullable=False, default=0),
)
ADD = Prepared(insert(things))
TOUCH = Prepared(update(things).where(things.c.name == bindparam("touched")))
ONE = Prepared(
    select(things.c.name, things.c.at, (things.c.count + 1).label("next")).where(
        things.c.name == bindparam("name")
    )
)
LIKE = Prepared(
    select(things.c.name, (things.c.count + 1).label("next")).where(
        things.c.name.like(bindparam("pattern"))
    )
)
defaulted = Table(
    "defaulted",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("at", UTCDateTime, nullable=False, default=lambda: dt.datetime.now(dt.UTC)),
)
WHEN = dt.datetime(2026, 11, 30, 13, 52, 7, 123456, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    with fresh_store_url(request.param, tmp_path_factory.mktemp(request.param)) as url:
        engine = Store(url, SCHEMA).engine  # the store's engine: SQLite as lanlock sets it up
        metadata.create_all(engine)
        yield engine
        engine.dispose()


ADD_SQL = "INSERT INTO things (name, at, count) VALUES "


def as_stored(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT CAST(at AS TEXT) FROM things WHERE name = :n"), {"n": name}
        ).scalar_one()


def test_a_value_is_written_as_core_writes_it(engine):
    with engine.begin() as conn:
        ADD.run(conn, {"name": "prepared", "at": WHEN, "count": 3})
        conn.execute(insert(things), {"name": "core", "at": WHEN, "count": 3})
    assert as_stored(engine, "prepared") == as_stored(engine, "core")
    with engine.connect() as conn:
        assert (
            conn.execute(select(things.c.at).where(things.c.name == "prepared")).scalar_one()
            == WHEN
        )


def test_a_row_is_read_as_core_reads_it(engine):
    with engine.begin() as conn:
        conn.execute(
            insert(things),
            {"name": "read", "at": WHEN.astimezone(dt.timezone(dt.timedelta(hours=2))), "count": 4},
        )
        row = ONE.first(conn, {"name": "read"})
        assert ONE.first(conn, {"name": "nobody"}) is None
    assert (row.name, row.at, row.next) == ("read", WHEN, 5)
    assert row.at.tzinfo is dt.UTC


def test_an_update_names_the_columns_it_is_given(engine):
    with engine.begin() as conn:
        ADD.run(conn, {"name": "touch", "at": None, "count": 1})
        TOUCH.run(conn, {"touched": "touch", "count": 7})
        assert ONE.first(conn, {"name": "touch"}).next == 8
        TOUCH.run(conn, {"touched": "touch", "at": WHEN})
        row = ONE.first(conn, {"name": "touch"})
    assert (row.at, row.next) == (WHEN, 8)


def test_a_driver_error_is_cores_and_the_transaction_goes_on_as_with_core(engine):
    with engine.begin() as conn:
        ADD.run(conn, {"name": "twice", "at": WHEN, "count": 1})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        ADD.run(conn, {"name": "twice", "at": WHEN, "count": 2})
    with engine.connect() as conn:
        assert ONE.first(conn, {"name": "twice"}).next == 2


def test_a_statement_hook_sees_it_as_it_sees_cores(engine):
    heard: list[str] = []

    def hook(_conn, _cursor, statement, *_args) -> None:
        heard.append(statement)

    event.listen(engine, "before_cursor_execute", hook)
    try:
        with engine.begin() as conn:
            ADD.run(conn, {"name": "heard", "at": WHEN, "count": 1})
    finally:
        event.remove(engine, "before_cursor_execute", hook)
    assert [s[: len(ADD_SQL)] for s in heard if s.startswith("INSERT INTO things")] == [ADD_SQL]


def test_a_write_says_how_many_rows_it_changed_and_a_select_gives_them_all(engine):
    with engine.begin() as conn:
        for name in ("all-1", "all-2"):
            ADD.run(conn, {"name": name, "at": WHEN, "count": 1})
        assert TOUCH.run(conn, {"touched": "all-1", "count": 5}) == 1
        assert TOUCH.run(conn, {"touched": "nobody", "count": 5}) == 0
        rows = LIKE.all(conn, {"pattern": "all-%"})
    assert sorted((r.name, r.next) for r in rows) == [("all-1", 6), ("all-2", 2)]


def test_a_column_default_computed_in_python_is_refused_not_left_null(engine):
    with engine.begin() as conn, pytest.raises(ValueError, match="give"):
        Prepared(insert(defaulted)).run(conn, {"name": "no time"})
