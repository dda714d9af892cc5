"""The zone's content: what each name under the zone is, and the apex records
(docs/design.md §2, §7).

Both answer paths ask ``Zone.node`` what a name is, so the hand-made fast path and the
dnspython slow path cannot disagree about which names exist: they differ only in how the bytes
are read and written.

Names under the zone, relative to it (leftmost label first, lower case):

* ``()`` (the apex), ``_dmarc`` and the in-zone name servers hold records from the settings;
  the apex's CAA records also name the cloud's ACME accounts, read from the store
  (:mod:`lanlock.dns.caa`), so they are not among them: the slow path answers them (the fast
  path never answers at the apex);
* ``<scope>`` and the parents of in-zone name servers exist but hold nothing (empty
  non-terminals: NOERROR with no answer);
* ``<address-label>.<scope>`` holds the A or AAAA of the label, stateless;
* ``_acme-challenge.<scope>`` holds the TXT values the cloud publishes in the store;
* every other name does not exist (NXDOMAIN).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from lanlock import defaults, names

CHALLENGE_LABEL = "_acme-challenge"
DMARC_LABEL = "_dmarc"
SPF_POLICY = "v=spf1 -all"  # the zone sends no mail: every sender fails SPF
DMARC_POLICY = "v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s"

Labels = tuple[str, ...]
NODE_CACHE_SIZE = 65536


class ZoneError(ValueError):
    """Settings that cannot make a zone; the message says which and why."""


@dataclass(frozen=True)
class NameServer:
    """One NS of the zone; its addresses are served as glue when the name is in the zone."""

    name: str  # lower case, no trailing dot
    addresses: tuple[names.Address, ...] = ()


@dataclass(frozen=True)
class ZoneSettings:
    """What an operator sets; :class:`Zone` turns it into records."""

    zone: str = defaults.ZONE
    nameservers: tuple[NameServer, ...] = ()
    caa_issuers: tuple[str, ...] = (defaults.CAA_ISSUER,)
    site_addresses: tuple[names.Address, ...] = ()
    allow_public: bool = False
    hostmaster: str = ""  # the SOA's RNAME; default: hostmaster.<zone>
    # Address answers never change for a name, so resolvers may keep them for an hour.
    address_ttl: int = 3600
    # A new challenge value must reach the CA's resolvers soon after the cloud writes it.
    challenge_ttl: int = 10
    # CAA names the cloud's ACME accounts: a CA's resolver must see a new one (a new directory)
    # within a minute, not keep the former answer, which refuses that account, for an hour.
    caa_ttl: int = 60
    # SOA MINIMUM: how long a resolver caches "no such TXT", so a fresh challenge is seen soon.
    negative_ttl: int = 30
    apex_ttl: int = 3600
    soa_refresh: int = 86400  # RIPE-203 values; no zone transfer is served, they are informative
    soa_retry: int = 7200
    soa_expire: int = 3600000


def parse_nameserver(text: str) -> tuple[str, names.Address | None]:
    """``NAME=IP`` or ``NAME`` (for a name server outside the zone) → (name, address)."""
    name, _, address = text.partition("=")
    try:
        name = names.normalize_zone(name.strip())
    except names.InvalidName as exc:
        raise ZoneError(f"name server {text!r}: {exc}") from None
    if not address.strip():
        return name, None  # fine outside the zone; Zone refuses an in-zone name without glue
    return name, parse_address(address.strip(), f"name server {text!r}")


def parse_address(text: str, what: str) -> names.Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ZoneError(f"{what}: {text!r} is not an IP address") from None


def nameservers_from(pairs: Iterable[tuple[str, names.Address | None]]) -> tuple[NameServer, ...]:
    """Merge repeated names (``--ns ns1=IPv4 --ns ns1=IPv6``), keeping the order first seen."""
    merged: dict[str, list[names.Address]] = {}
    for name, address in pairs:
        merged.setdefault(name, [])
        if address is not None and address not in merged[name]:
            merged[name].append(address)
    return tuple(NameServer(name, tuple(addresses)) for name, addresses in merged.items())


class Kind(enum.Enum):
    STATIC = "static"  # records from the settings (apex, _dmarc, in-zone name servers)
    ADDRESS = "address"  # <address-label>.<scope>: A or AAAA from the label
    CHALLENGE = "challenge"  # _acme-challenge.<scope>: TXT values from the store
    EMPTY = "empty"  # exists but holds nothing: NOERROR, no answer
    NONEXISTENT = "nonexistent"  # NXDOMAIN


@dataclass(frozen=True)
class Node:
    kind: Kind
    address: names.Address | None = None
    records: Mapping[dns.rdatatype.RdataType, dns.rdataset.Rdataset] = field(default_factory=dict)


_NONEXISTENT = Node(Kind.NONEXISTENT)
_EMPTY = Node(Kind.EMPTY)
_CHALLENGE = Node(Kind.CHALLENGE)


class Zone:
    """The zone built from its settings: the apex records, and what any name under it is."""

    def __init__(self, settings: ZoneSettings) -> None:
        try:
            zone = names.normalize_zone(settings.zone)
        except names.InvalidName as exc:
            raise ZoneError(str(exc)) from None
        self.settings = settings
        self.name = zone
        self.origin = dns.name.from_text(zone)
        self.nameservers = settings.nameservers or (
            # The demo's default; a real deployment names its servers with --ns.
            NameServer(f"ns1.{zone}", (ipaddress.IPv4Address("127.0.0.1"),)),
        )
        self._check_nameservers()
        self._check_caa_issuers()
        self.soa = self._soa()
        self._static = self._static_nodes()
        self._empty = {labels[i:] for labels in self._static for i in range(1, len(labels))} - set(
            self._static
        )
        # Reading an address label costs some 10 µs (names.py parses, re-encodes and checks the
        # ranges); resolvers that randomise the letter case (0x20) miss the fast path's reply
        # cache but ask the same few names again, so the verdicts are kept too.
        self.node = functools.lru_cache(maxsize=NODE_CACHE_SIZE)(self._node)

    def _node(self, labels: Labels) -> Node:
        """What the name with these relative labels (lower case, leftmost first) is."""
        static = self._static.get(labels)
        if static is not None:
            return static
        if labels in self._empty:
            return _EMPTY
        if len(labels) == 1:
            return _EMPTY if names.is_scope_label(labels[0]) else _NONEXISTENT
        if len(labels) != 2 or not names.is_scope_label(labels[1]):
            return _NONEXISTENT
        if labels[0] == CHALLENGE_LABEL:
            return _CHALLENGE
        try:
            address = names.label_to_address(labels[0])
        except names.InvalidName:
            return _NONEXISTENT
        if not names.is_served_address(address, self.settings.allow_public):
            return _NONEXISTENT
        return Node(Kind.ADDRESS, address)

    @staticmethod
    def challenge_scope(labels: Labels) -> str:
        """The scope whose values a challenge node answers (``_acme-challenge.<scope>``): the
        store keys values by scope (ChallengeRecord), so no other name can ever carry one."""
        return labels[1]

    def glue(self) -> list[tuple[dns.name.Name, dns.rdataset.Rdataset]]:
        """The in-zone name servers' addresses, for the additional section of an NS answer."""
        found = []
        for server in self.nameservers:
            if not _is_within(server.name, self.name):
                continue
            node = self._static.get(self._relative_labels(server.name))
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                if node is not None and rdtype in node.records:
                    found.append((dns.name.from_text(server.name), node.records[rdtype]))
        return found

    @property
    def serial(self) -> int:
        return self.soa[0].serial

    def _check_nameservers(self) -> None:
        for server in self.nameservers:
            if _is_within(server.name, self.name) and not server.addresses:
                raise ZoneError(
                    f"name server {server.name} is in the zone: give its address as NAME=IP"
                )

    def _check_caa_issuers(self) -> None:
        # Each goes into a CAA record as it is (lanlock.dns.caa): a domain name and nothing else.
        for issuer in self.settings.caa_issuers:
            try:
                normalized = names.normalize_zone(issuer)
            except names.InvalidName as exc:
                raise ZoneError(f"CAA issuer: {exc}") from None
            if normalized != issuer:
                raise ZoneError(f"CAA issuer {issuer!r}: give it as {normalized!r}")

    def _relative_labels(self, name: str) -> Labels:
        """Labels of an in-zone ``name`` relative to the zone."""
        prefix = name.removesuffix(self.name).removesuffix(".")
        return tuple(prefix.split(".")) if prefix else ()

    def _soa(self) -> dns.rdataset.Rdataset:
        s = self.settings
        mname = self.nameservers[0].name
        try:
            rname = names.normalize_zone(s.hostmaster or f"hostmaster.{self.name}")
        except names.InvalidName as exc:
            raise ZoneError(f"hostmaster: {exc}") from None
        # Same settings, same serial on every replica; it changes whenever the settings do.
        # What is read from the store (challenge values, the accounts in CAA) is not in it:
        # every replica reads the one store, and no zone transfer is served to compare serials.
        content = repr((self.nameservers, s))
        serial = zlib.crc32(content.encode()) or 1
        text = (
            f"{mname}. {rname}. {serial} {s.soa_refresh} {s.soa_retry} {s.soa_expire} "
            f"{s.negative_ttl}"
        )
        return _rdataset(s.apex_ttl, dns.rdatatype.SOA, [text])

    def _static_nodes(self) -> dict[Labels, Node]:
        s = self.settings
        apex: dict[dns.rdatatype.RdataType, list[str]] = {
            dns.rdatatype.NS: [f"{server.name}." for server in self.nameservers],
            dns.rdatatype.MX: ["0 ."],  # null MX (RFC 7505): the zone receives no mail
            dns.rdatatype.TXT: [f'"{SPF_POLICY}"'],
        }
        records: dict[Labels, dict[dns.rdatatype.RdataType, list[str]]] = {(): apex}
        records[(DMARC_LABEL,)] = {dns.rdatatype.TXT: [f'"{DMARC_POLICY}"']}
        for server in self.nameservers:
            if _is_within(server.name, self.name):
                _add_addresses(
                    records.setdefault(self._relative_labels(server.name), {}), server.addresses
                )
        _add_addresses(apex, s.site_addresses)
        nodes = {
            labels: Node(
                Kind.STATIC,
                records={t: _rdataset(s.apex_ttl, t, texts) for t, texts in by_type.items()},
            )
            for labels, by_type in records.items()
        }
        # The SOA comes first: it is the one RRset of a minimal ANY answer at the apex.
        nodes[()] = Node(Kind.STATIC, records={dns.rdatatype.SOA: self.soa, **nodes[()].records})
        return nodes


def address_rdtype(address: names.Address) -> dns.rdatatype.RdataType:
    return dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA


def _is_within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _add_addresses(
    by_type: dict[dns.rdatatype.RdataType, list[str]], addresses: Iterable[names.Address]
) -> None:
    for address in addresses:
        texts = by_type.setdefault(address_rdtype(address), [])
        if str(address) not in texts:
            texts.append(str(address))


def _rdataset(ttl: int, rdtype: dns.rdatatype.RdataType, texts: list[str]) -> dns.rdataset.Rdataset:
    try:
        return dns.rdataset.from_text_list(dns.rdataclass.IN, rdtype, ttl, texts)
    except dns.exception.DNSException as exc:
        raise ZoneError(f"{dns.rdatatype.to_text(rdtype)} record from {texts}: {exc}") from None
