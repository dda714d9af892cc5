"""Real servers for tests: started as the real command line on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.realparts import POSTGRES_URL, require

ZONE = "iot.test"
SECRET_KEY = "test-secret-key-0123456789abcdef"  # the tests' clouds' LANLOCK_SECRET_KEY
METRICS_TOKEN = "test-metrics-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def fresh_store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty store on ``backend``: a SQLite file, or a new PostgreSQL database dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    require(bool(POSTGRES_URL), "LANLOCK_TEST_POSTGRES_URL is not set (no PostgreSQL server)")
    name = f"lanlock_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class RunningCloud:
    url: str
    store_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    zone: str = ZONE

    def root_pem(self) -> str:
        """The root certificate, as ``lanlock cloud ca root`` prints it."""
        return subprocess.run(
            lanlock_command(
                "cloud",
                "ca",
                "root",
                *("--store", self.store_url, "--zone", self.zone, "--data", str(self.data_dir)),
            ),
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "LANLOCK_SECRET_KEY": SECRET_KEY},
        ).stdout

    def metrics(self) -> str:
        """``/metrics`` as the operator reads it, with the bearer token."""
        answer = httpx.get(
            self.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        answer.raise_for_status()
        return answer.text

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, and SIGKILL if the process still runs ``grace`` seconds later."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def read_until(process: subprocess.Popen, marker: str, seconds: float) -> str:
    """What ``process`` wrote to its stdout pipe, up to and including ``marker``.

    A process that ends its output first, or is still short of ``marker`` after ``seconds``, is
    killed, and the error shows everything it wrote.
    """
    assert process.stdout is not None, "the process's stdout is not a pipe"
    fd, wanted, output = process.stdout.fileno(), marker.encode(), b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while wanted not in output:
            remaining = deadline - time.monotonic()
            chunk = os.read(fd, 65536) if remaining > 0 and selector.select(remaining) else None
            if not chunk:  # the deadline passed (None) or the pipe closed (b"")
                process.kill()
                rest, errors = process.communicate(timeout=10)
                raise AssertionError(
                    f"no {marker!r} from the process within {seconds:g} s; it wrote:\n"
                    f"{output.decode(errors='replace')}{_text(rest)}{_text(errors)}"
                )
            output += chunk
    return output.decode(errors="replace")


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def lanlock_command(*args: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "lanlock", *args]


class PortClash(RuntimeError):
    """The free port we picked was taken before the server bound it: pick another."""


def with_fresh_ports(start):  # type: ignore[no-untyped-def]
    """Retry a start whose randomly chosen port was taken meanwhile (tests run in parallel)."""

    def starter(*args, **kwargs):  # type: ignore[no-untyped-def]
        for _ in range(4):
            try:
                return start(*args, **kwargs)
            except PortClash:
                if kwargs.get("port"):
                    raise
        return start(*args, **kwargs)

    return starter


def exited_at_start(what: str, log: Path) -> RuntimeError:
    text = log.read_text(errors="replace")
    if "address already in use" in text.lower():
        return PortClash(text)
    return RuntimeError(f"{what} exited at start:\n{text}")


def wait_until_answering(
    what: str,
    process: subprocess.Popen[bytes],
    log: Path,
    url: str,
    verify: ssl.SSLContext | bool = True,
    any_status: bool = False,
    seconds: float = 60,
) -> None:
    """Poll ``url`` until it answers 200 (or anything at all, with ``any_status``).

    A process that exits first raises :func:`exited_at_start`'s error; one still silent after
    ``seconds`` is stopped, and the error shows its log.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise exited_at_start(what, log)
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(url, timeout=2, verify=verify)
            if any_status or answer.status_code == 200:
                return
        time.sleep(0.1)
    stop_process(process)
    text = log.read_text(errors="replace")
    raise RuntimeError(f"{what} did not answer within {seconds:g} s:\n{text}")


