"""The name scheme of docs/design.md §2: ``<address-label>.<scope>.<zone>``, both ways.

Every role depends on this agreeing with itself: the cloud issues ``*.<scope>.<zone>``, the DNS
server answers ``<address-label>.<scope>.<zone>``, the box and the console print the URL. So each
address has exactly one label, and reading accepts only that label (matched case-insensitively,
RFC 4343): a second spelling of an address would be a second name the certificate and the DNS
must both agree on, and a place for the parts to disagree.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SCOPE_LENGTH = 16
_SCOPE_RE = re.compile(r"[a-zA-Z2-7]{16}")  # explicit A-Z: re.IGNORECASE would admit 'K' (U+212A)
_LDH_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAX_NAME = 253  # RFC 1035 limit on a name in text form, without the trailing dot

# Served by default: addresses that can only mean "a device near you", so no phishing site can be
# given a name under the zone. Listed by hand rather than via ``is_private``, which also covers
# documentation, benchmarking and IETF-protocol ranges (192.0.2.0/24, 198.18.0.0/15, 2001:db8::/32,
# 192.0.0.0/24...) and changes between Python versions.
_LAN_NETWORKS = tuple(
    map(
        ipaddress.ip_network,
        (
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",  # RFC 1918
            "127.0.0.0/8",
            "169.254.0.0/16",
            "100.64.0.0/10",  # loopback, link-local, shared (RFC 6598)
            "::1/128",
            "fe80::/10",
            "fc00::/7",  # loopback, link-local, ULA
        ),
    )
)
# Never served, even with allow_public: not an address of one host (unspecified, multicast,
# broadcast, reserved), a documentation/benchmark example, or a translation/tunnel/protocol range
# whose label would be a second name for an address that has its own.
_NEVER_NETWORKS = tuple(
    map(
        ipaddress.ip_network,
        (
            "0.0.0.0/8",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "240.0.0.0/4",
            "::/128",
            "::ffff:0:0/96",
            "2001::/23",
            "2001:db8::/32",
            "2002::/16",
            "3fff::/20",
            "ff00::/8",
        ),
    )
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # the rest of IPv6 is not handed out


class InvalidName(ValueError):
    """A name, label, zone or address that is not part of the scheme; the message says why."""


@dataclass(frozen=True)
class HostName:
    """A parsed ``<address-label>.<scope>.<zone>``, all parts in canonical (lower-case) form."""

    address: Address
    scope: str
    zone: str

    @property
    def name(self) -> str:
        return host_name(self.address, self.scope, self.zone)


def _as_address(address: str | Address) -> Address:
    """Accept an address object or its text; refuse zone-scoped IPv6, which has no DNS meaning."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            raise InvalidName(f"{address!r} is not an IP address") from None
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise TypeError(f"expected an IP address, got {type(address).__name__}")
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise InvalidName(f"{address} has a zone index (%{address.scope_id}): not valid in DNS")
    return address


def _rfc5952(address: ipaddress.IPv6Address) -> str:
    """RFC 5952 text in hex: Python 3.13+ writes IPv4-mapped addresses dotted, no use in a label."""
    if address.ipv4_mapped is not None:
        # Five zero groups are always the longest run, so this is the compressed form.
        high, low = divmod(int(address.ipv4_mapped), 1 << 16)
        return f"::ffff:{high:x}:{low:x}"
    return address.compressed  # RFC 5952 for every other address, in all supported versions


def address_to_label(address: str | Address) -> str:
    """The one canonical DNS label for ``address``: ``192-168-1-42``, ``fe80--1``, ``0--1``."""
    address = _as_address(address)
    if isinstance(address, ipaddress.IPv4Address):
        return str(address).replace(".", "-")
    label = _rfc5952(address).replace(":", "-")
    # A DNS label may not begin or end with '-'; '0' keeps the text a valid IPv6 spelling.
    if label.startswith("-"):
        label = "0" + label
    if label.endswith("-"):
        label += "0"
    return label


def label_to_address(label: str) -> Address:
    """The address a label names; only the canonical label is accepted (case-insensitively)."""
    if not isinstance(label, str) or not label.isascii() or not _LDH_RE.fullmatch(label.lower()):
        raise InvalidName(f"{label!r} is not a DNS label (1-63 of a-z, 0-9, '-')")
    lowered = label.lower()
    # Three single dashes can only be IPv4: a canonical IPv6 label has seven, or a '--'.
    is_v4 = lowered.count("-") == 3 and "--" not in lowered
    try:
        if is_v4:
            address: Address = ipaddress.IPv4Address(lowered.replace("-", "."))
        else:
            address = ipaddress.IPv6Address(lowered.replace("-", ":"))
    except ValueError:
        raise InvalidName(f"{label!r} does not encode an IP address") from None
    canonical = address_to_label(address)
    if canonical != lowered:
        raise InvalidName(f"{label!r} is not canonical; the label of {address} is {canonical!r}")
    return address


