"""Boundary: guessing subscription codes is slow, and nobody's guessing locks out a good box.

The attackers: a stranger who read a database's UUID (it is on every box's homepage) and guesses
its subscription code, from one network or spread over many; a guesser behind the same NAT as a
shop's boxes; and anyone who spreads a guess over the cloud's replicas. What must hold:

* a request signed by a key already registered to that database is never limited by others'
  failures, whatever its source;
* failures are counted per source network (/24 for IPv4, /56 for IPv6), behind a trusted proxy
  per the client address it forwards, never per a spoofable header from anyone else;
* a database under attack (too many failures for it, from anywhere) still takes new boxes from
  the networks where its own boxes already work; new boxes from other networks wait (429);
* the counts are shared by every replica, through the store.

Loopback carries every 127.0.0.0/8 address, so 127.0.N.x are different /24 networks here.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lanlock.box.cloud_client import read_answer, signed_body
from lanlock.cloud.models import cloud_store
from tests.boxes import Customer, TestBox
from tests.servers import RunningCloud, fresh_store_url, start_cloud

LIMIT = 3


@pytest.fixture
def store_url(tmp_path) -> Iterator[str]:
    with fresh_store_url("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def cloud(store_url, tmp_path) -> Iterator[RunningCloud]:
    running = start_cloud(
        store_url, tmp_path / "a", "--failure-limit", str(LIMIT), "--trusted-proxy", "127.0.200.1"
    )
    yield running
    running.stop()


def customers(url: str, count: int = 1) -> list[Customer]:
    store = cloud_store(url, pool_size=1)
    try:
        return [Customer.create(store) for _ in range(count)]
    finally:
        store.dispose()


def ask(
    cloud: RunningCloud,
    box: TestBox,
    customer: Customer,
    source: str,
    forwarded_for: str | None = None,
) -> httpx.Response:
    """One request whose TCP connection comes from ``source``."""
    headers = {"Content-Type": "application/jose+json"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as client:
        return client.post(
            cloud.url + "/iot/x509",
            content=signed_body(box.device_key, box.payload(customer)),
            headers=headers,
        )


def fail(cloud, customer: Customer, source: str, times: int = LIMIT, **kw: str) -> None:
    wrong = Customer(customer.db_uuid, "SUB-guess")
    for _ in range(times):
        answer = read_answer(ask(cloud, TestBox(cloud.url), wrong, source, **kw))
        assert answer.refusal_code == "invalid_credentials", answer


def served(response: httpx.Response) -> bool:
    return response.status_code == 200 and read_answer(response).result is not None


def test_a_registered_box_behind_the_guessers_nat_is_never_limited(cloud, store_url):
    shop, other = customers(store_url, 2)
    registered = TestBox(cloud.url)
    assert served(ask(cloud, registered, shop, "127.0.1.1"))
    fail(cloud, other, "127.0.1.1")  # the same address, guessing someone else's code
    assert ask(cloud, TestBox(cloud.url), other, "127.0.1.1").status_code == 429
    assert served(ask(cloud, registered, shop, "127.0.1.1"))


def test_the_source_limit_covers_the_whole_network(cloud, store_url):
    victim, bystander = customers(store_url, 2)
    fail(cloud, victim, "127.0.2.1")
    limited = ask(cloud, TestBox(cloud.url), bystander, "127.0.2.77")  # same /24
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert served(ask(cloud, TestBox(cloud.url), bystander, "127.0.3.77"))  # another /24


def test_a_stranger_with_the_uuid_cannot_block_the_shops_new_boxes(cloud, store_url):
    (victim,) = customers(store_url)
    assert served(ask(cloud, TestBox(cloud.url), victim, "127.0.4.10"))  # the shop's network
    for network in range(5, 5 + LIMIT):  # spread over networks: under every per-source limit
        fail(cloud, victim, f"127.0.{network}.1", times=1)
    # The database is under attack: new boxes from the shop's own network are still served ...
    assert served(ask(cloud, TestBox(cloud.url), victim, "127.0.4.11"))
    # ... and so are its registered boxes anywhere; new boxes from elsewhere wait.
    assert ask(cloud, TestBox(cloud.url), victim, "127.0.9.1").status_code == 429


def test_the_counts_are_shared_by_every_replica(cloud, store_url, tmp_path):
    (victim,) = customers(store_url)
    second = start_cloud(store_url, tmp_path / "b", "--failure-limit", str(LIMIT))
    try:
        replicas = [cloud, second]
        wrong = Customer(victim.db_uuid, "SUB-guess")
        for attempt in range(LIMIT):
            answer = ask(replicas[attempt % 2], TestBox(cloud.url), wrong, "127.0.10.1")
            assert read_answer(answer).refusal_code == "invalid_credentials"
        for replica in replicas:
            assert ask(replica, TestBox(cloud.url), wrong, "127.0.10.1").status_code == 429
    finally:
        second.stop()


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(cloud, store_url):
    victim, bystander = customers(store_url, 2)
    proxy = "127.0.200.1"
    fail(cloud, victim, proxy, forwarded_for="198.51.100.7")
    limited = ask(cloud, TestBox(cloud.url), bystander, proxy, forwarded_for="198.51.100.99")
    assert limited.status_code == 429  # the same client /24, seen through the proxy
    assert served(ask(cloud, TestBox(cloud.url), bystander, proxy, forwarded_for="203.0.113.9"))
    # A client cannot pick its own entry: only the proxy's (rightmost) one is believed.
    spoofed = "203.0.113.50, 198.51.100.8"
    assert ask(cloud, TestBox(cloud.url), bystander, proxy, forwarded_for=spoofed).status_code == (
        429
    )


def test_ipv6_clients_are_counted_per_56(cloud, store_url):
    victim, bystander = customers(store_url, 2)
    proxy = "127.0.200.1"
    fail(cloud, victim, proxy, forwarded_for="2001:db8:0:1::1")
    same_56 = ask(cloud, TestBox(cloud.url), bystander, proxy, forwarded_for="2001:db8:0:ff::2")
    assert same_56.status_code == 429
    other_56 = ask(cloud, TestBox(cloud.url), bystander, proxy, forwarded_for="2001:db8:0:100::1")
    assert served(other_56)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(cloud, store_url):
    victim, bystander = customers(store_url, 2)
    for n in range(LIMIT):  # each guess claims another client: it is still the same network
        fail(cloud, victim, "127.0.11.1", times=1, forwarded_for=f"192.0.2.{n}")
    limited = ask(cloud, TestBox(cloud.url), bystander, "127.0.11.1", forwarded_for="192.0.2.200")
    assert limited.status_code == 429
