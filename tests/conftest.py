from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lanlock.cloud import models as cloud_models
from lanlock.store import Store
from tests.servers import RunningCloud, fresh_store_url, running_cloud

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store, once on SQLite and once on PostgreSQL."""
    with fresh_store_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=BACKENDS, scope="module")
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCloud]:
    """One real cloud per backend for a test module; tests make their own databases in it."""
    tmp = tmp_path_factory.mktemp(f"cloud-{request.param}")
    with running_cloud(tmp, "--failure-limit", "10000", backend=request.param) as running:
        yield running


@pytest.fixture
def cloud_store(cloud: RunningCloud) -> Iterator[Store]:
    """The running cloud's store, opened by the test (as the admin command line would)."""
    store = cloud_models.cloud_store(cloud.store_url, pool_size=2)
    yield store
    store.dispose()
