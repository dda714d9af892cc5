"""The name scheme of docs/design.md §2: examples, edge cases and properties."""

from __future__ import annotations

import contextlib
import ipaddress
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lanlock.names import (
    SCOPE_LENGTH,
    HostName,
    InvalidName,
    address_to_label,
    base_name,
    certificate_names,
    host_name,
    host_of,
    https_url,
    is_scope_label,
    is_served_address,
    label_to_address,
    new_scope,
    normalize_zone,
    parse_host_name,
    wildcard_name,
)

SCOPE = "abcdefghijklmn23"
ZONE = "iot.test"
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

EXAMPLES = [
    ("192.168.1.42", "192-168-1-42"),
    ("10.0.0.7", "10-0-0-7"),
    ("0.0.0.0", "0-0-0-0"),
    ("255.255.255.255", "255-255-255-255"),
    ("fe80::1", "fe80--1"),
    ("::1", "0--1"),
    ("2001:db8::", "2001-db8--0"),
    ("::", "0--0"),
    ("fd00::1", "fd00--1"),
    ("192::168:1:42", "192--168-1-42"),  # IPv4-looking digits, but '--' makes it IPv6
    ("1:0:0:1:0:0:1:1", "1--1-0-0-1-1"),  # the first of two equal zero runs is shortened
    ("1:0:1:0:1:0:1:0", "1-0-1-0-1-0-1-0"),  # a single zero group is never shortened
    ("::ffff:1.2.3.4", "0--ffff-102-304"),  # IPv4-mapped: always the hex form
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff-ffff-ffff-ffff-ffff-ffff-ffff-ffff"),
]


# --- address <-> label ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "label"), EXAMPLES)
def test_examples_both_ways(text: str, label: str) -> None:
    address = ipaddress.ip_address(text)
    assert address_to_label(text) == label
    assert address_to_label(address) == label
    assert label_to_address(label) == address


def test_uppercase_read_lowercase_written() -> None:
    assert label_to_address("FE80--1") == ipaddress.ip_address("fe80::1")
    assert label_to_address("2001-DB8--0") == ipaddress.ip_address("2001:db8::")
    assert address_to_label("FE80::ABCD") == "fe80--abcd"


@pytest.mark.parametrize("text", ["fe80::1%eth0", "fe80::1%1", "not an ip", "", "1.2.3", "::1::"])
def test_address_to_label_rejects(text: str) -> None:
    with pytest.raises(InvalidName):
        address_to_label(text)


@pytest.mark.parametrize(
    "label",
    [
        "",
        "192-168-001-1",  # leading zero in an octet
        "192-168-1",
        "192-168-1-42-",
        "-192-168-1-42",
        "256-0-0-1",
        "fe80--01",  # leading zero in a group
        "fe80-0-0-0-0-0-0-1",  # not compressed
        "fe80-0000-0000-0000-0000-0000-0000-0001",  # exploded
        "--1",  # starts with a dash
        "0--1-",
        "0--",
        "--",
        "1--1-0-0-1-1-0",  # too many groups
        "1-0-0-1--1-1",  # the second zero run shortened instead of the first
        "0-0-0-0-0-0-0-1",
        "0--0--1",
        "0--ffff-1.2.3.4",  # dotted IPv4 inside IPv6: not a label at all
        "fe80--1%eth0",
        "g--1",
        "a" * 64,
        "fe80--1\u00e9",
        "1\u0661-2-3-4",  # a non-ASCII digit
        "192.168.1.42",
    ],
)
def test_label_to_address_rejects(label: str) -> None:
    with pytest.raises(InvalidName):
        label_to_address(label)


@given(st.ip_addresses(v=4))
def test_round_trip_ipv4(address: ipaddress.IPv4Address) -> None:
    label = address_to_label(address)
    assert label_to_address(label) == address
    assert label_to_address(label.upper()) == address
    with pytest.raises(ValueError):  # an IPv4 label is never IPv6 text
        ipaddress.IPv6Address(label.replace("-", ":"))


@given(st.ip_addresses(v=6))
@example(ipaddress.IPv6Address("::ffff:1.2.3.4"))
@example(ipaddress.IPv6Address("::1.2.3.4"))
def test_round_trip_ipv6(address: ipaddress.IPv6Address) -> None:
    label = address_to_label(address)
    assert label_to_address(label) == address
    assert label_to_address(label.upper()) == address
    assert isinstance(label_to_address(label), ipaddress.IPv6Address)
    with pytest.raises(ValueError):  # an IPv6 label is never IPv4 text
        ipaddress.IPv4Address(label.replace("-", "."))


