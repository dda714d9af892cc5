from __future__ import annotations

from collections.abc import Iterator

import pytest

from lanlock import names
from tests.dns.running import RunningDNS, running_dns

# The main test server's zone settings; tests/dns/test_answers.py checks each of them.
NS1, NS1_V4, NS1_V6 = "ns1.iot.test", "192.0.2.53", "2001:db8::53"
NS2 = "ns2.example.net"  # outside the zone: no glue
SITE_V4, SITE_V6 = "203.0.113.10", "2001:db8::10"
CAA_ISSUER = "ca.example.org"
SETTINGS = (
    *("--ns", f"{NS1}={NS1_V4}", "--ns", f"{NS1}={NS1_V6}", "--ns", NS2),
    *("--site-address", SITE_V4, "--site-address", SITE_V6),
    *("--caa-issuer", CAA_ISSUER),
)


@pytest.fixture(scope="package")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDNS]:
    """One real server for the tests of this package (per pytest-xdist worker), on SQLite,
    with two workers and the SETTINGS above."""
    tmp = tmp_path_factory.mktemp("dns")
    with running_dns(f"sqlite:///{tmp / 'store.db'}", tmp, *SETTINGS) as server:
        yield server


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def scope() -> str:
    return names.new_scope()
