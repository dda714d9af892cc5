#!/usr/bin/env python3
"""The cloud's x509 API under load (docs/design.md §14): the reuse path, the issuing path, a herd.

Starts the real cloud (``python -m lanlock cloud serve``: uvicorn with uvloop and httptools, one
process) on a free loopback port with a fresh store, seeds a production database with an
in-progress subscription, and measures, on SQLite and/or PostgreSQL:

* reuse   — boxes already issued ask again with the same TLS key (a new nonce each time): the
            stored certificate comes back. Closed loop, ``--concurrency`` requests in flight.
* issue   — every request is a new box (new device key, new TLS key): it registers and a
            certificate is issued by the embedded CA. Closed loop, bounded by ``--duration`` and
            ``--issue-max``.
* herd    — ``--herd`` new boxes arriving at a fixed rate over ``--herd-seconds`` (open loop: each
            request leaves at its scheduled time whatever the answers; at most ``--max-in-flight``
            at once), one new connection per box. Latency counts from the scheduled time.

Every request body is signed before its timed phase (a box's own code signs it:
``lanlock.box.cloud_client``), so the load generator only sends bytes; a herd body held back
so long that it nears the cloud's 300-second ``iat`` window is signed again when it leaves, as a
box would. The sender is a minimal asyncio HTTP/1.1 client (``--client httpx`` for comparison:
httpx costs over ten times its CPU per request). It runs in this process; the cloud runs in its
own. Run from the repository root::

    .venv/bin/python bench/cloud_x509.py --backend both \
        --postgres-url postgresql+psycopg://lanlock:lanlock@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "src", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import httpx  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from lanlock import pki  # noqa: E402
from lanlock.box.cloud_client import signed_body, x509_payload  # noqa: E402
from lanlock.cloud import admin  # noqa: E402
from lanlock.cloud.models import cloud_store  # noqa: E402

try:
    import uvloop
except ImportError:  # the load generator still works on the default loop
    uvloop = None

ZONE = "iot.test"
SECRET = "bench-secret-key-0123456789abcdef"  # noqa: S105 (a throwaway data folder)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the machine --------------------------------------------------------------------------------


def machine(postgres_url: str | None) -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,
        "versions": _versions(
            "uvicorn",
            "uvloop",
            "httptools",
            "starlette",
            "sqlalchemy",
            "psycopg",
            "httpx",
            "cryptography",
            "josepy",
        ),
        "lanlock_commit": _git_commit(),
        "calibration_ms": calibrate(),
    }
    if postgres_url:
        with contextlib.suppress(Exception):
            engine = create_engine(postgres_url)
            with engine.connect() as conn:
                info["postgresql"] = conn.execute(text("SHOW server_version")).scalar()
            engine.dispose()
    return info


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in packages:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.decode().strip() + ("-dirty" if dirty.stdout.strip() else "")
    return None


# --- CPU accounting -----------------------------------------------------------------------------


def _cmdline(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) and its living children (the
    cloud's workers under ``--workers``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return own + sum(_proc_cpu(int(child)) for child in children)


def _postgres_cpu() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                total += _proc_cpu(int(entry.name))
    return total


def _system_busy() -> float:
    """CPU seconds spent not idle, summed over every core, since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU used during a phase by the cloud, this load generator, PostgreSQL and the machine."""

    server_pid: int
    started: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        return {
            "cloud": _proc_cpu(self.server_pid),
            "client": time.process_time(),
            "postgres": _postgres_cpu(),
            "machine": _system_busy(),
        }

    def start(self) -> None:
        self.started = time.monotonic()
        self.marks = self._sample()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        now = self._sample()
        # Percent of one core (the machine's figure is over all its cores: 200 = 2 cores busy).
        used = {k: now[k] - self.marks[k] for k in now}
        used["other"] = max(
            0.0, used["machine"] - used["cloud"] - used["client"] - used["postgres"]
        )
        return {
            f"{k}_cpu_pct": round(100 * v / wall, 1) if wall > 0 else 0.0 for k, v in used.items()
        }


def background_load(seconds: float = 2.0) -> float:
    """Percent of one core busy on the machine over ``seconds`` (before we load it)."""
    before = _system_busy()
    time.sleep(seconds)
    return round(100 * (_system_busy() - before) / seconds, 1)


def wait_for_quiet(max_wait: float, threshold: float = 30.0) -> float:
    """Wait (at most ``max_wait`` seconds) until other work uses under ``threshold``% of a core."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    while load > threshold and time.monotonic() < deadline:
        say(f"  the machine is busy ({load:.0f}% of a core used by others); waiting")
        load = background_load(5.0)
    return load


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python workload (best of 5): this machine's speed, now."""

    def work() -> int:
        total = 0
        for i in range(200_000):
            total += len(str(i))
        return total

    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


# --- the store and the cloud ------------------------------------------------------------------


