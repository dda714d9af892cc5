"""Which network a failure is counted against, and whom X-Forwarded-For is believed from."""

from __future__ import annotations

import ipaddress

import pytest

from lanlock.cloud.limits import client_address, network_of

PROXIES = [ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("fd00::/64")]


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),  # a v4 client on a dual-stack socket
        ("2001:db8:aa:bbcc::1", "2001:db8:aa:bb00::/56"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_failures_are_counted_per_network(address, network):
    assert network_of(address) == network


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a proxy: its header is ignored
        ("10.9.1.1", "198.51.100.1", "198.51.100.1"),
        ("10.9.1.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client wrote the first
        ("10.9.1.1", "198.51.100.1, 10.9.2.2", "198.51.100.1"),  # two proxies in a row
        ("fd00::5", "2001:db8::9", "2001:db8::9"),
        ("10.9.1.1", "garbage", "10.9.1.1"),  # unreadable: count the proxy, never the garbage
        ("10.9.1.1", "10.9.2.2", "10.9.1.1"),  # nothing but proxies
        ("10.9.1.1", None, "10.9.1.1"),
    ],
)
def test_the_client_is_the_rightmost_untrusted_address(peer, forwarded, client):
    assert client_address(peer, forwarded, PROXIES) == client
