#!/usr/bin/env python3
"""A simulated month of certificate renewals (issue #10, item 1): real cloud, real boxes, an
injected clock, no sleeps.

In one process, on a fresh SQLite store:

* the real cloud service (``lanlock.cloud.x509.X509Service``, put together as
  ``lanlock.cloud.server.build_service`` does) with the embedded CA issuing certificates of
  ``--lifetime`` (``6d``, ``47d``, ``10m``, ...);
* ``--boxes`` real boxes: each its own data folder, device key, paired ``config.toml`` and
  ``TLSStore``, driven by the box's own ``CertificateManager.check()`` as the agent builds it;
* the transport: ``lanlock.box.lifecycle.post_x509`` (the one function the manager sends with)
  replaced by one that signs the same body, hands it to ``X509Service.handle`` and reads the
  answer with the box's own ``cloud_client.read_answer``;
* the clock: ``time-machine`` travels with ``tick=False`` and the simulation moves it from one
  box's next check (its manager's ``next_check_at``) to the next. ``time-machine`` moves
  ``time.time`` and ``datetime`` but not ``time.monotonic``, which the manager schedules with:
  in the box's lifecycle module ``time.monotonic`` is made to read the simulated clock for the
  run. (The cloud's sweep runs on a thread of its own, which a simulation does not start.)

For each box it reports the certificates installed and the renewals (installs after the first),
the requests to the cloud, the least remaining lifetime ever seen (``not_after - now``, at every
check and just before it, which is where the minimum between checks lies), the time without a
valid certificate after the first one (the current pair of its ``TLSStore`` absent, temporary,
not yet valid or expired: must be 0), where in its certificate's validity each renewal happened,
the shortest interval between two requests (a storm shows as a tiny one) and the requests per
simulated day. Run from the repository root::

    .venv/bin/python bench/simulated_month.py --lifetime 6d --days 30 --boxes 3
    .venv/bin/python bench/simulated_month.py --lifetime 47d --days 30 --boxes 3 --json m47.json
    .venv/bin/python bench/simulated_month.py --lifetime 10m --days 1 --boxes 2

It needs ``time-machine`` (``.venv/bin/pip install 'time-machine>=2.14,<4'``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import functools
import heapq
import json
import logging
import math
import random
import re
import ssl
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import time_machine  # noqa: E402

from lanlock import pki  # noqa: E402
from lanlock.box import cloud_client, lifecycle  # noqa: E402
from lanlock.box.identity import load_or_create_device_key  # noqa: E402
from lanlock.box.lifecycle import Backoff, CertificateManager, Environment  # noqa: E402
from lanlock.box.settings import change_config, load_config  # noqa: E402
from lanlock.box.tls_store import CertificateUnreadable, PairDamaged, TLSStore  # noqa: E402
from lanlock.cloud import admin  # noqa: E402
from lanlock.cloud.server import CloudSettings, build_service  # noqa: E402
from lanlock.cloud.throttle import IssuanceBudget  # noqa: E402
from lanlock.cloud.x509 import X509Service  # noqa: E402

START = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)  # any fixed instant: runs are repeatable
ZONE = "iot.test"
CLOUD_URL = "https://cloud.invalid"  # never dialled: the transport is in process
SOURCE = "10.0.0.1"  # the address the cloud sees (the site's router)
DAY = 86400.0
# The box asks again at the earliest 60 s after a valid check (docs/design.md §8), so it can
# never need more new certificates than this in the budget's window.
BOX_FLOOR_SECONDS = 60.0


@dataclass
class Held:
    """The current pair of a box's TLSStore, as observed."""

    serial: int | None
    not_before: float = 0.0
    not_after: float = 0.0
    temporary: bool = True

    @property
    def usable(self) -> bool:
        return self.serial is not None and not self.temporary


@dataclass
class SimBox:
    index: int
    folder: Path
    address: str
    box_id: str
    manager: CertificateManager
    tls: TLSStore
    checks: int = 0
    installs: list[dict[str, float]] = field(default_factory=list)  # per certificate installed
    renewals: list[dict[str, float]] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)  # simulated instants
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    held: Held = field(default_factory=lambda: Held(None))
    observed_at: float = 0.0
    first_valid_at: float | None = None
    invalid_seconds: float = 0.0
    least_remaining: float | None = None


