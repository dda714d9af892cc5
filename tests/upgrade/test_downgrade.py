"""A store a newer lanlock migrated is refused by this one, in one line that names the store's
revision and says to upgrade the software, by every role that opens it; and is left as it was.

The newer store is this version's, stamped with a revision no release has: what the next
release's store looks like to this code, as this version's store looks to the previous release.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import TableClause, column, select, table, update

from lanlock.cloud.models import cloud_store
from lanlock.console.models import console_store
from lanlock.store import Store
from tests.servers import free_port, fresh_store_url, lanlock_command

FUTURE = "9999"
FUTURE_CONSOLE = "c9999"


def versions(store: Store) -> TableClause:
    """The schema's version table, written and read directly: lanlock.store refuses it."""
    return table(store.schema.version_table, column("version_num"))


def stamp(store: Store, revision: str) -> None:
    """Migrate with this version, then mark the schema as a newer version would have."""
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(update(versions(store)).values(version_num=revision))


@pytest.fixture(params=["sqlite", "postgres"])
def newer_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store whose cloud and console schemas are both newer than this code knows."""
    with fresh_store_url(request.param, tmp_path) as url:
        for opened, revision in (
            (cloud_store(url, 1), FUTURE),
            (console_store(url, 1), FUTURE_CONSOLE),
        ):
            try:
                stamp(opened, revision)
            finally:
                opened.dispose()
        yield url


def refusals(url: str, data: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each role's command on ``url``, all at once (each exits at start, or hangs serving)."""
    options = ("--store", url, "--data", str(data))
    commands = {
        "cloud migrate": ("cloud", "migrate", *options),
        "cloud serve": ("cloud", "serve", *options, "--port", str(free_port()), "--workers", "1"),
        "dns serve": ("dns", "serve", "--store", url, "--port", str(free_port()), "--workers", "1"),
        "console serve": ("console", "serve", *options, "--port", str(free_port())),
    }
    started = {
        name: subprocess.Popen(
            lanlock_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, args in commands.items()
    }
    return {name: finished(process) for name, process in started.items()}


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it went on serving instead of refusing: stopped here
        process.kill()
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def revisions(url: str) -> tuple[str | None, str | None]:
    found = []
    for opened in (cloud_store(url, 1), console_store(url, 1)):
        try:
            with opened.engine.connect() as conn:
                found.append(conn.execute(select(versions(opened).c.version_num)).scalar())
        finally:
            opened.dispose()
    return found[0], found[1]


def test_every_role_refuses_a_newer_store_in_one_line_and_leaves_it(
    newer_store: str, tmp_path: Path
) -> None:
    for name, done in refusals(newer_store, tmp_path).items():
        revision = FUTURE_CONSOLE if name.startswith("console") else FUTURE
        assert done.returncode == 1, f"{name}: {done.stdout}{done.stderr}"
        assert done.stderr.count("\n") == 1, f"{name}: {done.stderr}"  # one line, no traceback
        assert done.stderr.startswith(f"Error: the store's schema is at revision {revision}, ")
        assert "newer than this lanlock knows" in done.stderr, name
        assert "Upgrade lanlock to that version or later" in done.stderr, name
    assert revisions(newer_store) == (FUTURE, FUTURE_CONSOLE)
