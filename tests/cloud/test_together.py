"""Requests answered together (issue #13): ``X509Service.handle_many`` gives each request the
answer ``handle`` gives it alone, with one transaction and one commit for all their first looks,
and the worker's admission hands a thread the requests queued for it at once.

On SQLite and PostgreSQL (the method holds on both; the server batches on SQLite only).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from lanlock import pki
from lanlock.cloud.app import BATCH_MOST, Admission
from lanlock.cloud.issuance import ScopeLease
from lanlock.cloud.models import Box, Certificate, SeenNonce
from lanlock.cloud.x509 import Answer
from tests.boxes import Customer, audit_of
from tests.cloud.test_first_look import Device, ask, code_of, count, service

SOURCE = "192.0.2.10"


def together(cloud: Any, *bodies: bytes) -> list[Answer | Exception]:
    return cloud.handle_many([(body, SOURCE) for body in bodies])


def commits_during(store: Any, work: Any) -> tuple[Any, int]:
    commits = []

    def counted(_conn: Any) -> None:
        commits.append(1)

    event.listen(store.engine, "commit", counted)
    try:
        return work(), len(commits)
    finally:
        event.remove(store.engine, "commit", counted)


def test_a_batch_answers_each_request_as_it_would_be_answered_alone(store):
    cloud = service(store)
    customer = Customer.create(store, iot_boxes=3)
    known, new = Device(customer), Device(customer)
    assert ask(cloud, known.body()).status == 200
    no_line = Device(Customer.create(store, iot_boxes=0))
    new_body = new.body()

    answers, commits = commits_during(
        store,
        lambda: together(cloud, known.body(), new_body, new_body, b"not a JWS", no_line.body()),
    )

    reused, issued, replayed, garbage, refused = answers
    assert isinstance(reused, Answer) and reused.status == 200 and "result" in reused.body
    assert isinstance(issued, Answer) and issued.status == 200 and "result" in issued.body
    assert isinstance(replayed, Answer) and replayed.status == 401
    assert "nonce was seen before" in replayed.body["detail"]
    assert isinstance(garbage, Answer) and garbage.status == 400
    assert isinstance(refused, Answer) and code_of(refused) == "no_iot_box_line"
    # One commit for the five first looks; the two rejections' audit lines, one each.
    assert commits == 3
    assert count(store, Certificate, Certificate.box_id == new.box_id) == 1
    assert [o for o, _ in audit_of(store, new.box_id)] == ["issued", "unauthorized"]
    assert [o for o, _ in audit_of(store, known.box_id)] == ["issued", "reused"]
    assert audit_of(store, no_line.box_id) == [("refused", "no_iot_box_line")]


def test_a_batch_whose_commit_fails_answers_all_503_and_keeps_nothing(store):
    cloud = service(store)
    customer = Customer.create(store, iot_boxes=3)
    known, new = Device(customer), Device(customer)
    assert ask(cloud, known.body()).status == 200
    bodies = [known.body(), new.body()]
    nonces_before = count(store, SeenNonce)

    def lost(_conn: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(store.engine, "commit", lost)
    try:
        answers = together(cloud, *bodies)
    finally:
        event.remove(store.engine, "commit", lost)

    assert [(a.status, a.headers.get("Retry-After")) for a in answers] == [(503, "5")] * 2  # type: ignore[union-attr]
    assert count(store, SeenNonce) == nonces_before
    assert count(store, Box, Box.box_id == new.box_id) == 0
    # Nothing was kept, so the same bodies, sent again, are answered (no replay).
    assert [a.status for a in together(cloud, *bodies)] == [200, 200]  # type: ignore[union-attr]


def test_a_bug_in_one_request_fails_that_request_alone(store, monkeypatch):
    cloud = service(store)
    customer = Customer.create(store, iot_boxes=3)
    victim, other = Device(customer), Device(customer)
    first_look = cloud._first_look

    def broken(conn: Any, asking: Any) -> Any:
        answer = first_look(conn, asking)  # its writes are made, then undone with its savepoint
        if asking.request.box_id == victim.box_id:
            raise RuntimeError("a bug")
        return answer

    monkeypatch.setattr(cloud, "_first_look", broken)
    victim_body = victim.body()
    failed, served = together(cloud, victim_body, other.body())
    monkeypatch.undo()

    assert isinstance(failed, RuntimeError)
    assert isinstance(served, Answer) and served.status == 200
    assert count(store, Box, Box.box_id == victim.box_id) == 0
    assert audit_of(store, victim.box_id) == []
    assert ask(cloud, victim_body).status == 200  # its nonce went with its savepoint


def test_no_answer_waits_for_another_requests_lease(store):
    """A renewal whose scope's lease another replica holds waits for it (up to
    lease_wait_seconds): the other answers of its batch are handed over before it."""
    cloud = service(store, lease_wait_seconds=0.3)
    customer = Customer.create(store, iot_boxes=3)
    renewing, other = Device(customer), Device(customer)
    assert ask(cloud, renewing.body()).status == 200
    with store.transaction() as session:
        scope = session.scalar(select(Box.scope).where(Box.box_id == renewing.box_id))
    replica = ScopeLease(store, 60)
    with store.transaction() as session:
        assert replica.acquire_in(session, scope)
    renewing.tls_key = pki.new_private_key()
    delivered: list[list[int]] = []
    try:
        answers = cloud.handle_many(
            [(renewing.body(), SOURCE), (other.body(), SOURCE)],
            lambda ready: delivered.append(sorted(ready)),
        )
    finally:
        replica.release(scope)
    assert delivered == [[1], [0]]
    assert [a.status for a in answers] == [503, 200]  # type: ignore[union-attr]


class CountingService:
    """Answers each body with itself, a little slowly, and keeps the size of each batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def handle_many(self, bodies: list[tuple[bytes, str]], deliver: Any) -> list[Answer]:
        self.batches.append(len(bodies))
        time.sleep(0.005 * len(bodies))
        answers = [Answer(200, {"body": body.decode()}) for body, _ in bodies]
        deliver(dict(enumerate(answers)))
        return answers


def test_the_admission_answers_every_queued_request_in_batches_of_at_most_batch_most():
    admission = Admission(limit=1000, threads=1, together=True)
    fake = CountingService()

    async def all_of_them() -> list[Answer]:
        asks = [admission.answer(fake, str(i).encode(), SOURCE) for i in range(2 * BATCH_MOST + 5)]
        return await asyncio.wait_for(asyncio.gather(*asks), 30)  # none left behind

    answers = asyncio.run(all_of_them())

    assert [a.body["body"] for a in answers] == [str(i) for i in range(2 * BATCH_MOST + 5)]
    assert sum(fake.batches) == 2 * BATCH_MOST + 5
    assert max(fake.batches) == BATCH_MOST and len(fake.batches) < 2 * BATCH_MOST + 5
