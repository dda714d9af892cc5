"""Concurrency rules across two cloud processes sharing one store (docs/design.md §6, §11).

The rules must hold on PostgreSQL across processes, not only inside one; SQLite is run too,
because a small vendor may run two processes on one file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from lanlock.box.cloud_client import read_answer, signed_body
from lanlock.cloud.models import AuditEntry, Box, Certificate, cloud_store
from tests.boxes import Customer, TestBox, post_together
from tests.servers import RunningCloud, fresh_store_url, start_cloud
from tests.threads import assert_overlapping


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def two_clouds(request, tmp_path_factory) -> Iterator[tuple[RunningCloud, RunningCloud]]:
    tmp: Path = tmp_path_factory.mktemp(f"two-{request.param}")
    with fresh_store_url(request.param, tmp) as url:
        first = start_cloud(url, tmp / "one")
        second = start_cloud(url, tmp / "two")
        try:
            yield first, second
        finally:
            first.stop()
            second.stop()


def fire_at_once(requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """Send every (url, body) from its own thread, released together; they must have raced."""
    responses, spans = post_together(requests, seconds=120)
    assert_overlapping(spans)
    return responses


def test_fifty_simultaneous_first_requests_of_one_box_issue_once(two_clouds):
    first, second = two_clouds
    store = cloud_store(first.store_url, pool_size=2)
    customer = Customer.create(store)
    box = TestBox(first.url)
    bodies = [signed_body(box.device_key, box.payload(customer)) for _ in range(50)]
    responses = fire_at_once([((first, second)[i % 2].url, body) for i, body in enumerate(bodies)])

    answers = [read_answer(r) for r in responses]
    assert all(a.status == 200 and a.result for a in answers), {a.status for a in answers}
    assert len({a.result.x509_pem for a in answers}) == 1
    with store.transaction() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(Certificate)
                .where(Certificate.box_id == box.box_id)
            )
            == 1
        )
        outcomes = session.scalars(
            select(AuditEntry.outcome).where(AuditEntry.box_id == box.box_id)
        ).all()
    assert sorted(outcomes) == ["issued"] + ["reused"] * 49
    store.dispose()


def test_twenty_new_boxes_racing_for_five_slots_register_exactly_five(two_clouds):
    first, second = two_clouds
    store = cloud_store(first.store_url, pool_size=2)
    customer = Customer.create(store, iot_boxes=5)
    boxes = [TestBox(first.url) for _ in range(20)]
    bodies = [signed_body(b.device_key, b.payload(customer)) for b in boxes]
    responses = fire_at_once([((first, second)[i % 2].url, body) for i, body in enumerate(bodies)])

    answers = [read_answer(r) for r in responses]
    granted = [a for a in answers if a.result]
    refused = [a for a in answers if a.refusal_code]
    assert len(granted) == 5
    assert len(refused) == 15
    assert {a.refusal_code for a in refused} == {"box_quota_exceeded"}
    with store.transaction() as session:
        registered = session.scalar(
            select(func.count()).select_from(Box).where(Box.subscription_code == customer.code)
        )
    assert registered == 5
    store.dispose()
