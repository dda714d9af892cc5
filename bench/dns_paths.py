"""Cost of one question on each of the DNS server's answer paths, in-process (no sockets).

The figures behind two decisions of ``lanlock.dns``: the hand-made fast path for address
questions (against dnspython's object model), and challenge TXT values from a snapshot renewed
in the background (against one SQL query per TXT question).

    .venv/bin/python bench/dns_paths.py [--seconds 1] [--store URL]

``--store`` adds the SQL query per question on that store (default: a temporary SQLite file;
give a PostgreSQL URL to measure a network round trip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
from sqlalchemy import select

from lanlock.cloud.models import ChallengeRecord, cloud_store
from lanlock.dns.answer import Responder
from lanlock.dns.challenges import ChallengeBoard, read_engine
from lanlock.dns.fastpath import FastPath
from lanlock.dns.zone import Zone, ZoneSettings

ZONE = "iot.test"
SCOPE = "abcdefghijklmnop"
CHALLENGE = f"_acme-challenge.{SCOPE}.{ZONE}"


def per_second(operation: Callable[[int], object], seconds: float) -> float:
    """Calls of ``operation(i)`` per second, i counting up, over about ``seconds``."""
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(200):
            operation(count)
            count += 1
    return count / elapsed


def unique_queries(count: int) -> list[bytes]:
    """Address questions that never repeat: every one misses the fast path's reply cache."""
    return [
        dns.message.make_query(
            f"10-{i >> 16 & 255}-{i >> 8 & 255}-{i & 255}.{SCOPE}.{ZONE}", "A", id=1
        ).to_wire()
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--store", help="SQLAlchemy URL for the per-question query")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.store or f"sqlite:///{Path(tmp) / 'store.db'}"
        store = cloud_store(url, pool_size=1)
        store.migrate()
        with store.transaction() as session:
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            session.add_all(
                ChallengeRecord(scope=SCOPE, value=v, expires_at=expires) for v in ("a", "b")
            )
        store.dispose()
        rows = measure(url, args.seconds)

    baseline = rows[1][1]
    print(f"{'path':<58} {'per second':>11} {'µs each':>8} {'× dnspython':>11}")
    for name, rate in rows:
        print(f"{name:<58} {rate:>11,.0f} {1e6 / rate:>8.2f} {rate / baseline:>11.1f}")


def measure(url: str, seconds: float) -> list[tuple[str, float]]:
    zone = Zone(ZoneSettings(zone=ZONE))
    board = ChallengeBoard(url)
    board.refresh_now()
    responder = Responder(zone, board)
    query = dns.message.make_query(f"10-1-2-3.{SCOPE}.{ZONE}", "A").to_wire()
    txt = dns.message.make_query(CHALLENGE, "TXT").to_wire()
    misses = unique_queries(1 << 18)
    fresh = FastPath(zone)
    cached = FastPath(zone)
    cached.answer(query)
    engine = read_engine(url)
    table = ChallengeRecord.__table__
    per_name = select(table.c.value).where(
        table.c.scope == SCOPE, table.c.expires_at > dt.datetime.now(dt.UTC)
    )

    def sql_per_question(_: int) -> object:
        with engine.connect() as conn:
            return conn.execute(per_name).all()

    rows = [
        (
            "parse only: dnspython from_wire",
            per_second(lambda _: dns.message.from_wire(query), seconds),
        ),
        (
            "A question, slow path: dnspython parse/answer/render",
            per_second(lambda _: responder.respond(query, tcp=False), seconds),
        ),
        (
            "A question, fast path, new question",
            per_second(lambda i: fresh.answer(misses[i % len(misses)]), seconds),
        ),
        (
            "A question, fast path, repeated question (reply cache)",
            per_second(lambda _: cached.answer(query), seconds),
        ),
        (
            "TXT challenge question, slow path, from the snapshot",
            per_second(lambda _: responder.respond(txt, tcp=False), seconds),
        ),
        (
            "challenge values: snapshot lookup",
            per_second(lambda _: board.values(SCOPE), seconds),
        ),
        ("challenge values: one SQL query per question", per_second(sql_per_question, seconds)),
    ]
    engine.dispose()
    board.close()
    return rows


if __name__ == "__main__":
    main()