def parse_lifetime(text: str) -> dt.timedelta:
    """``6d``, ``47d``, ``10m``, ``90s``, ``2h``, ``1.5d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a number and s, m, h or d (6d, 10m)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return dt.timedelta(seconds=float(match.group(1)) * unit)


def budget_for(lifetime: dt.timedelta) -> IssuanceBudget:
    """The cloud's default budget (5 new certificates per box per 24 h) when a box renewing once
    a minute-floor-or-lifetime stays well within it; for short certificates one the box cannot
    reach: one certificate per 60 s (the box's floor between valid checks), whatever it holds.

    A 6-day certificate is renewed every 4 days (far below 5 a day); a 10-minute one about every
    5 minutes (about 290 a day), which the default budget would refuse from the sixth on: the
    run would then measure the throttle, not the lifecycle."""
    default = IssuanceBudget()
    if lifetime.total_seconds() * 2 / 3 >= 2 * default.window / default.per_box:
        return default
    most = math.ceil(default.window / BOX_FLOOR_SECONDS) + default.per_box
    return IssuanceBudget(per_box=most, per_box_slot=most, window=default.window)


def make_service(workdir: Path, lifetime: dt.timedelta, budget: IssuanceBudget) -> X509Service:
    """The cloud as it starts (``build_service``), its embedded CA issuing ``lifetime``
    certificates (any timedelta, minutes included) within ``budget``."""
    return build_service(
        CloudSettings(
            data_dir=workdir / "cloud",
            store_url=f"sqlite:///{workdir / 'cloud' / 'cloud.db'}",
            zone=ZONE,
            lifetime=lifetime,
            box_issuance_limit=budget.per_box,
            subscription_issuance_factor=budget.per_box_slot,
            issuance_window=budget.window,
        )
    )


def make_box(index: int, folder: Path, db_uuid: str, code: str, verify: ssl.SSLContext) -> SimBox:
    """A box at first start, already paired (as bench/fleet.py's ``make_box``; the manager as
    ``Agent.start()`` builds it)."""
    folder.mkdir(parents=True)
    address = f"192.168.1.{10 + index}"
    device_key = load_or_create_device_key(folder)

    def paired(config: Any) -> None:
        config.console_url = "http://127.0.0.1:9"  # never asked: the simulation does not report
        config.cloud_url = CLOUD_URL
        config.db_uuid = db_uuid
        config.enterprise_code = code

    change_config(folder, paired)
    tls = TLSStore(folder / "tls")
    manager = CertificateManager(
        Environment(
            addresses=lambda: (address,),
            https_port=443,
            cloud_url=lambda: CLOUD_URL,
            cloud_verify=verify,
            device_key=device_key,
        ),
        tls=tls,
        load_config=functools.partial(load_config, folder),
        update_config=functools.partial(change_config, folder),
        on_install=lambda _pair: None,
        backoff=Backoff(),  # the box's defaults: 30 s doubling up to 1 h
    )
    box_id = pki.box_id_for(device_key.public_key())
    return SimBox(index, folder, address, box_id, manager, tls)


def _now() -> float:
    return time.time()  # the simulated clock, while time-machine travels


def _observe(box: SimBox) -> Held:
    try:
        pair = box.tls.current()
    except (CertificateUnreadable, PairDamaged):
        return Held(None)
    if pair is None:
        return Held(None)
    leaf = pair.leaf
    return Held(
        leaf.serial_number,
        leaf.not_valid_before_utc.timestamp(),
        leaf.not_valid_after_utc.timestamp(),
        pair.temporary,
    )


def _account(box: SimBox, until: float) -> None:
    """Count [observed_at, until], during which the box held ``box.held``: the time without a
    valid certificate (after the first) and the least remaining lifetime (at ``until``)."""
    start, held = box.observed_at, box.held
    if box.first_valid_at is not None and until > start:
        if not held.usable:
            box.invalid_seconds += until - start
        else:
            box.invalid_seconds += max(0.0, min(until, held.not_before) - start)
            box.invalid_seconds += max(0.0, until - max(start, held.not_after))
    if held.usable:
        remaining = held.not_after - until
        if box.least_remaining is None or remaining < box.least_remaining:
            box.least_remaining = remaining
    box.observed_at = until


def _check(box: SimBox, now: float) -> None:
    _account(box, now)  # just before the check: the least remaining lifetime is here
    before = box.held
    state = box.manager.check()
    box.checks += 1
    if state.code:
        box.codes[state.reason or state.code] += 1
    after = _observe(box)
    if after.usable and after.serial != before.serial:
        box.installs.append(
            {"at": now, "not_before": after.not_before, "not_after": after.not_after}
        )
        if box.first_valid_at is None:
            box.first_valid_at = now
        elif before.usable:
            validity = before.not_after - before.not_before
            issued_at = box.installs[-2]["at"]
            box.renewals.append(
                {
                    "at": now,
                    # where in the old certificate's validity (notBefore → notAfter) it happened
                    "validity_fraction": (now - before.not_before) / validity,
                    # and in its nominal lifetime (issuance → notAfter)
                    "lifetime_fraction": (now - issued_at) / (before.not_after - issued_at),
                    "remaining_seconds": before.not_after - now,
                    "interval_seconds": now - issued_at,
                }
            )
    box.held = after
    _account(box, now)


@contextlib.contextmanager
def _in_process_cloud(service: X509Service, boxes: dict[str, SimBox]) -> Iterator[None]:
    """The box's ``post_x509`` answered by ``service`` in process, and ``time.monotonic`` in the
    box's lifecycle reading the simulated clock."""

    def post_x509(
        client: httpx.Client, cloud_url: str, device_key: Any, payload: dict[str, Any]
    ) -> cloud_client.CloudAnswer:
        boxes[payload["box_id"]].requests.append(_now())
        answer = service.handle(cloud_client.signed_body(device_key, payload), SOURCE)
        response = httpx.Response(answer.status, json=answer.body, headers=answer.headers)
        return cloud_client.read_answer(response)

    simulated_time = types.SimpleNamespace(**{**vars(time), "monotonic": _now})
    with (
        mock.patch.object(lifecycle, "post_x509", post_x509),
        mock.patch.object(lifecycle, "time", simulated_time),
    ):
        yield


def simulate(
    lifetime: dt.timedelta,
    days: float,
    boxes: int,
    workdir: Path,
    *,
    seed: int = 1,
    budget: IssuanceBudget | None = None,
    start_spread: float = 600.0,
) -> dict[str, Any]:
    """Run ``boxes`` boxes against the cloud for ``days`` simulated days of ``lifetime``
    certificates; the boxes' first checks are spread over ``start_spread`` seconds."""
    budget = budget or budget_for(lifetime)
    workdir.mkdir(parents=True, exist_ok=True)
    outside = random.getstate()
    random.seed(seed)  # the boxes' jitter and back-off: a run is repeatable
    try:
        return _simulate(lifetime, days, boxes, workdir, budget, seed, start_spread)
    finally:
        random.setstate(outside)


def _simulate(
    lifetime: dt.timedelta,
    days: float,
    boxes: int,
    workdir: Path,
    budget: IssuanceBudget,
    seed: int,
    start_spread: float,
) -> dict[str, Any]:
    began = time.perf_counter()
    with time_machine.travel(START, tick=False) as traveller:
        t0 = _now()
        end = t0 + days * DAY
        service = make_service(workdir, lifetime, budget)
        db_uuid, code = str(uuid.UUID(int=random.getrandbits(128))), "SIM-MONTH-CODE-0001"
        admin.add_database(service.store, db_uuid, "simulated month")
        admin.add_subscription(service.store, code, db_uuid, "in_progress", boxes)
        verify = ssl.create_default_context()  # one for all, as fleet.py (never used: no HTTPS)
        herd = [
            make_box(i, workdir / "boxes" / f"b{i:03d}", db_uuid, code, verify)
            for i in range(boxes)
        ]
        by_id = {box.box_id: box for box in herd}
        queue = [(t0 + start_spread * box.index / max(1, boxes), box.index) for box in herd]
        heapq.heapify(queue)
        steps = 0
        with _in_process_cloud(service, by_id):
            while queue and queue[0][0] < end:
                due, index = heapq.heappop(queue)
                traveller.move_to(dt.datetime.fromtimestamp(due, dt.UTC))
                box = herd[index]
                _check(box, _now())
                steps += 1
                heapq.heappush(queue, (box.manager.next_check_at, index))
            traveller.move_to(dt.datetime.fromtimestamp(end, dt.UTC))
            for box in herd:
                _account(box, end)
        service.store.dispose()
    elapsed = time.perf_counter() - began
    return _report(lifetime, days, herd, budget, t0, end, seed, steps, elapsed)


def _report(
    lifetime: dt.timedelta,
    days: float,
    herd: list[SimBox],
    budget: IssuanceBudget,
    t0: float,
    end: float,
    seed: int,
    steps: int,
    elapsed: float,
) -> dict[str, Any]:
    per_box = []
    for box in herd:
        gaps = [b - a for a, b in zip(box.requests, box.requests[1:], strict=False)]
        per_day = collections.Counter(int((t - t0) // DAY) for t in box.requests)
        fractions = [r["validity_fraction"] for r in box.renewals]
        nominal = [r["lifetime_fraction"] for r in box.renewals]
        intervals = [r["interval_seconds"] for r in box.renewals]
        per_box.append(
            {
                "box": box.index,
                "box_id": box.box_id,
                "checks": box.checks,
                "installs": len(box.installs),
                "renewals": len(box.renewals),
                "requests": len(box.requests),
                "requests_per_install": len(box.requests) / max(1, len(box.installs)),
                "least_remaining_seconds": box.least_remaining,
                "invalid_seconds": box.invalid_seconds,
                "first_valid_after_seconds": (
                    None if box.first_valid_at is None else box.first_valid_at - t0
                ),
                "min_request_interval_seconds": min(gaps) if gaps else None,
                "requests_per_day": [per_day.get(d, 0) for d in range(math.ceil(days))],
                "renewal_validity_fraction": [min(fractions), max(fractions)]
                if fractions
                else None,
                "renewal_lifetime_fraction": [min(nominal), max(nominal)] if nominal else None,
                "renewal_interval_seconds": [min(intervals), max(intervals)] if intervals else None,
                "certificates": box.installs,
                "renewal_details": box.renewals,
                "codes": dict(box.codes),
            }
        )
    leasts = [b["least_remaining_seconds"] for b in per_box if b["least_remaining_seconds"]]
    return {
        "lifetime_seconds": lifetime.total_seconds(),
        "days": days,
        "boxes": len(herd),
        "seed": seed,
        "start": dt.datetime.fromtimestamp(t0, dt.UTC).isoformat(),
        "end": dt.datetime.fromtimestamp(end, dt.UTC).isoformat(),
        "budget": {
            "per_box": budget.per_box,
            "per_box_slot": budget.per_box_slot,
            "window_seconds": budget.window,
        },
        "checks": steps,
        "real_seconds": elapsed,
        "per_box": per_box,
        "totals": {
            "installs": sum(b["installs"] for b in per_box),
            "renewals": sum(b["renewals"] for b in per_box),
            "requests": sum(b["requests"] for b in per_box),
            "invalid_seconds": sum(b["invalid_seconds"] for b in per_box),
            "least_remaining_seconds": min(leasts) if leasts else None,
            "max_requests_per_box_day": max(
                (n for b in per_box for n in b["requests_per_day"]), default=0
            ),
            "min_request_interval_seconds": min(
                (
                    b["min_request_interval_seconds"]
                    for b in per_box
                    if b["min_request_interval_seconds"] is not None
                ),
                default=None,
            ),
        },
    }


def human(seconds: float | None) -> str:
    """``3d 23h``, ``4h 58m``, ``4m 45s``, ``0``."""
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0"
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    parts, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return sign + " ".join(parts[:2])


def print_report(report: dict[str, Any]) -> None:
    lifetime = report["lifetime_seconds"]
    budget = report["budget"]
    print(
        f"{human(lifetime)} certificates, {report['days']:g} simulated days, "
        f"{report['boxes']} boxes, seed {report['seed']}; issuance budget "
        f"{budget['per_box']} per box per {human(budget['window_seconds'])}; "
        f"{report['checks']} checks in {report['real_seconds']:.1f} s of real time"
    )
    head = (
        f"{'box':>3} {'checks':>6} {'certs':>5} {'renewals':>8} {'requests':>8} {'req/cert':>8} "
        f"{'least left':>10} {'no valid':>8} {'renewed at':>11} {'min req gap':>11} "
        f"{'max/day':>7}  codes"
    )
    print(head)
    print("-" * len(head))
    for b in report["per_box"]:
        at = b["renewal_validity_fraction"]
        print(
            f"{b['box']:>3} {b['checks']:>6} {b['installs']:>5} {b['renewals']:>8} "
            f"{b['requests']:>8} {b['requests_per_install']:>8.2f} "
            f"{human(b['least_remaining_seconds']):>10} {human(b['invalid_seconds']):>8} "
            f"{(f'{at[0]:.3f}-{at[1]:.3f}' if at else '-'):>11} "
            f"{human(b['min_request_interval_seconds']):>11} "
            f"{max(b['requests_per_day'], default=0):>7}  "
            f"{', '.join(f'{k} ×{v}' for k, v in b['codes'].items()) or '-'}"
        )
    t = report["totals"]
    print("-" * len(head))
    print(
        f"all {'':>6} {t['installs']:>5} {t['renewals']:>8} {t['requests']:>8} {'':>8} "
        f"{human(t['least_remaining_seconds']):>10} {human(t['invalid_seconds']):>8} {'':>11} "
        f"{human(t['min_request_interval_seconds']):>11} {t['max_requests_per_box_day']:>7}"
    )
    print(
        "renewed at: where in the old certificate's validity (notBefore → notAfter, notBefore "
        "5 min before issuance) the box renewed; no valid: time without a valid certificate "
        "after the first"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lifetime", type=parse_lifetime, default=parse_lifetime("6d"))
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--boxes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.ExitStack() as stack:
        workdir = args.keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="lanlock-month-"))
        )
        report = simulate(args.lifetime, args.days, args.boxes, workdir, seed=args.seed)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["totals"]["invalid_seconds"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
