"""Failed credential attempts are limited per source address and per database (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lanlock.box.cloud_client import read_answer, signed_body
from lanlock.store import Store
from tests.boxes import Customer, TestBox
from tests.servers import RunningCloud, fresh_store_url, start_cloud

LIMIT = 3


@pytest.fixture
def strict_cloud(tmp_path) -> Iterator[RunningCloud]:
    with fresh_store_url("sqlite", tmp_path) as url:
        running = start_cloud(url, tmp_path / "data", "--failure-limit", str(LIMIT))
        yield running
        running.stop()


def ask_from(source: str, box: TestBox, customer: Customer) -> httpx.Response:
    """One request whose TCP connection comes from ``source`` (any 127.0.0.0/8 address)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(
            box.cloud_url + "/iot/x509",
            content=signed_body(box.device_key, box.payload(customer)),
            headers={"Content-Type": "application/jose+json"},
        )


def test_repeated_bad_codes_get_429_per_source_and_per_database(strict_cloud):
    store = Store(strict_cloud.store_url, pool_size=2)
    victim = Customer.create(store)
    bystander = Customer.create(store)
    registered = TestBox(strict_cloud.url)
    assert read_answer(ask_from("127.0.0.3", registered, victim)).result

    guesser = TestBox(strict_cloud.url)
    wrong = Customer(victim.db_uuid, "SUB-guess")
    for _ in range(LIMIT):
        assert read_answer(ask_from("127.0.0.1", guesser, wrong)).refusal_code == (
            "invalid_credentials"
        )
    limited = ask_from("127.0.0.1", guesser, wrong)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The guessing source is held back even with good credentials for another database ...
    assert ask_from("127.0.0.1", TestBox(strict_cloud.url), bystander).status_code == 429
    # ... the guessed database refuses new boxes from anywhere while the guessing lasts ...
    assert ask_from("127.0.0.2", TestBox(strict_cloud.url), victim).status_code == 429
    # ... but its registered boxes, which prove themselves by their key, are never locked out,
    assert read_answer(ask_from("127.0.0.2", registered, victim)).result
    # and other sources and databases are untouched.
    assert read_answer(ask_from("127.0.0.2", TestBox(strict_cloud.url), bystander)).result
    store.dispose()
