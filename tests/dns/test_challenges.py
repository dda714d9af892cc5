"""The DNS-01 TXT values the cloud writes in the shared store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import dns.rdatatype
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.dns.running import (
    RunningDNS,
    publish,
    running_dns,
    seconds_until_everywhere,
    txt_values,
    unpublish,
)
from tests.realparts import POSTGRES_URL
from tests.servers import fresh_store_url

ZONE = "iot.test"
# Seconds from the cloud's commit to the answer. Each worker renews its snapshot every 0.25 s; a
# value held until its TTL (10 s) or read only at start would miss this bound, while a loaded
# 2-core machine keeps well inside it. How fast it really is belongs to the benchmarks.
FRESH_WITHIN = 5.0
STALE_AFTER = 5.0  # seconds a worker answers its last snapshot while the store is out of reach
LATE = 5.0  # slack for a loaded 2-core machine


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDNS]:
    tmp = tmp_path_factory.mktemp(f"dns-{request.param}")
    with fresh_store_url(request.param, tmp) as url, running_dns(url, tmp) as running:
        yield running


def settles(server: RunningDNS, name: str, expected: set[str]) -> None:
    seconds_until_everywhere(server, name, expected, within=FRESH_WITHIN)


def test_a_published_value_is_answered_within_seconds(server: RunningDNS, scope: str) -> None:
    name = f"_acme-challenge.{scope}.{ZONE}"
    assert txt_values(server, name) == set()
    publish(server.store_url, name, "token-one")
    settles(server, name, {"token-one"})


def test_a_removed_value_disappears_within_seconds(server: RunningDNS, scope: str) -> None:
    name = f"_acme-challenge.{scope}.{ZONE}"
    publish(server.store_url, name, "going")
    settles(server, name, {"going"})
    unpublish(server.store_url, name)
    settles(server, name, set())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_every_value_at_a_name_is_answered(server: RunningDNS, scope: str, transport: str) -> None:
    """The wildcard and the base name share one challenge name: two values, and more."""
    name = f"_acme-challenge.{scope}.{ZONE}"
    values = {"wildcard-Kd8Q1x", "base-name-9fJ2aa", "a-third-one"}
    publish(server.store_url, name, *values)
    settles(server, name, values)
    response = server.ask(name, "TXT", transport)
    assert len(response.answer) == 1
    assert response.answer[0].ttl == 10


def test_expired_values_are_not_answered(server: RunningDNS, scope: str) -> None:
    name = f"_acme-challenge.{scope}.{ZONE}"
    publish(server.store_url, name, "expired", ttl=dt.timedelta(seconds=-1))
    publish(server.store_url, name, "current")
    settles(server, name, {"current"})


def test_values_of_other_names_stay_apart(server: RunningDNS) -> None:
    scopes = [f"{c * 16}" for c in "abc"]
    for scope in scopes:
        publish(server.store_url, f"_acme-challenge.{scope}.{ZONE}", f"value-of-{scope}")
    for scope in scopes:
        settles(server, f"_acme-challenge.{scope}.{ZONE}", {f"value-of-{scope}"})


def test_the_challenge_name_is_matched_in_any_case(server: RunningDNS, scope: str) -> None:
    name = f"_acme-challenge.{scope}.{ZONE}"
    publish(server.store_url, name, "any-case")
    settles(server, name, {"any-case"})
    asked = name.upper()
    response = server.ask(asked, "TXT")
    assert response.answer[0].name.to_text() == asked + "."
    assert txt_values(server, asked) == {"any-case"}


def test_other_types_at_a_challenge_name_are_nodata(server: RunningDNS, scope: str) -> None:
    name = f"_acme-challenge.{scope}.{ZONE}"
    publish(server.store_url, name, "only-txt")
    settles(server, name, {"only-txt"})
    response = server.ask(name, "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_a_lost_store_turns_txt_answers_to_servfail_and_delays_no_address_answer(
    tmp_path: Path,
) -> None:
    """PostgreSQL goes away (its database dropped): the values already read are answered for a
    few seconds, then TXT answers SERVFAIL ("I cannot know"), never a cacheable "no such
    record"; address answers never wait for the store."""
    with fresh_store_url("postgres", tmp_path) as url, running_dns(url, tmp_path) as server:
        name = f"_acme-challenge.{'q' * 16}.{ZONE}"
        publish(url, name, "before-the-loss")
        settles(server, name, {"before-the-loss"})
        drop_database(url)
        lost_at = time.monotonic()
        servfail_after = None
        while time.monotonic() - lost_at < STALE_AFTER + LATE and servfail_after is None:
            # A read of the store may take up to its 2 s statement timeout: an address answer
            # that waited for one would miss the question's own timeout.
            assert server.ask(f"10-0-0-7.{'q' * 16}.{ZONE}", "A", timeout=1.5).answer
            if server.ask(name, "TXT", timeout=1.5).rcode() == dns.rcode.SERVFAIL:
                servfail_after = time.monotonic() - lost_at
            time.sleep(0.1)
        assert servfail_after is not None, f"TXT still answered {STALE_AFTER + LATE:g} s after"
        assert servfail_after > STALE_AFTER - 2  # the values read before were answered meanwhile
        assert "cannot read challenge values and ACME accounts from the store" in server.log_text()


def drop_database(url: str) -> None:
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)'))
    finally:
        admin.dispose()