@given(st.ip_addresses())
def test_every_label_is_a_dns_label(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    label = address_to_label(address)
    assert len(label) <= 63
    assert DNS_LABEL.fullmatch(label)


@given(st.ip_addresses(), st.ip_addresses())
def test_labels_are_injective(a, b) -> None:
    if a != b:
        assert address_to_label(a) != address_to_label(b)


@given(st.ip_addresses(v=6))
def test_non_canonical_ipv6_rejected(address: ipaddress.IPv6Address) -> None:
    canonical = address_to_label(address)
    exploded = address.exploded.replace(":", "-")
    uncompressed = "-".join(f"{int(g, 16):x}" for g in address.exploded.split(":"))
    for variant in (exploded, uncompressed):
        if variant == canonical:
            assert label_to_address(variant) == address
        else:
            with pytest.raises(InvalidName):
                label_to_address(variant)


@given(st.ip_addresses(v=4), st.integers(0, 3))
def test_leading_zero_ipv4_rejected(address: ipaddress.IPv4Address, index: int) -> None:
    octets = address_to_label(address).split("-")
    octets[index] = "0" + octets[index]
    with pytest.raises(InvalidName):
        label_to_address("-".join(octets))


@given(st.one_of(st.text(), st.text(alphabet="0123456789abcdefABCDEF-.:%", max_size=70)))
def test_random_text_only_raises_invalid_name(text: str) -> None:
    for parse in (label_to_address, normalize_zone, lambda t: parse_host_name(t, ZONE)):
        with contextlib.suppress(InvalidName):
            parse(text)


# --- which addresses are served ------------------------------------------------------------

SERVED = [
    "10.0.0.7",
    "192.168.1.42",
    "172.16.0.1",
    "172.31.255.254",
    "127.0.0.1",
    "169.254.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "fe80::1",
    "fd00::1",
    "fc00::1",
    "::1",
]
PUBLIC = ["8.8.8.8", "2001:4860::8888", "1.1.1.1", "2606:4700::1111", "172.32.0.1", "100.128.0.1"]
NEVER = [
    "0.0.0.0",
    "::",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "198.18.0.1",
    "192.0.0.8",
    "2001:db8::1",
    "3fff::1",
    "::ffff:192.168.1.1",
    "0.1.2.3",
    "64:ff9b::1",
    "2002::1",
    "2001::1",
    "100::1",
    "fec0::1",
]


@pytest.mark.parametrize("address", SERVED)
def test_served_by_default(address: str) -> None:
    assert is_served_address(address)
    assert is_served_address(ipaddress.ip_address(address), allow_public=True)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_only_when_allowed(address: str) -> None:
    assert not is_served_address(address)
    assert is_served_address(address, allow_public=True)


@pytest.mark.parametrize("address", NEVER)
def test_never_served(address: str) -> None:
    assert not is_served_address(address)
    assert not is_served_address(address, allow_public=True)


def test_served_rejects_non_addresses() -> None:
    with pytest.raises(InvalidName):
        is_served_address("fe80::1%eth0")
    with pytest.raises(InvalidName):
        is_served_address("example.com")


# --- scopes, zones, names ------------------------------------------------------------------


def test_new_scope() -> None:
    scopes = {new_scope() for _ in range(200)}
    assert len(scopes) == 200
    for scope in scopes:
        assert len(scope) == SCOPE_LENGTH
        assert re.fullmatch(r"[a-z2-7]{16}", scope)
        assert is_scope_label(scope)


@pytest.mark.parametrize(
    ("label", "ok"),
    [
        (SCOPE, True),
        (SCOPE.upper(), True),
        ("a" * 15, False),
        ("a" * 17, False),
        ("abcdefghijklmn01", False),
        ("abcdefghijklmn89", False),
        ("", False),
        ("abcdefghijklmn2\u212a", False),
        ("abcdefghijklm-23", False),
    ],
)
def test_is_scope_label(label: str, ok: bool) -> None:
    assert is_scope_label(label) is ok


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("iot.test", "iot.test"),
        ("IoT.Test.", "iot.test"),
        ("iot.localhost", "iot.localhost"),
        ("a-b.c9", "a-b.c9"),
        ("test", "test"),
        ("x" * 63 + ".test", "x" * 63 + ".test"),
    ],
)
def test_normalize_zone(zone: str, expected: str) -> None:
    assert normalize_zone(zone) == expected


