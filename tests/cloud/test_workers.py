"""``lanlock cloud serve --workers N``: N processes on one port share what must be shared, a
killed worker is replaced, and past ``--max-in-flight`` a worker sheds with 503 + Retry-After."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from lanlock.box.cloud_client import read_answer, signed_body
from lanlock.cloud.models import cloud_store
from lanlock.store import Store
from tests.boxes import Customer, TestBox, post_together
from tests.servers import RunningCloud, running_cloud


def worker_pids(cloud: RunningCloud) -> set[int]:
    children = Path(f"/proc/{cloud.process.pid}/task/{cloud.process.pid}/children")
    pids = {int(pid) for pid in children.read_text().split()}
    # multiprocessing's spawn start adds a resource tracker: the workers run lanlock's code
    return {pid for pid in pids if "resource_tracker" not in _cmdline(pid)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def metric(cloud: RunningCloud, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", cloud.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def wait_for(predicate, seconds: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError("not within the time allowed")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("workers"), "--workers", "2") as running:
        yield running


@pytest.fixture
def store(cloud: RunningCloud) -> Iterator[Store]:
    opened = cloud_store(cloud.store_url, pool_size=1)
    yield opened
    opened.dispose()


def test_two_workers_serve_one_port_and_add_up_their_metrics(cloud, store):
    assert len(wait_for(lambda: len(worker_pids(cloud)) == 2 and worker_pids(cloud))) == 2
    issued = 'lanlock_certificates_issued_total{issuer="local"}'
    before = metric(cloud, issued)  # the module's other tests share this cloud
    customer = Customer.create(store, iot_boxes=30)
    boxes = [TestBox(cloud.url) for _ in range(24)]
    bodies = [(cloud.url, signed_body(b.device_key, b.payload(customer))) for b in boxes]
    responses, _ = post_together(bodies, 60)
    assert [read_answer(r).result is not None for r in responses] == [True] * 24
    # Each worker counted its own; /metrics (answered by either) shows the sum.
    assert metric(cloud, issued) - before == 24


def test_one_scope_is_issued_once_whichever_worker_answers(cloud, store):
    customer = Customer.create(store, iot_boxes=1)
    box = TestBox(cloud.url)
    bodies = [(cloud.url, signed_body(box.device_key, box.payload(customer))) for _ in range(16)]
    responses, _ = post_together(bodies, 60)
    serials = {read_answer(r).result.x509_pem for r in responses}
    assert len(serials) == 1


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(cloud, store):
    before = wait_for(lambda: len(worker_pids(cloud)) == 2 and worker_pids(cloud))
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    after = wait_for(lambda: len(worker_pids(cloud) - before) == 1 and worker_pids(cloud))
    assert victim not in after and len(after) == 2
    customer = Customer.create(store, iot_boxes=10)
    for _ in range(10):
        assert TestBox(cloud.url).ask(customer).result is not None
    assert cloud.process.poll() is None


# 1: the default with SQLite and the embedded CA; 2: otherwise.
@pytest.mark.parametrize("threads", ["1", "2"])
def test_past_max_in_flight_a_worker_sheds_with_a_spread_retry_after(tmp_path, threads):
    limits = ("--max-in-flight", "1", "--threads", threads)
    with running_cloud(tmp_path, "--workers", "1", *limits) as cloud:
        store = cloud_store(cloud.store_url, pool_size=1)
        try:
            customer = Customer.create(store, iot_boxes=40)
        finally:
            store.dispose()
        boxes = [TestBox(cloud.url) for _ in range(30)]
        bodies = [signed_body(b.device_key, b.payload(customer)) for b in boxes]
        answers = posted_while_stopped(cloud.url, bodies, cloud.process.pid)
        shed = [a for a in answers if a.status == 503]
        served = [a for a in answers if a.status == 200]
        assert shed and served and len(shed) + len(served) == 30
        assert all(1 <= int(a.headers["retry-after"]) <= 10 for a in shed)
        assert "busy" in json.loads(shed[0].body)["detail"]
        assert metric(cloud, "lanlock_x509_shed_total") == len(shed)
        # A shed box that comes back later is served.
        again = httpx.post(
            cloud.url + "/iot/x509",
            content=signed_body(boxes[0].device_key, boxes[0].payload(customer)),
            headers={"Content-Type": "application/jose+json"},
            timeout=30,
        )
        assert read_answer(again).result is not None


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def posted_while_stopped(url: str, bodies: list[bytes], pid: int) -> list[RawAnswer]:
    """Each body on a connection of its own, all sent while the worker ``pid`` is stopped
    (SIGSTOP), then read once it goes on: a burst that arrives while it is busy, whatever the
    machine's load (threads released at once reach a loaded machine one by one)."""
    parts = urlsplit(url)
    connections = [
        http.client.HTTPConnection(parts.hostname, parts.port, timeout=60) for _ in bodies
    ]
    os.kill(pid, signal.SIGSTOP)
    try:
        for connection, body in zip(connections, bodies, strict=True):
            connection.request("POST", "/iot/x509", body, {"Content-Type": "application/jose+json"})
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        answers = []
        for connection in connections:
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            answers.append(RawAnswer(response.status, headers, response.read()))
        return answers
    finally:
        for connection in connections:
            connection.close()


def test_sigterm_stops_every_worker(tmp_path):
    with running_cloud(tmp_path, "--workers", "2") as cloud:
        pids = wait_for(lambda: len(worker_pids(cloud)) == 2 and worker_pids(cloud))
        cloud.process.send_signal(signal.SIGTERM)
        assert cloud.process.wait(30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_workers_of_a_killed_parent_stop_by_themselves(tmp_path):
    """SIGKILL on the parent (a host's OOM killer, an operator): no orphan keeps the port."""
    with running_cloud(tmp_path, "--workers", "2") as cloud:
        pids = wait_for(lambda: len(worker_pids(cloud)) == 2 and worker_pids(cloud))
        cloud.process.kill()
        cloud.process.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(cloud.url + "/healthz", timeout=5)
