"""Seconds per issuance through Pebble, and certificates per minute for boxes asking at once.

Starts, on loopback, Debian's ``pebble`` (PEBBLE_VA_NOSLEEP=1), ``lanlock dns serve`` and
``lanlock cloud serve --issuer acme`` on one fresh SQLite store, then:

* sequential: N new boxes one after the other; each box's two requests (the first teaches it its
  scope, the second carries the CSR naming it) make one issuance; seconds per issuance.
* concurrent: M new boxes asking at the same moment; certificates per minute and the slowest box.

    .venv/bin/python bench/acme_pebble.py [--sequential 10] [--concurrent 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.acme import ask_like_a_box, start_system  # noqa: E402
from tests.boxes import Customer, TestBox  # noqa: E402
from tests.servers import fresh_store_url  # noqa: E402

from lanlock.cloud.models import cloud_store  # noqa: E402


def issue_once(box: TestBox, customer: Customer) -> float:
    """One new box's certificate, as the box gets it; seconds taken."""
    started = time.perf_counter()
    answer = ask_like_a_box(box, customer)
    if not answer.result:
        raise RuntimeError(f"issuance failed: {answer}")
    return time.perf_counter() - started


def concurrent(cloud_url: str, customer: Customer, count: int) -> tuple[float, list[float]]:
    boxes = [TestBox(cloud_url) for _ in range(count)]
    barrier = threading.Barrier(count)
    durations: list[float] = []
    errors: list[str] = []

    def run(box: TestBox) -> None:
        barrier.wait()
        try:
            durations.append(issue_once(box, customer))
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(b,)) for b in boxes]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} failed: {errors[0]}")
    return time.perf_counter() - started, durations


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import os
    import subprocess

    pebble = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "pebble"], capture_output=True, text=True
    ).stdout
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "pebble": pebble,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lanlock-acme-bench-") as folder:
        tmp = Path(folder)
        with fresh_store_url("sqlite", tmp) as url:
            system = start_system(tmp, url)
            cloud = system.cloud
            try:
                store = cloud_store(url, pool_size=1)
                customer = Customer.create(store, iot_boxes=args.sequential + args.concurrent + 5)
                store.dispose()
                issue_once(TestBox(cloud.url), customer)  # warm-up: makes the ACME account
                sequential = [
                    issue_once(TestBox(cloud.url), customer) for _ in range(args.sequential)
                ]
                wall, durations = concurrent(cloud.url, customer, args.concurrent)
            finally:
                system.stop()
    figures = {
        "machine": machine(),
        "sequential": {
            "count": len(sequential),
            "mean_s": statistics.mean(sequential),
            "median_s": statistics.median(sequential),
            "max_s": max(sequential),
        },
        "concurrent": {
            "boxes": args.concurrent,
            "wall_s": wall,
            "certificates_per_minute": args.concurrent / wall * 60,
            "slowest_box_s": max(durations),
        },
    }
    seq, conc = figures["sequential"], figures["concurrent"]
    print(f"machine: {figures['machine']}")
    print(
        f"sequential issuance through Pebble: {seq['count']} boxes, mean {seq['mean_s']:.2f} s, "
        f"median {seq['median_s']:.2f} s, max {seq['max_s']:.2f} s"
    )
    print(
        f"{conc['boxes']} boxes at once: all issued in {conc['wall_s']:.1f} s = "
        f"{conc['certificates_per_minute']:.0f} certificates/minute, slowest box "
        f"{conc['slowest_box_s']:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
