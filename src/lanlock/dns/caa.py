"""The apex's CAA records: the configured CAs, bound to the cloud's ACME accounts (RFC 8657).

For each ``--caa-issuer`` and each account URI in the store's ``acme_accounts``
(:mod:`lanlock.account_table`), the apex holds::

    0 issue "<issuer>; accounturi=<account URI>; validationmethods=dns-01"

and the same with ``issuewild``. A CA that implements RFC 8657 (Let's Encrypt does) then issues
under the zone only to our accounts, and only after DNS-01: the one method the cloud uses, whose
answer only the cloud can publish (through the store). Every issuer is paired with every
account, with no mapping for the operator to keep: a CA compares ``accounturi`` with its own
account URLs, so the pair of one CA's domain with another CA's account allows nothing; once the
store holds accounts, an issuer with none of them there can issue nothing at all.

With no usable account in the store (the embedded CA registers none; the cloud registers its
account at its first ACME order), each issuer is named alone, as before accounts were bound:
the CAs still are the only ones allowed, and the first order is not refused for want of an
account that does not exist yet.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import dns.rdataclass
import dns.rdatatype
from dns.rdtypes.ANY.CAA import CAA

TAGS = (b"issue", b"issuewild")
VALIDATION_METHODS = "dns-01"  # RFC 8657 §4: the ACME challenge types the CA may use
MAX_ACCOUNT_URI = 255  # Let's Encrypt's are some 60 characters; the answer must stay small
# RFC 8659 §4.2: a parameter's value is printable ASCII but ";" (%x21-3A / %x3C-7E). '"' and "\"
# are refused too: the record's text form would need them escaped, and no CA's URI has them.
_ALLOWED = frozenset(chr(code) for code in range(0x21, 0x7F)) - {";", '"', "\\"}


def account_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be put in a CAA record, or None when it can.

    The store is the cloud's and a stranger cannot write it, but a value that broke out of its
    parameter (a ";", a space, a quote) would change what the record allows: check it anyway.
    """
    if len(uri) > MAX_ACCOUNT_URI:
        return f"longer than {MAX_ACCOUNT_URI} characters"
    if not set(uri) <= _ALLOWED:
        return "a space, a control or non-ASCII character, ';', '\"' or '\\'"
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.netloc:
        return "not an https URL, as every ACME account's is"
    return None


def records(issuers: tuple[str, ...], account_uris: tuple[str, ...]) -> list[CAA]:
    """The apex's CAA rdata: each issuer bound to each account, or alone without accounts."""
    values = [
        f"{issuer}; accounturi={uri}; validationmethods={VALIDATION_METHODS}"
        for issuer in issuers
        for uri in account_uris
    ] or list(issuers)
    return [
        CAA(dns.rdataclass.IN, dns.rdatatype.CAA, 0, tag, value.encode())
        for value in values
        for tag in TAGS
    ]