def is_served_address(address: str | Address, allow_public: bool = False) -> bool:
    """Whether the zone gives ``address`` a name: LAN ranges, plus global unicast if allowed."""
    address = _as_address(address)
    if any(address in net for net in _NEVER_NETWORKS):
        return False
    if any(address in net for net in _LAN_NETWORKS):
        return True
    return allow_public and (
        isinstance(address, ipaddress.IPv4Address) or address in _GLOBAL_UNICAST_V6
    )


def host_of(address: str) -> str:
    """The host an address stands for, to count one client's attempts: an IPv4 address (also
    when it arrives mapped into IPv6), or an IPv6 /64, since a host may use any address of its
    /64 at will. Anything that is not an address is its own host."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def new_scope() -> str:
    """A fresh random scope: 80 bits from ``secrets``, so scopes cannot be guessed or enumerated."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def is_scope_label(label: str) -> bool:
    """Whether ``label`` has the shape of a scope (16 base32 characters, any case)."""
    return isinstance(label, str) and _SCOPE_RE.fullmatch(label) is not None


def _check_scope(scope: str) -> str:
    if not is_scope_label(scope):
        raise InvalidName(f"{scope!r} is not a scope ({SCOPE_LENGTH} base32 characters a-z, 2-7)")
    return scope.lower()


def _check_length(name: str) -> str:
    if len(name) > _MAX_NAME:
        raise InvalidName(f"{name!r} is longer than {_MAX_NAME} characters")
    return name


def normalize_zone(zone: str) -> str:
    """The zone in the one form names are built and compared with: lower case, no final dot."""
    if not isinstance(zone, str) or not zone.isascii():
        raise InvalidName(f"zone {zone!r} is not an ASCII DNS name")
    lowered = zone.lower().removesuffix(".")
    for part in lowered.split("."):
        if not _LDH_RE.fullmatch(part):
            raise InvalidName(f"zone {zone!r} has an invalid label {part!r}")
    return _check_length(lowered)


def host_name(address: str | Address, scope: str, zone: str) -> str:
    """``<address-label>.<scope>.<zone>``, the name a box is reached by at ``address``."""
    label = address_to_label(address)
    return _check_length(f"{label}.{_check_scope(scope)}.{normalize_zone(zone)}")


def base_name(scope: str, zone: str) -> str:
    """``<scope>.<zone>``: the box's own name, also on its certificate."""
    return _check_length(f"{_check_scope(scope)}.{normalize_zone(zone)}")


def wildcard_name(scope: str, zone: str) -> str:
    """``*.<scope>.<zone>``: covers every address label, so a new DHCP lease needs no new cert."""
    return _check_length(f"*.{base_name(scope, zone)}")


def certificate_names(scope: str, zone: str) -> list[str]:
    """The names a box's certificate is issued for, the wildcard first (it is the subject CN)."""
    return [wildcard_name(scope, zone), base_name(scope, zone)]


def parse_host_name(name: str, zone: str) -> HostName:
    """Split a name under ``zone`` into address, scope and zone; refuse any other shape."""
    zone = normalize_zone(zone)
    if not isinstance(name, str) or not name.isascii():
        raise InvalidName(f"{name!r} is not an ASCII DNS name")
    lowered = name.lower().removesuffix(".")
    prefix = lowered.removesuffix("." + zone)
    if prefix == lowered:
        raise InvalidName(f"{name!r} is not under zone {zone!r}")
    parts = prefix.split(".")
    if len(parts) != 2:
        raise InvalidName(f"{name!r} is not <address-label>.<scope>.{zone}: one label, a scope")
    label, scope = parts
    return HostName(label_to_address(label), _check_scope(scope), zone)


def https_url(address: str | Address, scope: str, zone: str, port: int = 443) -> str:
    """The URL the box is shown with; the port only when it is not HTTPS's default."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not in 1-65535")
    host = host_name(address, scope, zone)
    return f"https://{host}/" if port == 443 else f"https://{host}:{port}/"
