"""Short-lived signed links: the console signs, the box verifies (docs/design.md §3).

A "Download logs" link is opened by the user's browser directly on the box (the console is
usually not on the box's LAN; the browser is), so it carries its own proof: an expiry and an
HMAC-SHA256, keyed with the per-box token the two share, over the path and that expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

MAX_LINK_SECONDS = 3600
TIME_DIGITS = 12  # a Unix time in seconds, for the next 30,000 years


def seconds_from(text: str | None) -> int | None:
    """A time given as ASCII digits (a link's expiry, a request's timestamp); None otherwise.

    ``str.isdigit`` accepts ``²`` and other digits ``int`` refuses, and a long run of digits
    makes an integer no float can hold: both used to end in a server error.
    """
    if not text or len(text) > TIME_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def same_secret(expected: str, given: str) -> bool:
    """Constant-time equality of a computed MAC and one a client sent, whatever its characters
    (``hmac.compare_digest`` refuses non-ASCII text with an exception)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


def link_signature(token: bytes, path: str, expires: int) -> str:
    message = f"{path}\n{expires}".encode()
    return hmac.new(token, message, hashlib.sha256).hexdigest()


def sign_link(token: bytes, path: str, lifetime: int = 300, now: float | None = None) -> str:
    """``path?expires=…&signature=…``, valid for ``lifetime`` seconds."""
    expires = int((time.time() if now is None else now) + lifetime)
    query = urlencode({"expires": expires, "signature": link_signature(token, path, expires)})
    return f"{path}?{query}"


def link_is_valid(
    token: bytes, path: str, expires: str | None, signature: str | None, now: float | None = None
) -> bool:
    """True for an unexpired, unaltered link; compared in constant time."""
    expiry = seconds_from(expires)
    if expiry is None or not signature or not token:
        return False
    moment = time.time() if now is None else now
    if not moment <= expiry <= moment + MAX_LINK_SECONDS:
        return False
    return same_secret(link_signature(token, path, expiry), signature)


def body_signature(token: bytes, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over a request's time and body: how a box signs its status reports."""
    return hmac.new(token, str(timestamp).encode() + b"\n" + body, hashlib.sha256).hexdigest()


def body_signature_is_valid(
    token: bytes,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    now: float | None = None,
    window: int = 300,
) -> bool:
    """True for a body signed with ``token`` within ``window`` seconds of now (constant time)."""
    moment = seconds_from(timestamp)
    if moment is None or not signature or not token:
        return False
    if abs((time.time() if now is None else now) - moment) > window:
        return False
    return same_secret(body_signature(token, moment, body), signature)