@contextlib.contextmanager
def fresh_store(backend: str, tmp: Path, postgres_url: str | None) -> Iterator[str]:
    """An empty store: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'store.db'}"
        return
    assert postgres_url
    name = f"lanlock_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def lanlock_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m lanlock`` this benchmark starts: the lanlock beside
    this script first. Without it the child imports the one installed in the venv (the main
    checkout's), so a benchmark run from another worktree measured the main checkout's code."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cloud:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def loaded_modules(self) -> dict[str, bool]:
        """What the running server loaded: uvicorn picks uvloop and httptools when present (in
        the one process, or under ``--workers`` in its first worker)."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            server = next((c for c in children if "resource_tracker" not in _cmdline(c)), pid)
            maps = Path(f"/proc/{server}/maps").read_text()
        except OSError:
            return {}
        return {"uvloop": "/uvloop/loop." in maps, "httptools": "/httptools/" in maps}

    def counters(self) -> Counter[str]:
        """The cloud's x509 request counters by outcome (and code), from /metrics."""
        text_ = httpx.get(
            self.url + "/metrics", headers={"Authorization": f"Bearer {SECRET}"}, timeout=10
        ).text
        counts: Counter[str] = Counter()
        for line in text_.splitlines():
            if line.startswith("lanlock_x509_requests_total{"):
                labels, value = line[len("lanlock_x509_requests_total{") :].rsplit("}", 1)
                parts = dict(p.split("=", 1) for p in labels.split(",") if "=" in p)
                outcome = parts.get("outcome", "").strip('"')
                code = parts.get("code", "").strip('"')
                counts[outcome + (f":{code}" if code else "")] += int(float(value))
        return counts


