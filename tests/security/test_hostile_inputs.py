"""Boundary: no field a stranger controls makes a server fail (a 500 and a traceback).

Found in review, each answered now with the refusal it deserves, over the wire:
* the cloud: a signed request whose ``iat`` is an integer too large for a float;
* the box: a form token, or a signed log link's signature, that is not ASCII; an ``expires``
  made of digits that are not ASCII (``²``, which ``str.isdigit`` accepts and ``int`` refuses);
* the console: a status report whose signature is not ASCII, or whose time is too large.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from lanlock.box.settings import change_config
from lanlock.cloud.models import cloud_store
from lanlock.jws import signed_body
from tests.boxes import Customer, TestBox
from tests.console.running import (
    RunningConsole,
    paired,
    running_console,
    set_subscription_code,
    status_fields,
)
from tests.servers import RunningBox, running_cloud, start_box


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    with running_cloud(tmp_path_factory.mktemp("hostile-cloud")) as running:
        yield running


@pytest.mark.parametrize(
    "override",
    [{"iat": 10**400}, {"enterprise_code": "\ud800"}, {"db_uuid": "\udfff"}, {"address": "\ud800"}],
)
def test_fields_no_clock_or_codec_can_hold_are_a_400(cloud, override):
    store = cloud_store(cloud.store_url, pool_size=1)
    box = TestBox(cloud.url)
    payload = box.payload(Customer.create(store), **override)
    store.dispose()
    answer = box.post_body(signed_body(box.device_key, payload))
    assert answer.status_code == 400, answer.text
    assert "Traceback" not in cloud.log.read_text()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    """A box with a console token, so that signed log links are checked to the signature."""
    data = tmp_path_factory.mktemp("hostile-box")

    def paired(config) -> None:
        config.console_url, config.token = "http://127.0.0.1:1", "ab" * 32

    change_config(data, paired)
    running = start_box(data, "--cloud", "http://127.0.0.1:1")
    running.wait_for(lambda s: s["state"] != "checking")
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("POST", "/log-level", {"csrf": "{now}.é", "password": "x", "level": "DEBUG"}),
        ("GET", "/logs/download?expires={soon}&signature=%C3%A9", None),
        ("GET", "/logs/download?expires=%C2%B2&signature=00", None),
        ("GET", "/logs/download?expires=" + "9" * 400 + "&signature=00", None),
    ],
)
def test_the_box_refuses_non_ascii_tokens_and_digits(box, method, path, form):
    now = int(time.time())
    path = path.format(soon=now + 60)
    form = {k: v.format(now=now) for k, v in form.items()} if form else None
    with httpx.Client(base_url=box.http_url, timeout=30) as client:
        answer = client.request(method, path, data=form, headers={"Origin": box.http_url})
    assert answer.status_code in (400, 403), (answer.status_code, answer.text[:300])
    assert "Traceback" not in box.log.read_text()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningConsole]:
    with running_console(tmp_path_factory.mktemp("hostile-console")) as running:
        yield running


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Lanlock-Time": "NOW", "X-Lanlock-Signature": b"\xc3\xa9" * 32},
        {"X-Lanlock-Time": "9" * 400, "X-Lanlock-Signature": "00" * 32},
    ],
)
def test_the_console_refuses_non_ascii_signatures_and_huge_times(console, headers):
    http = console.logged_in()
    set_subscription_code(http, "SUB-2026-HOSTILE-0001")
    box_id, _ = paired(console, http)
    http.close()
    headers = {**headers, "X-Lanlock-Box": box_id, "Content-Type": "application/json"}
    if headers["X-Lanlock-Time"] == "NOW":
        headers["X-Lanlock-Time"] = str(int(time.time()))
    with console.client() as client:
        answer = client.post(
            "/iot/status", content=json.dumps(status_fields(box_id)).encode(), headers=headers
        )
    assert answer.status_code == 401, (answer.status_code, answer.text[:300])
    assert "Traceback" not in console.log_text()
