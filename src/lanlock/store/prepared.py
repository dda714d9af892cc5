"""Core statements run straight on the DBAPI cursor: SQLAlchemy compiles, the driver executes.

SQLAlchemy Core compiles a statement once (its compiled cache), but every execution still builds
an execution context, dispatches its events and wraps a result: about 20 µs a statement on the
cloud's machine, against 4 µs for the driver's cursor itself (BENCHMARKS.md, fifth session). The
cloud's express lane runs four statements for each box asking again, and a new box a dozen,
which made that overhead a tenth of their answers; SQLAlchemy has no leaner way to run a
compiled statement, so this module is that way, by hand and small: each statement is compiled by
SQLAlchemy once per dialect and set of parameter names, its values go through its types' own
bind processors and its rows through their result processors (so a value is written and read
exactly as Core would), and it runs on the Connection's own DBAPI connection, inside that
Connection's transaction.

What Core adds that this does not: the execution context (so no ``after_cursor_execute`` and no
other event but ``before_cursor_execute``, which a hook in the tests needs, with no context), and
column defaults computed in Python: such a statement must be given every column, and one that
would need a default is refused when it is first run. Driver errors are wrapped as Core wraps
them (``sqlalchemy.exc.IntegrityError`` and the rest).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import Compiled


class Prepared:
    """One Core statement (a select, insert or update built once at import), ready to run on a
    Connection's (or a Session's) cursor: :meth:`first` and :meth:`all` for a select's rows,
    :meth:`run` for a write."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, frozenset[str]], _Form] = {}

    def first(self, conn: Connection | Session, params: Mapping[str, Any]) -> Any | None:
        """The first row (attributes named as the statement's columns), or None."""
        conn = _connection(conn)
        form = self._form(conn, params)
        cursor = form.execute(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else form.row(row)

    def all(self, conn: Connection | Session, params: Mapping[str, Any]) -> list[Any]:
        conn = _connection(conn)
        form = self._form(conn, params)
        cursor = form.execute(conn, params)
        try:
            return [form.row(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def run(self, conn: Connection | Session, params: Mapping[str, Any]) -> int:
        """Run a write; the rows it changed (the driver's ``rowcount``)."""
        conn = _connection(conn)
        cursor = self._form(conn, params).execute(conn, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def _form(self, conn: Connection, params: Mapping[str, Any]) -> _Form:
        # An insert or update names its columns by the parameters given: one form for each set.
        key = (conn.dialect.name, frozenset(params))
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = _Form(self.statement, conn, params)
        return form


class _Form:
    """A statement compiled for one dialect and one set of parameter names."""

    def __init__(self, statement: Executable, conn: Connection, params: Mapping[str, Any]) -> None:
        dialect = conn.dialect
        self.compiled: Compiled = statement.compile(dialect=dialect, column_keys=list(params))
        compiled: Any = self.compiled
        defaulted = [c.key for c in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if defaulted:
            raise ValueError(f"a Prepared statement computes no default: give {defaulted}")
        self.sql = self.compiled.string
        self.dbapi_error = dialect.loaded_dbapi.Error
        self.order = list(self.compiled.positiontup or []) if self.compiled.positional else None
        self.bind_processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in self.compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.bind_processors[name] = processor
        columns = list(getattr(statement, "selected_columns", []))
        self.result_processors = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]
        self.row_type = namedtuple("Row", [c.key for c in columns]) if columns else None  # type: ignore[misc]

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        values = self.compiled.construct_params(params)
        for name, processor in self.bind_processors.items():
            values[name] = processor(values[name])
        arguments: Any = values if self.order is None else [values[n] for n in self.order]
        cursor = conn.connection.cursor()
        for listener in conn.dispatch.before_cursor_execute:  # none but in the tests
            listener(conn, cursor, self.sql, arguments, None, False)
        try:
            cursor.execute(self.sql, arguments)
        except self.dbapi_error as exc:
            cursor.close()
            raise DBAPIError.instance(self.sql, arguments, exc, self.dbapi_error) from exc
        return cursor

    def row(self, values: tuple[Any, ...]) -> Any:
        assert self.row_type is not None
        return self.row_type(
            *(
                value if processor is None or value is None else processor(value)
                for value, processor in zip(values, self.result_processors, strict=True)
            )
        )


def _connection(conn: Connection | Session) -> Connection:
    return conn.connection() if isinstance(conn, Session) else conn