@contextlib.contextmanager
def running_cloud(
    store_url: str, data_dir: Path, workers: int = 1, pin: bool = True
) -> Iterator[Cloud]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "cloud.log"
    command = [
        sys.executable, "-m", "lanlock", "cloud", "serve",
        "--store", store_url, "--data", str(data_dir), "--port", str(port),
        "--zone", ZONE, "--failure-limit", "1000000", "--workers", str(workers),
        "--max-in-flight", "100000",  # measure the path, not the shedding
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=lanlock_env(LANLOCK_SECRET_KEY=SECRET, LANLOCK_CLOUD_METRICS_TOKEN=SECRET),
            start_new_session=True,  # Ctrl-C reaches us; we stop it ourselves, in order
            preexec_fn=pin_server if pin else None,
        )
    cloud = Cloud(f"http://127.0.0.1:{port}", port, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the cloud exited at start:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(cloud.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cloud did not answer within 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield cloud
    finally:
        cloud.stop()


@dataclass(frozen=True)
class Customer:
    db_uuid: str
    code: str


def seed(store_url: str, customers: int, boxes_each: int) -> list[Customer]:
    """Production databases, each with one in-progress subscription with room for the boxes."""
    store = cloud_store(store_url, pool_size=2)
    try:
        made = []
        for _ in range(customers):
            customer = Customer(str(uuid.uuid4()), "SUB-" + uuid.uuid4().hex)
            admin.add_database(store, customer.db_uuid, "bench", "production")
            admin.add_subscription(
                store, customer.code, customer.db_uuid, "in_progress", boxes_each
            )
            made.append(customer)
        return made
    finally:
        store.dispose()


# --- boxes and their signed requests ----------------------------------------------------------


@dataclass
class Box:
    customer: Customer
    address: str
    device_key: ec.EllipticCurvePrivateKey = field(default_factory=pki.new_private_key)
    tls_key: ec.EllipticCurvePrivateKey = field(default_factory=pki.new_private_key)
    csr_pem: str = ""

    def __post_init__(self) -> None:
        self.csr_pem = pki.csr_pem(pki.build_csr(self.tls_key))

    def body(self) -> bytes:
        """One request as the box sends it: a fresh iat and a fresh nonce, signed."""
        payload = x509_payload(
            self.device_key,
            self.customer.db_uuid,
            self.customer.code,
            self.csr_pem,
            self.address,
        )
        return signed_body(self.device_key, payload)


def new_boxes(count: int, customers: list[Customer], first: int = 0) -> list[Box]:
    return [
        Box(customers[i % len(customers)], f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
        for i in range(first, first + count)
    ]


# --- sending ------------------------------------------------------------------------------------


def classify(status: int, body: bytes) -> str | None:
    """None for a certificate; otherwise what went wrong, as a short key for the error table."""
    if status != 200:
        return f"http_{status}"
    try:
        doc = json.loads(body)
    except ValueError:
        return "bad_json"
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return f"refused:{doc['error'].get('code')}"
    result = doc.get("result") if isinstance(doc, dict) else None
    if not (isinstance(result, dict) and result.get("x509_pem")):
        return "no_result"
    return None


class RawConnection:
    """A minimal HTTP/1.1 client connection: POST a body, read a Content-Length answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, close: bool = False) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST /iot/x509 HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/jose+json\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        ).encode()
        try:
            self.writer.write(head + body)
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.split(b"\r\n")
            status = int(lines[0].split()[1])
            length, keep = None, not close
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
            if length is None:
                answer = await self.reader.read()
                keep = False
            else:
                answer = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpxSender:
    """The same requests through httpx.AsyncClient, to compare the client's own cost."""

    def __init__(self, url: str, connections: int, timeout: float) -> None:
        self.url = url + "/iot/x509"
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(limits=limits, timeout=timeout)

    async def post(self, body: bytes, close: bool = False) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/jose+json"}
        if close:
            headers["Connection"] = "close"
        response = await self.client.post(self.url, content=body, headers=headers)
        return response.status_code, response.content


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, successful answers only
    all_latencies: list[float] = field(default_factory=list)  # any answer, error or not
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    first_send: float = 0.0
    last_answer: float = 0.0
    ok_times: list[float] = field(default_factory=list)  # when each success arrived

    def record(self, latency: float, error: str | None) -> None:
        self.last_answer = time.perf_counter()
        self.all_latencies.append(latency)
        if error is None:
            self.latencies.append(latency)
            self.ok_times.append(self.last_answer)
        else:
            self.errors[error] += 1

    def timeline(self, step: float = 10.0) -> list[float]:
        """Successes per second in each ``step``-second window from the first send."""
        windows: Counter[int] = Counter(int((t - self.first_send) // step) for t in self.ok_times)
        last = max(windows, default=-1)
        return [round(windows[i] / step, 1) for i in range(last + 1)]


async def timed_post(
    post: Callable[[bytes, bool], Awaitable[tuple[int, bytes]]],
    body: bytes,
    close: bool,
    timeout: float,
) -> str | None:
    try:
        status, answer = await asyncio.wait_for(post(body, close), timeout)
    except TimeoutError:
        return "timeout"
    except (OSError, asyncio.IncompleteReadError, httpx.HTTPError, ValueError) as exc:
        return f"conn:{type(exc).__name__}"
    return classify(status, answer)


async def closed_loop(
    host: str,
    port: int,
    bodies: list[bytes],
    concurrency: int,
    duration: float,
    timeout: float,
    client: str,
) -> tuple[Outcome, float]:
    """``concurrency`` workers send the bodies in order until ``duration`` or they run out."""
    outcome = Outcome()
    index = 0
    httpx_sender = (
        HttpxSender(f"http://{host}:{port}", concurrency, timeout) if client == "httpx" else None
    )

    async def worker() -> None:
        nonlocal index
        connection = RawConnection(host, port)
        post = httpx_sender.post if httpx_sender else connection.post
        try:
            while time.perf_counter() < deadline and index < len(bodies):
                body = bodies[index]
                index += 1
                outcome.sent += 1
                started = time.perf_counter()
                error = await timed_post(post, body, False, timeout)
                outcome.record(time.perf_counter() - started, error)
        finally:
            connection.close()

    outcome.first_send = time.perf_counter()
    deadline = outcome.first_send + duration
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if httpx_sender:
            await httpx_sender.client.aclose()
    return outcome, time.perf_counter() - outcome.first_send


# A body older than this is signed again when it finally leaves (the cloud takes 300 s).
RESIGN_AFTER_SECONDS = 200.0


async def open_loop(
    host: str,
    port: int,
    signed: list[tuple[Box, bytes, float]],
    seconds: float,
    max_in_flight: int,
    timeout: float,
    client: str,
    deadline_seconds: float,
) -> tuple[Outcome, dict[str, Any]]:
    """Send request i at start + i·seconds/n (one new connection each), whatever the answers.

    ``signed`` holds (box, body, when it was signed). At most ``max_in_flight`` requests are
    open at once: a request held back by that cap leaves late, and its latency still counts from
    its scheduled time. Nothing is sent after ``deadline_seconds``; what is left is "not_sent".
    """
    outcome = Outcome()
    interval = seconds / max(len(signed), 1)
    gate = asyncio.Semaphore(max_in_flight)
    in_flight = peak = late = resigned = 0
    httpx_sender = (
        HttpxSender(f"http://{host}:{port}", max_in_flight, timeout) if client == "httpx" else None
    )

    async def one(body: bytes, scheduled: float) -> None:
        nonlocal in_flight
        try:
            post = httpx_sender.post if httpx_sender else RawConnection(host, port).post
            error = await timed_post(post, body, True, timeout)
            outcome.record(time.perf_counter() - scheduled, error)
        finally:
            in_flight -= 1
            gate.release()

    tasks = []
    start = outcome.first_send = time.perf_counter()
    deadline = start + deadline_seconds
    try:
        for i, (box, body, signed_at) in enumerate(signed):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await asyncio.wait_for(gate.acquire(), max(0.0, deadline - time.perf_counter()))
            except TimeoutError:
                outcome.errors["not_sent"] += len(signed) - i
                break
            if time.perf_counter() - scheduled > 0.1:
                late += 1  # held back by the in-flight cap: the wait counts in its latency
            if time.time() - signed_at > RESIGN_AFTER_SECONDS:
                body = box.body()  # as a real box would: a fresh iat and nonce when it sends
                resigned += 1
            in_flight += 1
            peak = max(peak, in_flight)
            outcome.sent += 1
            tasks.append(asyncio.create_task(one(body, scheduled)))
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout + 10)
        for task in pending:
            task.cancel()
        if pending:
            outcome.errors["unfinished"] += len(pending)
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        if httpx_sender:
            await httpx_sender.client.aclose()
    return outcome, {
        "peak_in_flight": peak,
        "sent_late_over_100ms": late,
        "re_signed": resigned,
        "wall_s": time.perf_counter() - start,
    }


def run_async(coro: Awaitable[Any]) -> Any:
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


# --- figures ------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def summarise(outcome: Outcome, wall: float) -> dict[str, Any]:
    ok = len(outcome.latencies)
    return {
        "sent": outcome.sent,
        "ok": ok,
        "errors": sum(outcome.errors.values()),
        "errors_by_kind": dict(outcome.errors.most_common()),
        "wall_s": round(wall, 2),
        "ok_per_s": round(ok / wall, 1) if wall > 0 else None,
        "p50_ms": ms(percentile(outcome.latencies, 0.50)),
        "p90_ms": ms(percentile(outcome.latencies, 0.90)),
        "p99_ms": ms(percentile(outcome.latencies, 0.99)),
        "max_ms": ms(max(outcome.latencies, default=None)),
        "p99_all_answers_ms": ms(percentile(outcome.all_latencies, 0.99)),
    }


def add_cpu(figures: dict[str, Any], cpu: dict[str, float]) -> None:
    figures.update(cpu)
    ok, wall = figures["ok"], figures["wall_s"]
    figures["cloud_cpu_ms_per_ok"] = round(cpu["cloud_cpu_pct"] * wall * 10 / ok, 2) if ok else None


def counter_delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in sorted(after) if after[k] - before[k]}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- one backend ------------------------------------------------------------------------------


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    phases = set(args.phases.split(","))
    total_boxes = args.reuse_boxes + args.issue_max + args.herd + 100
    per_customer = math.ceil(total_boxes / args.customers) + 10
    result: dict[str, Any] = {"backend": backend}
    result["background_cpu_pct_before"] = wait_for_quiet(args.wait_quiet)
    result["calibration_ms_before"] = calibrate()
    with (
        tempfile.TemporaryDirectory(prefix=f"lanlock-bench-{backend}-") as tmp_name,
        fresh_store(backend, Path(tmp_name), args.postgres_url) as store_url,
        running_cloud(store_url, Path(tmp_name) / "data", args.workers, args.pin) as cloud,
    ):
        result["server"] = {"pid": cloud.process.pid, **cloud.loaded_modules()}
        say(f"[{backend}] cloud on {cloud.url} (pid {cloud.process.pid}), {result['server']}")
        customers = seed(store_url, args.customers, per_customer)
        host, port = "127.0.0.1", cloud.port
        made = 0

        def boxes(count: int) -> list[Box]:
            nonlocal made
            batch = new_boxes(count, customers, made)
            made += count
            return batch

        if "reference" in phases:
            result["reference"] = reference_phase(boxes(1)[0].body(), args)
        if "reuse" in phases:
            result["reuse"] = reuse_phase(cloud, host, port, boxes(args.reuse_boxes), args)
        if "issue" in phases:
            result["issue"] = issue_phase(cloud, host, port, boxes, args)
        if "reference" in phases and phases & {"reuse", "issue"}:
            # Again after the paths: this machine's speed drifts (its calibration loop moved
            # between 14 and 29 ms within runs), and a share is only as good as its reference.
            result["reference_after"] = reference_phase(boxes(1)[0].body(), args)
        if "herd" in phases:
            result["herd"] = herd_phase(cloud, host, port, boxes, args)
        result["calibration_ms_after"] = calibrate()
        if args.keep_log:
            result["server_log_tail"] = cloud.log.read_text()[-4000:]
        result["server_exit"] = (
            "running at the end"
            if cloud.process.poll() is None
            else (f"exited {cloud.process.returncode}")
        )
    return result


def pin_server() -> None:
    """The server on the first core (the client takes the second): one core each, as the
    issue's figures compare them."""
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def pin_client() -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(0, set(cores[1:]))


@contextlib.contextmanager
def running_bare_app() -> Iterator[Cloud]:
    """bench/bare_json_app.py under uvicorn as ``lanlock cloud serve`` runs (uvloop, httptools,
    no access log, no Server header), pinned like the cloud."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.bare_json_app:app", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header",
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, preexec_fn=pin_server,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    bare = Cloud(f"http://127.0.0.1:{port}", port, process, Path(os.devnull))
    try:
        deadline = time.monotonic() + 30
        while not _answers(bare.url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the bare Starlette reference did not start")
            time.sleep(0.1)
        yield bare
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        httpx.post(url + "/iot/x509", content=b"{}", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def reference_phase(body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """The bare endpoint's rate with the same client, concurrency and body size."""
    with running_bare_app() as bare:
        count = 400_000
        say("  reference: a bare Starlette JSON endpoint, same uvicorn settings")
        run_async(closed_loop("127.0.0.1", bare.port, [body] * 2000, 32, 5, args.timeout, "raw"))
        meter = CpuMeter(bare.process.pid)
        meter.start()
        outcome, wall = run_async(
            closed_loop(
                "127.0.0.1", bare.port, [body] * count, args.concurrency, args.duration,
                args.timeout, args.client,
            )
        )  # fmt: skip
        cpu = meter.stop()
    figures = summarise(outcome, wall)
    add_cpu(figures, cpu)
    figures["client_cpu_ms_per_request"] = (
        round(cpu["client_cpu_pct"] * wall * 10 / outcome.sent, 3) if outcome.sent else None
    )
    return figures


def _sign_all(items: list[Box]) -> tuple[list[bytes], float]:
    started = time.perf_counter()
    bodies = [box.body() for box in items]
    return bodies, time.perf_counter() - started


def reuse_phase(
    cloud: Cloud, host: str, port: int, fleet: list[Box], args: argparse.Namespace
) -> dict[str, Any]:
    # Untimed: each box registers and gets its certificate, then a warm-up sets the body count.
    say(f"  reuse: issuing {len(fleet)} boxes once, then a warm-up")
    first, _ = _sign_all(fleet)
    setup, _ = run_async(closed_loop(host, port, first, 8, 120, args.timeout, "raw"))
    if setup.errors:
        raise RuntimeError(f"the reuse boxes could not get a certificate: {dict(setup.errors)}")
    warm = [box.body() for _ in range(4) for box in fleet]
    warm_outcome, warm_wall = run_async(
        closed_loop(host, port, warm, args.concurrency, 30, args.timeout, args.client)
    )
    rate = len(warm_outcome.latencies) / warm_wall if warm_wall > 0 else 100.0
    count = min(args.reuse_max, max(1000, int(rate * args.duration * 1.6)))
    bodies, sign_s = _sign_all([fleet[i % len(fleet)] for i in range(count)])
    say(f"  reuse: warm-up {rate:.0f}/s; {count} bodies signed in {sign_s:.1f} s; sending")
    figures, outcome, wall, cpu = measured_closed_loop(cloud, host, port, bodies, args)
    figures["boxes"] = len(fleet)
    figures["client_cpu_ms_per_request"] = (
        round(cpu["client_cpu_pct"] * wall * 10 / outcome.sent, 3) if outcome.sent else None
    )
    return figures


def issue_phase(
    cloud: Cloud, host: str, port: int, boxes: Callable[[int], list[Box]], args: argparse.Namespace
) -> dict[str, Any]:
    say(f"  issue: making and signing {args.issue_max} new boxes")
    started = time.perf_counter()
    bodies, _ = _sign_all(boxes(args.issue_max))
    say(f"  issue: signed in {time.perf_counter() - started:.1f} s; sending")
    figures, _, _, _ = measured_closed_loop(cloud, host, port, bodies, args)
    return figures


def measured_closed_loop(
    cloud: Cloud, host: str, port: int, bodies: list[bytes], args: argparse.Namespace
) -> tuple[dict[str, Any], Any, float, dict[str, Any]]:
    """Send ``bodies`` in a closed loop while metering the cloud; the phase's figures."""
    before = cloud.counters()
    meter = CpuMeter(cloud.process.pid)
    meter.start()
    outcome, wall = run_async(
        closed_loop(host, port, bodies, args.concurrency, args.duration, args.timeout, args.client)
    )
    cpu = meter.stop()
    figures = summarise(outcome, wall)
    add_cpu(figures, cpu)
    figures["server_outcomes"] = counter_delta(cloud.counters(), before)
    figures["bodies_exhausted"] = outcome.sent >= len(bodies)
    figures["concurrency"] = args.concurrency
    figures["client"] = args.client
    return figures, outcome, wall, cpu


def herd_phase(
    cloud: Cloud, host: str, port: int, boxes: Callable[[int], list[Box]], args: argparse.Namespace
) -> dict[str, Any]:
    say(f"  herd: making and signing {args.herd} new boxes")
    started = time.perf_counter()
    fleet = boxes(args.herd)
    signed = [(box, box.body(), time.time()) for box in fleet]
    signing = time.perf_counter() - started
    rate = args.herd / args.herd_seconds
    say(
        f"  herd: signed in {signing:.1f} s; {args.herd} boxes at {rate:.0f}/s "
        f"(no sends after {args.herd_deadline:.0f} s)"
    )
    before = cloud.counters()
    meter = CpuMeter(cloud.process.pid)
    meter.start()
    outcome, extra = run_async(
        open_loop(
            host,
            port,
            signed,
            args.herd_seconds,
            args.max_in_flight,
            args.timeout,
            args.client,
            args.herd_deadline,
        )
    )
    cpu = meter.stop()
    figures = summarise(outcome, extra.pop("wall_s"))
    add_cpu(figures, cpu)
    figures.update(extra)
    figures["offered_per_s"] = round(rate, 1)
    figures["herd"] = args.herd
    figures["herd_seconds"] = args.herd_seconds
    figures["last_answer_s"] = (
        round(outcome.last_answer - outcome.first_send, 2) if outcome.last_answer else None
    )
    figures["server_outcomes"] = counter_delta(cloud.counters(), before)
    figures["max_in_flight"] = args.max_in_flight
    figures["latency_from"] = "scheduled send time"
    figures["ok_per_s_by_10s"] = outcome.timeline()
    return figures


# --- in process: the CPU of an answer, and where it goes ----------------------------------------

# The steps of X509Service.handle timed by ``--in-process --profile``, in the order they run:
# (label, module, attribute path). Each is timed inclusively, nested where it is called inside
# another; one the code does not have (an older or newer request path) is left out.
STEPS = [
    ("verify the JWS", "lanlock.cloud.x509", "verify_request"),
    ("parse the CSR", "lanlock.cloud.csr_policy", "load"),
    ("check the CSR's signature and key", "lanlock.cloud.csr_policy", "check"),
    ("first look", "lanlock.cloud.x509", "X509Service._first_look"),
    ("  the box's row, its certificate for the key", "lanlock.cloud.express", "look"),
    ("  express lane: reuse check and writes", "lanlock.cloud.express", "reused_certificate"),
    ("  nonce (wherever written)", "lanlock.cloud.nonces", "remember"),
    ("  eligibility", "lanlock.cloud.eligibility", "check"),
    ("  registration", "lanlock.cloud.registration", "register_in"),
    ("  lease, reuse, budget (in the first look)", "lanlock.cloud.issuance", "Issuance.take_in"),
    ("  issue and record in it", "lanlock.cloud.issuance", "Issuance.issue_in"),
    ("issuance (all of it)", "lanlock.cloud.issuance", "Issuance.certificate_for"),
    (
        "  lease, reuse, budget (own transaction)",
        "lanlock.cloud.issuance",
        "Issuance._reuse_or_lease",
    ),
    ("  the CA signs", "lanlock.cloud.issuance", "Issuance._issue"),
    ("  record", "lanlock.cloud.issuance", "Issuance._record"),
    ("the answer's JSON", "lanlock.cloud.x509", "X509Service._result"),
]


class StepTimer:
    """Wall time per step of ``STEPS`` (in process, one thread: its CPU plus the store's I/O)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._undo: list[tuple[Any, str, Any]] = []

    def install(self) -> list[str]:
        import importlib

        found = []
        for label, module_name, path in STEPS:
            owner: Any = importlib.import_module(module_name)
            *parents, attribute = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent, None)
            original = owner.__dict__.get(attribute) if owner is not None else None
            if original is None:  # a step of another version of the code (a before/after run)
                say(f"  (no {module_name}.{path} in this version: its step is not timed)")
                continue
            self._undo.append((owner, attribute, original))
            setattr(owner, attribute, self._timed(label, original))
            found.append(label)
        return found

    def uninstall(self) -> None:
        for owner, attribute, original in reversed(self._undo):
            setattr(owner, attribute, original)
        self._undo.clear()

    def _timed(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        return timed


def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """``X509Service.handle`` called in a loop in this process: CPU per answer for new boxes
    and for reuse, ``--rounds`` times each, per backend; with ``--profile`` also each step's
    time per answer (a separate run: the timers cost a little)."""
    from lanlock.cloud.server import CloudSettings, build_service

    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if not args.postgres_url and "postgres" in backends:
        say("no PostgreSQL URL: in process on SQLite only")
        backends.remove("postgres")
    results = []
    for backend in backends:
        result: dict[str, Any] = {"backend": backend, "issue": [], "reuse": []}
        result["background_cpu_pct_before"] = wait_for_quiet(args.wait_quiet)
        with (
            tempfile.TemporaryDirectory(prefix=f"lanlock-inproc-{backend}-") as tmp_name,
            fresh_store(backend, Path(tmp_name), args.postgres_url) as store_url,
        ):
            tmp = Path(tmp_name)
            os.environ["LANLOCK_SECRET_KEY"] = SECRET
            settings = CloudSettings(
                data_dir=tmp / "data", store_url=store_url, zone=ZONE, failure_limit=1_000_000
            )
            service = build_service(settings)
            try:
                warm = new_boxes(50, seed(store_url, 1, 60))  # compiled statements, caches
                _handle_all(service, [box.body() for box in warm])
                _handle_all(service, [box.body() for box in warm])
                rounds = [*range(args.rounds)] + (["profile"] if args.profile else [])
                for round_ in rounds:
                    profiled = round_ == "profile"
                    customer = seed(store_url, 1, args.inproc_issue + 10)
                    fleet = new_boxes(args.inproc_issue, customer)
                    say(f"[{backend}] in process, round {round_}: signing")
                    bodies = [box.body() for box in fleet]
                    timer = StepTimer() if profiled else None
                    steps = timer.install() if timer else []
                    try:
                        issue = _handle_all(service, bodies)
                        reuse_bodies = [
                            fleet[i % args.reuse_boxes].body() for i in range(args.inproc_reuse)
                        ]
                        if timer:
                            issue["steps_us"] = _per_answer(timer, steps, len(bodies))
                            timer.seconds.clear()
                        reuse = _handle_all(service, reuse_bodies)
                        if timer:
                            reuse["steps_us"] = _per_answer(timer, steps, len(reuse_bodies))
                    finally:
                        if timer:
                            timer.uninstall()
                    if profiled:
                        result["profile"] = {"issue": issue, "reuse": reuse}
                    else:
                        result["issue"].append(issue)
                        result["reuse"].append(reuse)
                    say(
                        f"  issue {issue['cpu_ms']} ms CPU/answer, reuse {reuse['cpu_ms']} ms"
                        + (" (profiled)" if profiled else "")
                    )
            finally:
                service.store.dispose()
        results.append(result)
    return {"results": results}


def _handle_all(service: Any, bodies: list[bytes]) -> dict[str, Any]:
    import gc

    gc.collect()
    errors: Counter[str] = Counter()
    pg_before, cpu_before, wall_before = _postgres_cpu(), time.process_time(), time.perf_counter()
    for index, body in enumerate(bodies):
        answer = service.handle(body, f"10.1.{(index >> 8) & 255}.{index & 255}")
        if answer.status != 200 or "result" not in answer.body:
            errors[str(answer.status) + ":" + str(answer.body)[:80]] += 1
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    pg = _postgres_cpu() - pg_before
    if errors:
        raise RuntimeError(f"answers that are not certificates: {dict(errors)}")
    count = len(bodies)
    return {
        "answers": count,
        "cpu_ms": round(1000 * cpu / count, 3),
        "wall_ms": round(1000 * wall / count, 3),
        "postgres_cpu_ms": round(1000 * pg / count, 3),
    }


def _per_answer(timer: StepTimer, steps: list[str], answers: int) -> dict[str, float]:
    return {label: round(1e6 * timer.seconds[label] / answers, 1) for label in steps}


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return f"{median:.3f} ms (min {ordered[0]:.3f}, max {ordered[-1]:.3f}, n={len(ordered)})"


def in_process_table(report: dict[str, Any]) -> str:
    lines = []
    for result in report["results"]:
        backend = result["backend"]
        for phase in ("issue", "reuse"):
            runs = result[phase]
            if runs:
                cpu = _spread([r["cpu_ms"] for r in runs])
                wall = _spread([r["wall_ms"] for r in runs])
                lines.append(f"{backend:<9}{phase:<7} CPU per answer {cpu}; wall {wall}")
                if backend == "postgres":
                    pg = _spread([r["postgres_cpu_ms"] for r in runs])
                    lines.append(f"{'':<16} PostgreSQL CPU per answer {pg} (every backend's)")
        profile = result.get("profile")
        if profile:
            lines.append(f"{backend}: µs per answer in each step (wall, inclusive; profiled run)")
            for phase in ("issue", "reuse"):
                steps = profile[phase]["steps_us"]
                shown = ", ".join(f"{k.strip()} {v:g}" for k, v in steps.items() if v)
                lines.append(
                    f"  {phase} ({profile[phase]['wall_ms'] * 1000:.0f} µs in all): {shown}"
                )
        lines.append(f"  others used {result['background_cpu_pct_before']}% of a core before")
    return "\n".join(lines)


# --- output -------------------------------------------------------------------------------------


def _cell(value: Any, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


COLUMNS = [  # (heading, key, width)
    ("sent", "sent", 7),
    ("ok", "ok", 7),
    ("err", "errors", 6),
    ("ok/s", "ok_per_s", 8),
    ("p50 ms", "p50_ms", 9),
    ("p99 ms", "p99_ms", 9),
    ("max ms", "max_ms", 9),
    ("last s", "last_answer_s", 8),
    ("cpu ms/ok", "cloud_cpu_ms_per_ok", 10),
    ("cloud%", "cloud_cpu_pct", 7),
    ("pg%", "postgres_cpu_pct", 6),
    ("client%", "client_cpu_pct", 8),
    ("other%", "other_cpu_pct", 7),
]


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}; calibration {m['calibration_ms']} ms",
        f"software: Python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"lanlock {m['lanlock_commit']}; client: {report['args']['client']}, "
        f"concurrency {report['args']['concurrency']}",
        "",
        f"{'backend':<9}{'phase':<7}" + "".join(f"{h:>{w}}" for h, _, w in COLUMNS),
    ]
    for result in report["results"]:
        for phase in ("reference", "reuse", "issue", "reference_after", "herd"):
            f = result.get(phase)
            if f:
                lines.append(
                    f"{result['backend']:<9}{PHASE_LABELS.get(phase, phase):<7}"
                    + "".join(_cell(f.get(k), w) for _, k, w in COLUMNS)
                )
    lines.append("")
    for result in report["results"]:
        server = result.get("server", {})
        lines.append(
            f"{result['backend']}: uvloop loaded in the cloud: {server.get('uvloop')}, "
            f"httptools: {server.get('httptools')}; others used "
            f"{result['background_cpu_pct_before']}% of a core before; calibration "
            f"{result['calibration_ms_before']} → {result.get('calibration_ms_after')} ms"
        )
        for phase in ("reference", "reuse", "issue", "herd"):
            f = result.get(phase)
            if not f:
                continue
            notes = [f"server outcomes {f.get('server_outcomes', 'not counted')}"]
            if f["errors_by_kind"]:
                notes.append(f"errors {f['errors_by_kind']}")
            if phase == "herd":
                notes.append(
                    f"offered {f['offered_per_s']}/s for {f['herd_seconds']} s, peak in flight "
                    f"{f['peak_in_flight']}, sent >100 ms late {f['sent_late_over_100ms']}, "
                    f"re-signed {f['re_signed']}"
                )
                notes.append(f"ok/s per 10 s window {f['ok_per_s_by_10s']}")
            elif f.get("bodies_exhausted"):
                notes.append("ran out of pre-signed bodies before --duration")
            if f.get("client_cpu_ms_per_request") is not None:
                notes.append(f"client CPU {f['client_cpu_ms_per_request']} ms/request")
            if phase in ("reuse", "issue") and result.get("reference"):
                notes.append(_share(f, result))
            lines.append(f"  {phase}: " + "; ".join(n for n in notes if n))
    lines.append(
        "cpu ms/ok: the cloud's CPU per certificate answered. cloud%, pg%, client%, other%: "
        "percent of one core used by the cloud, PostgreSQL, this load generator and everything "
        "else. Latency: successful answers only; the herd's counts from each box's scheduled "
        "send time. Calibration: ms for a fixed pure-Python loop (lower is faster)."
    )
    return "\n".join(lines)


PHASE_LABELS = {"reference_after": "ref.after"}


def _share(figures: dict[str, Any], result: dict[str, Any]) -> str:
    """The path's rate against the bare endpoint's, measured before the paths and after."""
    rates = [
        result[k].get("ok_per_s") or 0 for k in ("reference", "reference_after") if k in result
    ]
    bare = sum(rates) / len(rates)
    if not bare:
        return ""
    share = 100 * (figures.get("ok_per_s") or 0) / bare
    return (
        f"{share:.1f} % of the bare endpoint's rate ({' and '.join(f'{r:.0f}' for r in rates)}/s)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Requests per second of the cloud's POST /iot/x509 (reuse, issue, herd)."
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LANLOCK_BENCH_POSTGRES_URL")
        or os.environ.get("LANLOCK_TEST_POSTGRES_URL"),
        help="an admin URL of a PostgreSQL server; a fresh database is made and dropped "
        "[default: $LANLOCK_BENCH_POSTGRES_URL or $LANLOCK_TEST_POSTGRES_URL]",
    )
    parser.add_argument("--herd", type=int, default=10_000, help="boxes in the herd")
    parser.add_argument("--herd-seconds", type=float, default=60.0, help="arrival window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per closed phase")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop in flight")
    parser.add_argument("--max-in-flight", type=int, default=512, help="herd in-flight cap")
    parser.add_argument(
        "--herd-deadline",
        type=float,
        default=900.0,
        help="seconds after the herd's start when sending stops (the rest counts as not_sent)",
    )
    parser.add_argument("--reuse-boxes", type=int, default=50)
    parser.add_argument("--reuse-max", type=int, default=60_000, help="cap of reuse bodies")
    parser.add_argument("--issue-max", type=int, default=3_000, help="cap of issuing requests")
    parser.add_argument(
        "--customers", type=int, default=1, help="spread the boxes over this many subscriptions"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--phases", default="reference,reuse,issue,herd")
    parser.add_argument(
        "--workers", type=int, default=1, help="the cloud's --workers (the paths: one process)"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the cloud and this client run on any core (a herd with --workers 2); by "
        "default the cloud and the reference server run on the first core, this client on the rest",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        help="before each backend, wait up to this many seconds for other work to calm down",
    )
    parser.add_argument("--keep-log", action="store_true", help="put the cloud's log in the JSON")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="no HTTP: call X509Service.handle in a loop in this process and give its CPU per "
        "answer for new boxes and for reuse (--rounds times each)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="in process: rounds per path")
    parser.add_argument(
        "--inproc-issue", type=int, default=1500, help="in process: new boxes per round"
    )
    parser.add_argument(
        "--inproc-reuse", type=int, default=3000, help="in process: reuse answers per round"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="in process: one more round with each step of the request timed",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.customers < 1 or args.herd < 0 or args.herd_seconds <= 0 or args.concurrency < 1:
        parser.error("--customers, --concurrency ≥ 1; --herd ≥ 0; --herd-seconds > 0")
    unknown = set(args.phases.split(",")) - {"reference", "reuse", "issue", "herd"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.in_process and not 1 <= args.reuse_boxes <= args.inproc_issue:
        parser.error("in process, --reuse-boxes must be between 1 and --inproc-issue")
    return args


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, which a shell's background job may ignore) stop the run the same way
    # as Ctrl-C: the cloud is stopped and the PostgreSQL database dropped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and not args.postgres_url:
        if args.backend == "postgres":
            raise SystemExit("--postgres-url (or $LANLOCK_BENCH_POSTGRES_URL) is needed")
        say("no PostgreSQL URL: measuring SQLite only")
        backends.remove("postgres")
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k != "postgres_url"
        },
        "machine": machine(args.postgres_url if "postgres" in backends else None),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [],
    }
    if args.in_process:
        try:
            report["results"] = in_process(args)["results"]
        except KeyboardInterrupt:
            say("interrupted: the store was removed")
            return 130
        print(in_process_table(report))
        write_report(report, args.json)
        return 0
    if args.pin:
        pin_client()  # after the machine's record: it counts every core
    try:
        for backend in backends:
            say(f"[{backend}] starting")
            report["results"].append(bench_backend(backend, args))
    except KeyboardInterrupt:
        say("interrupted: the cloud and the store were stopped and removed")
        return 130
    print(table(report))
    write_report(report, args.json)
    return 0


def write_report(report: dict[str, Any], path: Path | None) -> None:
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")
        say(f"figures written to {path}")


if __name__ == "__main__":
    sys.exit(main())