@with_fresh_ports
def start_cloud(
    store_url: str,
    data_dir: Path,
    *extra: str,
    port: int | None = None,
    tls: TLSFiles | None = None,
    env: dict[str, str] | None = None,
) -> RunningCloud:
    """``lanlock cloud serve`` on a free loopback port, waiting until ``/healthz`` answers.

    With ``tls`` it serves HTTPS, as ``https://localhost:<port>``, checked against ``tls.ca``.
    """
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"cloud-{port}.log"
    env = {
        **os.environ,
        "LANLOCK_SECRET_KEY": SECRET_KEY,
        "LANLOCK_CLOUD_METRICS_TOKEN": METRICS_TOKEN,
        **(env or {}),
    }
    url, verify = f"http://127.0.0.1:{port}", True
    if "--workers" not in extra:  # one process: its state is what a test sees (tests/cloud/
        extra = (*extra, "--workers", "1")  # test_workers.py runs several)
    if tls:
        extra = (*extra, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
        url, verify = f"https://localhost:{port}", ssl.create_default_context(cafile=str(tls.ca))
    process = subprocess.Popen(
        lanlock_command(
            "cloud",
            "serve",
            "--store",
            store_url,
            "--data",
            str(data_dir),
            "--port",
            str(port),
            "--zone",
            ZONE,
            *extra,
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_until_answering("the cloud", process, log, url + "/healthz", verify)
    return RunningCloud(url, store_url, data_dir, process, log)


@contextlib.contextmanager
def running_cloud(
    tmp_path: Path, *extra: str, backend: str = "sqlite", env: dict[str, str] | None = None
) -> Iterator[RunningCloud]:
    """A cloud on a fresh store of ``backend`` in ``tmp_path``, stopped (and its store dropped)
    after: for a module's ``cloud`` fixture."""
    with fresh_store_url(backend, tmp_path) as url:
        cloud = start_cloud(url, tmp_path / "data", *extra, env=env)
        try:
            yield cloud
        finally:
            cloud.stop()


@dataclass
class RunningBox:
    data_dir: Path
    http_port: int
    https_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def status(self) -> dict:
        return httpx.get(self.http_url + "/status.json", timeout=30).json()

    def state_file(self) -> dict:
        import json

        return json.loads((self.data_dir / "state.json").read_text())

    def wait_for(self, predicate, timeout: float = 30.0) -> dict:
        """Poll the state file until ``predicate(state)`` holds; return that state."""
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                state = self.state_file()
                if predicate(state):
                    return state
            time.sleep(0.1)
        raise AssertionError(f"state never matched; last: {state}\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.process)


@with_fresh_ports
def start_box(
    data_dir: Path, *extra: str, address: str = "10.0.0.7", python: str = sys.executable
) -> RunningBox:
    """``lanlock box run`` on free loopback ports, waiting until its HTTP listener answers;
    ``python`` is the interpreter of the environment it runs from."""
    http_port, https_port = free_port(), free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"box-{http_port}.out"
    process = subprocess.Popen(
        lanlock_command(
            "box",
            "run",
            "--data",
            str(data_dir),
            "--http-port",
            str(http_port),
            "--https-port",
            str(https_port),
            "--address",
            address,
            *extra,
            python=python,
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    box = RunningBox(data_dir, http_port, https_port, process, log)
    wait_until_answering("the box", process, log, box.http_url + "/status.json", any_status=True)
    return box


@dataclass
class TLSFiles:
    cert: Path
    key: Path
    ca: Path


def make_tls_files(folder: Path, host: str = "localhost") -> TLSFiles:
    """A server certificate for ``host`` from a throw-away CA of the test's own."""
    from lanlock import pki

    folder.mkdir(parents=True, exist_ok=True)
    ca = pki.CertificateAuthority.create(host, organization="test TLS")
    key = pki.new_private_key()
    leaf = ca.issue(key.public_key(), [host])
    files = TLSFiles(folder / "tls.pem", folder / "tls.key", folder / "tls-ca.pem")
    files.cert.write_text(pki.to_pem(leaf) + ca.chain_pem)
    files.key.write_bytes(pki.private_key_pem(key))
    files.ca.write_text(ca.root_pem)
    return files
