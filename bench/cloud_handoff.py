#!/usr/bin/env python3
"""What handing a request's blocking work to threads costs the cloud (lanlock.cloud.app.Admission).

In one process, on SQLite with the embedded CA: ``X509Service.handle`` driven from an asyncio
loop with 32 requests in flight, the way the HTTP layer drives it, through each hand-off in turn:

* ``loop``          — called on the event loop itself (no hand-off: the floor);
* ``executor-N``    — a ThreadPoolExecutor of N threads through ``loop.run_in_executor`` (what
                      the cloud does);
* ``anyio-N``       — ``anyio.to_thread.run_sync`` with a CapacityLimiter of N (what it did).

Over HTTP the machine's speed drifts between runs by up to a factor of two here (the calibration
loop of ``cloud_x509.py``), more than these differences; so the hand-offs are interleaved round
by round in one process, new boxes and reuse, and the CPU per answer (process CPU, every
thread) is given as the median and range of the rounds. Run from the repository root::

    .venv/bin/python bench/cloud_handoff.py --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
from cloud_x509 import SECRET, ZONE, machine, new_boxes, say, seed, write_report

from lanlock.cloud.server import CloudSettings, build_service

IN_FLIGHT = 32
Handoff = Callable[[Callable[..., Any], bytes, str], Awaitable[Any]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def handoffs(threads: list[int]) -> dict[str, Callable[[], Handoff]]:
    """Each way of running the work, made fresh inside the loop that uses it."""

    def on_the_loop() -> Handoff:
        async def run(work: Callable[..., Any], *args: Any) -> Any:
            await asyncio.sleep(0)
            return work(*args)

        return run

    def executor(count: int) -> Callable[[], Handoff]:
        def make() -> Handoff:
            pool = ThreadPoolExecutor(count)

            async def run(work: Callable[..., Any], *args: Any) -> Any:
                return await asyncio.get_running_loop().run_in_executor(pool, work, *args)

            return run

        return make

    def anyio_threads(count: int) -> Callable[[], Handoff]:
        def make() -> Handoff:
            limiter = anyio.CapacityLimiter(count)

            async def run(work: Callable[..., Any], *args: Any) -> Any:
                return await anyio.to_thread.run_sync(work, *args, limiter=limiter)

            return run

        return make

    ways: dict[str, Callable[[], Handoff]] = {"loop": on_the_loop}
    for count in threads:
        ways[f"executor-{count}"] = executor(count)
        ways[f"anyio-{count}"] = anyio_threads(count)
    return ways


async def drive(service: Any, bodies: list[bytes], make: Callable[[], Handoff]) -> None:
    run = make()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int, body: bytes) -> None:
        async with gate:
            answer = await run(service.handle, body, f"10.1.{(index >> 8) & 255}.{index & 255}")
            if answer.status != 200:
                raise RuntimeError(f"not a certificate: {answer.status} {answer.body}")

    await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies)))


def cpu_ms_per_answer(service: Any, bodies: list[bytes], make: Callable[[], Handoff]) -> float:
    before = cpu_seconds()
    asyncio.run(drive(service, bodies, make))
    return round(1000 * (cpu_seconds() - before) / len(bodies), 3)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    ways = handoffs(args.threads)
    figures: dict[str, dict[str, list[float]]] = {w: {"issue": [], "reuse": []} for w in ways}
    with tempfile.TemporaryDirectory(prefix="lanlock-handoff-") as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'store.db'}"
        os.environ["LANLOCK_SECRET_KEY"] = SECRET
        settings = CloudSettings(tmp / "data", url, ZONE, failure_limit=1_000_000)
        service = build_service(settings)
        try:
            order = list(ways)
            for round_ in range(args.rounds):
                # Alternate the order, so that no way always follows the same one.
                for name in order if round_ % 2 == 0 else order[::-1]:
                    fleet = new_boxes(args.boxes, seed(url, 1, args.boxes + 10))
                    issue = cpu_ms_per_answer(service, [b.body() for b in fleet], ways[name])
                    asking_again = [fleet[i % 50].body() for i in range(args.reuse)]
                    reuse = cpu_ms_per_answer(service, asking_again, ways[name])
                    figures[name]["issue"].append(issue)
                    figures[name]["reuse"].append(reuse)
                    say(f"  round {round_} {name}: new box {issue} ms, reuse {reuse} ms")
        finally:
            service.store.dispose()
    return figures


def table(figures: dict[str, dict[str, list[float]]]) -> str:
    def spread(values: list[float]) -> str:
        ordered = sorted(values)
        return f"{ordered[len(ordered) // 2]:.2f} ({ordered[0]:.2f}–{ordered[-1]:.2f})"

    lines = ["| hand-off | new box, ms CPU | reuse, ms CPU |", "| --- | ---: | ---: |"]
    for name, paths in figures.items():
        lines.append(f"| {name} | {spread(paths['issue'])} | {spread(paths['reuse'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--boxes", type=int, default=400, help="new boxes per way and round")
    parser.add_argument("--reuse", type=int, default=1000, help="reuse answers per way and round")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="pool sizes to compare"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    report = {"machine": machine(None), "args": vars(args) | {"json": str(args.json)}}
    report["figures"] = measure(args)
    print(table(report["figures"]))
    write_report(report, args.json)


if __name__ == "__main__":
    main()