@pytest.mark.parametrize(
    "zone",
    [
        "",
        ".",
        "iot..test",
        ".iot.test",
        "iot.test..",
        "-iot.test",
        "iot-.test",
        "io_t.test",
        "iot test",
        "x" * 64 + ".test",
        ".".join(["abcdefghi"] * 26),
        "iöt.test",
        "*.iot.test",
    ],
)
def test_normalize_zone_rejects(zone: str) -> None:
    with pytest.raises(InvalidName):
        normalize_zone(zone)


def test_names() -> None:
    assert host_name("192.168.1.42", SCOPE, ZONE) == f"192-168-1-42.{SCOPE}.iot.test"
    assert host_name("FE80::1", SCOPE.upper(), "IOT.Test.") == f"fe80--1.{SCOPE}.iot.test"
    assert wildcard_name(SCOPE, ZONE) == f"*.{SCOPE}.iot.test"
    assert base_name(SCOPE, ZONE) == f"{SCOPE}.iot.test"
    assert certificate_names(SCOPE.upper(), "IOT.TEST") == [
        f"*.{SCOPE}.iot.test",
        f"{SCOPE}.iot.test",
    ]
    with pytest.raises(InvalidName):
        host_name("10.0.0.7", "short", ZONE)
    with pytest.raises(InvalidName):
        base_name(SCOPE, "bad..zone")
    with pytest.raises(InvalidName):  # the whole name would pass 253 characters
        host_name("10.0.0.7", SCOPE, ".".join(["x" * 60] * 4))


def test_https_url() -> None:
    assert https_url("10.0.0.7", SCOPE, ZONE) == f"https://10-0-0-7.{SCOPE}.iot.test/"
    assert https_url("::1", SCOPE, ZONE, 8943) == f"https://0--1.{SCOPE}.iot.test:8943/"
    with pytest.raises(ValueError):
        https_url("10.0.0.7", SCOPE, ZONE, 0)


@pytest.mark.parametrize(
    ("name", "address"),
    [
        (f"192-168-1-42.{SCOPE}.iot.test", "192.168.1.42"),
        (f"192-168-1-42.{SCOPE}.iot.test.", "192.168.1.42"),
        (f"FE80--1.{SCOPE.upper()}.IOT.TEST.", "fe80::1"),
        (f"0--1.{SCOPE}.iot.test", "::1"),
    ],
)
def test_parse_host_name(name: str, address: str) -> None:
    parsed = parse_host_name(name, "IOT.test.")
    assert parsed == HostName(ipaddress.ip_address(address), SCOPE, ZONE)
    assert parsed.name == name.lower().rstrip(".")


@given(st.ip_addresses())
def test_parse_host_name_round_trip(address) -> None:
    scope = new_scope()
    assert parse_host_name(host_name(address, scope, ZONE), ZONE) == HostName(address, scope, ZONE)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "not under zone"),
        ("iot.test", "not under zone"),
        (f"10-0-0-7.{SCOPE}.other.test", "not under zone"),
        (f"10-0-0-7.{SCOPE}.xiot.test", "not under zone"),
        (f"10-0-0-7.{SCOPE}.iot.test..", "not under zone"),
        (f"{SCOPE}.iot.test", "one label, a scope"),
        (f"a.10-0-0-7.{SCOPE}.iot.test", "one label, a scope"),
        (f".{SCOPE}.iot.test", "not a DNS label"),
        ("10-0-0-7.abcdefghijklmn2.iot.test", "is not a scope"),
        ("10-0-0-7.abcdefghijklmn234.iot.test", "is not a scope"),
        (f"10-0-0-07.{SCOPE}.iot.test", "does not encode an IP address"),
        (f"fe80-0-0-0-0-0-0-1.{SCOPE}.iot.test", "not canonical"),
        (f"10-0-0-7.{SCOPE}.iöt.test", "not an ASCII"),
    ],
)
def test_parse_host_name_rejects(name: str, message: str) -> None:
    with pytest.raises(InvalidName, match=message):
        parse_host_name(name, ZONE)


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_the_host_an_address_stands_for(address, host):
    assert host_of(address) == host
