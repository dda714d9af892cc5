from __future__ import annotations

from collections.abc import Iterator

import pytest

from lanlock.cloud.models import cloud_store
from lanlock.store import Store
from tests.servers import fresh_store_url


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A migrated cloud store for a test module, once on SQLite and once on PostgreSQL (a
    module's own ``store`` fixture takes its place)."""
    with fresh_store_url(request.param, tmp_path_factory.mktemp(request.param)) as url:
        opened = cloud_store(url, pool_size=4)
        opened.migrate()
        yield opened
        opened.dispose()
