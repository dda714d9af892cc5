"""Response-rate limiting (RRL) for UDP: at most N answers a second to one source prefix.

An authoritative server is a tool for reflection attacks: a forged source address gets the
answers. Limiting answers per prefix (/24 for IPv4, /56 for IPv6, as BIND's RRL does) caps what
one victim receives, while every second answer over the limit "slips" out as a truncated reply,
so a real resolver behind that prefix retries over TCP (which cannot be forged) and still gets
its answer. TCP is never limited. Each worker counts on its own.
"""

from __future__ import annotations

import socket
import time

_PRUNE_AT = 100_000  # prefixes remembered before idle ones are forgotten
_SLIP = 2  # every second limited answer goes out truncated


class ResponseRateLimiter:
    """A token bucket per source prefix."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._burst = max(rate, 1.0)
        self._buckets: dict[bytes, list[float]] = {}  # prefix → [tokens, last update, limited]

    def admit(self, reply: bytes, peer_address: str) -> bytes | None:
        """``reply`` when the prefix is within its rate; else a truncated reply, or nothing."""
        now = time.monotonic()
        key = source_prefix(peer_address)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._forget_idle(now)
            bucket = self._buckets[key] = [self._burst, now, 0]
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return reply
        bucket[0] = tokens
        bucket[2] += 1
        return truncated(reply) if bucket[2] % _SLIP == 0 else None

    def _forget_idle(self, now: float) -> None:
        full_after = self._burst / self._rate  # a bucket idle this long is full again anyway
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < full_after}


def source_prefix(address: str) -> bytes:
    """The /24 (IPv4) or /56 (IPv6) that ``address`` is in, as bytes."""
    if ":" in address:
        return socket.inet_pton(socket.AF_INET6, address.partition("%")[0])[:7]
    return socket.inet_aton(address)[:3]


def truncated(reply: bytes) -> bytes | None:
    """``reply`` cut to its header and question, with TC set: "ask again over TCP"."""
    end = 12
    try:
        for _ in range(int.from_bytes(reply[4:6], "big")):  # our replies: one question or none
            while reply[end]:
                if reply[end] >= 64:
                    return None  # a compressed question name: not one of our replies
                end += 1 + reply[end]
            end += 5  # the root label, QTYPE and QCLASS
    except IndexError:
        return None
    counts = reply[4:6] + bytes(6)
    return reply[:2] + bytes((reply[2] | 0x02, reply[3])) + counts + reply[12:end]
