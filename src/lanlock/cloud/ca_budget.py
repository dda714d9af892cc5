"""The ACME CA's rate limits as a budget the cloud spends, shared by every replica.

A public CA limits what one account and one registered domain may order. Let's Encrypt publishes
its limits (https://letsencrypt.org/docs/rate-limits/) as token buckets: 50 new certificates per
registered domain per 7 days, 300 new orders per account per 3 hours, 5 certificates per exact
set of names per 7 days, each refilling one token at a time (every 202 minutes, 36 seconds and
34 hours). A fleet that runs into them gets ``rateLimited`` for hours, every box at once. So the
cloud keeps the same buckets itself, in the store (every replica spends from the same rows),
and answers a box the CA would refuse with 503 and the moment the budget frees up, without
asking the CA.

Which order spends which limit follows Let's Encrypt's rules:

* a scope's first certificate (a set of names never certified) spends the registered domain's
  and the account's limits, and the scope's own;
* a renewal (the same two names again) is exempt from the first two and spends only the scope's
  own limit (``duplicates``);
* an ARI renewal — an order that names the certificate it replaces, once the CA's suggested time
  has come — is exempt from every limit.

Who goes first. Where renewals spend a limit, a fifth of it (at least one) is kept for renewals
near expiry: a box re-keying while its certificate has a third of its life or more left (an
early renewal), and a first certificate, must leave that reserve; a renewal may dig into it the
more the closer its certificate is to expiry, down to the last token when it has expired. Each
refusal names a ``Retry-After`` when the bucket will hold enough again, spread over up to half
as long again, so that the boxes refused together do not come back together.

A zone on the Public Suffix List (``--zone-public-suffix``) makes every ``<scope>.<zone>`` a
registered domain of its own, so the per-domain limit is per scope. Otherwise the whole zone is
one registered domain; if the zone is a subdomain of the vendor's registered domain, other
certificates the vendor orders under that domain spend the CA's bucket without this cloud
knowing it: set the limit lower to leave them room.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from lanlock import config, names
from lanlock.cloud.models import CABucket
from lanlock.store import Store

PER_DOMAIN = "certificates_per_domain"
PER_ACCOUNT = "orders_per_account"
DUPLICATES = "duplicates"
LIMIT_NAMES = (PER_DOMAIN, PER_ACCOUNT, DUPLICATES)
# Limits a renewal spends (Let's Encrypt exempts renewals from the other two).
RENEWALS_SPEND = frozenset({DUPLICATES})
RESERVE_SHARE = 0.2  # of a limit renewals spend, kept for renewals near expiry
URGENT_FRACTION = 1 / 3  # a certificate with less of its life left than this is due (renewal)
SPREAD = 0.5  # a refusal's Retry-After is drawn from [wait, wait × (1 + SPREAD)]


@dataclass(frozen=True)
class Limit:
    """``count`` orders per ``period``, refilling one every ``period / count``."""

    count: int
    period: dt.timedelta

    @property
    def interval(self) -> dt.timedelta:
        return self.period / self.count

    def __str__(self) -> str:
        return f"{self.count}/{config.format_duration(self.period)}"


LETS_ENCRYPT = {
    PER_DOMAIN: Limit(50, dt.timedelta(days=7)),
    PER_ACCOUNT: Limit(300, dt.timedelta(hours=3)),
    DUPLICATES: Limit(5, dt.timedelta(days=7)),
}
LETS_ENCRYPT_STAGING = {
    PER_DOMAIN: Limit(30_000, dt.timedelta(days=7)),
    PER_ACCOUNT: Limit(1_500, dt.timedelta(hours=3)),
    DUPLICATES: Limit(30_000, dt.timedelta(days=7)),
}
KNOWN_CAS = {
    "https://acme-v02.api.letsencrypt.org/directory": LETS_ENCRYPT,
    "https://acme-staging-v02.api.letsencrypt.org/directory": LETS_ENCRYPT_STAGING,
}


def default_limits(directory_url: str | None) -> dict[str, Limit]:
    """The published limits of a CA this cloud knows by its directory; none for another CA (or
    the embedded one, which has none): give them with ``--ca-limit``."""
    return dict(KNOWN_CAS.get((directory_url or "").rstrip("/"), {}))


_LIMIT_SETTING = re.compile(r"(?P<name>[a-z_]+)=(?:(?P<off>off)|(?P<count>\d+)/(?P<period>\S+))")


def parse_limit_setting(text: str) -> tuple[str, Limit | None]:
    """``NAME=COUNT/PERIOD`` (``duplicates=5/7d``) or ``NAME=off``; ValueError naming the fix."""
    match = _LIMIT_SETTING.fullmatch(text.strip())
    if match is None or match["name"] not in LIMIT_NAMES:
        raise ValueError(
            f"--ca-limit {text!r}: expected NAME=COUNT/PERIOD or NAME=off, NAME one of "
            f"{', '.join(LIMIT_NAMES)} (for example duplicates=5/7d)"
        )
    if match["off"]:
        return match["name"], None
    count = int(match["count"])
    period = config.parse_duration(match["period"])
    if count < 1 or period <= dt.timedelta(0):
        raise ValueError(f"--ca-limit {text!r}: the count and the period must be above zero")
    return match["name"], Limit(count, period)


def limits_with(base: Mapping[str, Limit], settings: tuple[str, ...]) -> dict[str, Limit]:
    """``base`` changed by each ``--ca-limit`` setting in turn."""
    limits = dict(base)
    for text in settings:
        name, limit = parse_limit_setting(text)
        if limit is None:
            limits.pop(name, None)
        else:
            limits[name] = limit
    return limits


@dataclass(frozen=True)
class Order:
    """What an order is, for the budget: its scope, the scope's newest certificate (none for a
    first one), and whether the CA exempts it (an ARI renewal in the CA's window)."""

    scope: str
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    ari_exempt: bool = False

    @property
    def renewal(self) -> bool:
        return self.not_after is not None

    def life_left(self, now: dt.datetime) -> float:
        """The share of the newest certificate's life still ahead (0 once expired)."""
        assert self.not_before is not None and self.not_after is not None
        lifetime = (self.not_after - self.not_before).total_seconds()
        left = (self.not_after - now).total_seconds()
        return min(1.0, max(0.0, left / lifetime)) if lifetime > 0 else 0.0


class BudgetSpent(Exception):
    """The CA would refuse (or has): answered 503 with ``Retry-After`` and ``ca_rate_limited``."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class Bucket:
    """A limit's bucket for one key; without a limit (none configured) it only holds what the CA
    itself asked for."""

    name: str
    key: str
    limit: Limit | None

    @property
    def row_key(self) -> str:
        return f"{self.name}:{self.key}"

    def tokens(self, full_at: dt.datetime | None, now: dt.datetime) -> float:
        """Tokens in the bucket now: full once ``full_at`` has passed."""
        assert self.limit is not None
        if full_at is None or full_at <= now:
            return float(self.limit.count)
        return max(0.0, (self.limit.period - (full_at - now)) / self.limit.interval)

    def wait_for(self, needed: int, full_at: dt.datetime, now: dt.datetime) -> dt.timedelta:
        """How long until the bucket holds ``needed`` tokens."""
        assert self.limit is not None
        return full_at - self.limit.period + needed * self.limit.interval - now


class CABudget:
    """The buckets of one CA account for one zone (see the module's docstring)."""

    def __init__(
        self,
        limits: Mapping[str, Limit],
        zone: str,
        account: str,
        zone_public_suffix: bool = False,
    ) -> None:
        self.limits = dict(limits)
        self.zone = zone
        self.account = account
        self.zone_public_suffix = zone_public_suffix

    def spend_in(self, session: Session, order: Order, now: dt.datetime) -> None:
        """Spend one token of every limit ``order`` counts against, in ``session``'s
        transaction, or raise BudgetSpent (nothing spent) when one of them cannot give it."""
        buckets = [] if order.ari_exempt else self._buckets(order)
        rows = {bucket: self._row(session, bucket) for bucket in buckets}
        self._refuse_if_blocked(rows.values(), now)
        rows = {bucket: row for bucket, row in rows.items() if bucket.limit is not None}
        for bucket, row in rows.items():
            needed = 1 + self._reserve(bucket, order, now)
            full_at = row.full_at if row is not None else None
            if bucket.tokens(full_at, now) < needed:
                assert full_at is not None
                wait = bucket.wait_for(needed, full_at, now)
                raise BudgetSpent(self._spent_detail(bucket, order), _spread(wait))
        for bucket, row in rows.items():
            self._spend(session, bucket, row, now)

    def obey(self, session: Session, order: Order, detail: str, retry_after: float) -> None:
        """The CA answered ``rateLimited``: nothing of that limit is ordered before it said."""
        now = dt.datetime.now(dt.UTC)
        until = now + dt.timedelta(seconds=retry_after)
        row_key = self._bucket_named_by(detail, order).row_key
        row = session.get(CABucket, row_key, with_for_update=True)
        if row is None:  # a full bucket held back by the CA
            session.add(CABucket(key=row_key, full_at=now, blocked_until=until))
        elif row.blocked_until is None or row.blocked_until < until:
            row.blocked_until = until

    def usage(self, session: Session, now: dt.datetime) -> Iterator[tuple[Bucket, int, int]]:
        """Per limit, ``(bucket, used, left)``: for the registered domain and the account their
        one bucket (per scope when the zone is a public suffix: the emptiest), for duplicates the
        emptiest scope's."""
        for name, limit in self.limits.items():
            rows = session.execute(
                select(CABucket.key, CABucket.full_at, CABucket.blocked_until)
                .where(CABucket.key.startswith(f"{name}:", autoescape=True))
                .order_by(CABucket.full_at.desc())
                .limit(1)
            ).all()
            key, full_at, blocked = rows[0] if rows else (f"{name}:", None, None)
            bucket = Bucket(name, key.split(":", 1)[1], limit)
            left = 0 if blocked is not None and blocked > now else int(bucket.tokens(full_at, now))
            yield bucket, limit.count - left, left

    @staticmethod
    def sweep(session: Session, now: dt.datetime) -> None:
        """Drop the rows of full buckets the CA does not hold back: a missing row is full."""
        session.execute(
            delete(CABucket).where(
                CABucket.full_at <= now,
                or_(CABucket.blocked_until.is_(None), CABucket.blocked_until <= now),
            )
        )

    # --- the buckets -------------------------------------------------------------------------

    def _buckets(self, order: Order) -> list[Bucket]:
        keys = {
            PER_DOMAIN: self._registered_domain(order.scope),
            PER_ACCOUNT: self.account,
            DUPLICATES: order.scope,
        }
        return [
            Bucket(name, keys[name], self.limits.get(name))
            for name in LIMIT_NAMES
            if not order.renewal or name in RENEWALS_SPEND
        ]

    def _registered_domain(self, scope: str) -> str:
        return names.base_name(scope, self.zone) if self.zone_public_suffix else self.zone

    def _bucket_named_by(self, detail: str, order: Order) -> Bucket:
        """The limit a CA's ``rateLimited`` detail names (Let's Encrypt's wording); the
        registered domain's when it names none of the others."""
        text = detail.lower()
        if "exact set" in text or "duplicate" in text:
            name, key = DUPLICATES, order.scope
        elif "order" in text:
            name, key = PER_ACCOUNT, self.account
        else:
            name, key = PER_DOMAIN, self._registered_domain(order.scope)
        return Bucket(name, key, self.limits.get(name))

    @staticmethod
    def _row(session: Session, bucket: Bucket) -> CABucket | None:
        # Locked: two replicas spending from one bucket queue here instead of both passing.
        return session.get(CABucket, bucket.row_key, with_for_update=True)

    @staticmethod
    def _refuse_if_blocked(rows: Iterable[CABucket | None], now: dt.datetime) -> None:
        for row in rows:
            if row is not None and row.blocked_until is not None and row.blocked_until > now:
                raise BudgetSpent(
                    "the certificate authority limited this cloud's orders and asked it to wait",
                    _spread(row.blocked_until - now),
                )

    @staticmethod
    def _spend(session: Session, bucket: Bucket, row: CABucket | None, now: dt.datetime) -> None:
        """One token taken: the bucket is full again one interval later than it was."""
        assert bucket.limit is not None
        if row is None:
            session.add(CABucket(key=bucket.row_key, full_at=now + bucket.limit.interval))
        else:
            row.full_at = max(row.full_at, now) + bucket.limit.interval

    @staticmethod
    def _reserve(bucket: Bucket, order: Order, now: dt.datetime) -> int:
        """Tokens this order must leave in the bucket for renewals nearer their expiry."""
        assert bucket.limit is not None
        if bucket.name not in RENEWALS_SPEND:
            return 0  # only first certificates spend it: nothing to keep for renewals
        reserve = max(1, round(bucket.limit.count * RESERVE_SHARE))
        if not order.renewal:
            return reserve
        urgency = min(1.0, order.life_left(now) / URGENT_FRACTION)
        return math.floor(reserve * urgency)

    @staticmethod
    def _spent_detail(bucket: Bucket, order: Order) -> str:
        kind = "a renewal" if order.renewal else "a first certificate"
        return (
            f"the certificate authority's limit {bucket.name} ({bucket.limit}) for "
            f"{bucket.key} is spent for {kind}; renewals nearest their expiry go first"
        )


def _spread(wait: dt.timedelta) -> int:
    seconds = max(1.0, wait.total_seconds())
    return math.ceil(seconds * random.uniform(1.0, 1.0 + SPREAD))


class BudgetCollector(Collector):
    """``lanlock_ca_budget_used`` and ``lanlock_ca_budget_left`` per limit, from the store."""

    def __init__(self, store: Store, budget: CABudget) -> None:
        self.store = store
        self.budget = budget

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["limit", "key"]
        used = GaugeMetricFamily(
            "lanlock_ca_budget_used", "Of the CA's rate limit, the tokens spent", labels=labels
        )
        left = GaugeMetricFamily(
            "lanlock_ca_budget_left", "Of the CA's rate limit, the tokens left", labels=labels
        )
        with self.store.transaction() as session:
            for bucket, spent, remaining in self.budget.usage(session, dt.datetime.now(dt.UTC)):
                used.add_metric([bucket.name, bucket.key], spent)
                left.add_metric([bucket.name, bucket.key], remaining)
        yield used
        yield left
