"""``lanlock demo``: the four roles on loopback with embedded defaults, nothing to set up.

The cloud (embedded CA, SQLite) with a production database whose in-progress subscription has
3 IoT boxes; the DNS server for the zone on the cloud's store; the console set up with that
database; one box paired with the console. Each role runs as its own ``lanlock`` process, as it
would in production; the demo only wires them together, prints where everything is, and stops
them all on Ctrl-C. Running it again reuses its data folder (same CA, database, box).
The parts are wired by their flags alone: none of them inherits a ``LANLOCK_*`` variable, so the
settings of a real cloud or box in the same shell never reach the demo's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import dns.message
import dns.query
import httpx
from dns.exception import DNSException

from lanlock import defaults
from lanlock.config import zone_option
from lanlock.fileio import write_atomic

DEMO_BOXES = 3
BOX_ADDRESS = "127.0.0.1"  # *.localhost resolves to loopback in browsers and curl: no DNS set-up
START_TIMEOUT = 60.0


class DemoError(click.ClickException):
    """A part of the demo did not come up; the message names it and shows its last words."""


@dataclass
class Ports:
    cloud: int = defaults.CLOUD_PORT
    dns: int = defaults.DNS_PORT
    console: int = defaults.CONSOLE_PORT
    box_http: int = defaults.BOX_HTTP_PORT
    box_https: int = defaults.BOX_HTTPS_PORT


def parts_environment() -> dict[str, str]:
    """The demo's environment without lanlock's variables: the parts get only their flags."""
    return {name: value for name, value in os.environ.items() if not name.startswith("LANLOCK_")}


@dataclass
class Demo:
    data: Path
    zone: str
    ports: Ports
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def cloud_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.cloud}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.console}"

    # --- running the roles ---------------------------------------------------------------

    def lanlock(self, *args: str) -> str:
        """Run one ``lanlock`` command to completion; its standard output."""
        result = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "lanlock", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=parts_environment(),
        )
        if result.returncode != 0:
            raise DemoError(f"`lanlock {' '.join(args[:3])}` failed:\n{result.stderr.strip()}")
        return result.stdout

    def start(self, role: str, *args: str) -> None:
        log = self.data / "logs" / f"{role}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.processes[role] = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "lanlock", *args],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=parts_environment(),
        )

    def wait_until(self, role: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.processes[role].poll() is not None:
                raise DemoError(f"the {role} stopped at start:\n{self.tail(role)}")
            with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError, DNSException):
                if ready():
                    return
            time.sleep(0.2)
        raise DemoError(f"the {role} did not come up in {START_TIMEOUT:.0f} s:\n{self.tail(role)}")

    def tail(self, role: str) -> str:
        text = (self.data / "logs" / f"{role}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-15:])

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()

    # --- the steps -----------------------------------------------------------------------

    def seed(self) -> dict[str, str]:
        """Console and cloud share the demo database (made on the first run, read on the next)."""
        path = self.data / "demo.json"
        if path.exists():
            return json.loads(path.read_text())
        code = "DEMO-" + secrets.token_hex(8)
        console = json.loads(
            self.lanlock(
                "console",
                "settings",
                "--data",
                str(self.data / "console"),
                "--code",
                code,
                "--json",
            )
        )
        db_uuid = console["db_uuid"] or str(uuid.uuid4())
        cloud = ["--data", str(self.data / "cloud")]
        self.lanlock("cloud", "database", "add", db_uuid, "--name", "demo shop", *cloud)
        self.lanlock(
            "cloud",
            "subscription",
            "add",
            code,
            "--database",
            db_uuid,
            "--iot-boxes",
            str(DEMO_BOXES),
            *cloud,
        )
        seeded = {"db_uuid": db_uuid, "code": code}
        write_atomic(path, json.dumps(seeded, indent=2).encode(), mode=0o600)
        return seeded

    def start_servers(self) -> None:
        cloud_store = f"sqlite:///{(self.data / 'cloud' / 'cloud.db').resolve()}"
        self.start(
            "cloud",
            "cloud",
            "serve",
            "--data",
            str(self.data / "cloud"),
            "--zone",
            self.zone,
            "--port",
            str(self.ports.cloud),
        )
        self.wait_until("cloud", lambda: httpx.get(self.cloud_url + "/healthz").is_success)
        self.start(
            "dns",
            "dns",
            "serve",
            "--store",
            cloud_store,
            "--zone",
            self.zone,
            "--port",
            str(self.ports.dns),
            "--workers",
            "1",
        )
        self.wait_until("dns", lambda: self._dns_answers())
        self.start(
            "console",
            "console",
            "serve",
            "--data",
            str(self.data / "console"),
            "--port",
            str(self.ports.console),
        )
        self.wait_until("console", lambda: httpx.get(self.console_url + "/login").is_success)

    def _dns_answers(self) -> bool:
        query = dns.message.make_query(self.zone, "SOA")
        return bool(dns.query.udp(query, "127.0.0.1", port=self.ports.dns, timeout=0.5).answer)

    def start_box(self) -> dict[str, str]:
        box = self.data / "box"
        if not (box / "config.toml").exists() or "token" not in (box / "config.toml").read_text():
            link = json.loads(
                self.lanlock("console", "pair", "--data", str(self.data / "console"), "--json")
            )["link"]
            self.lanlock("box", "connect", link, "--data", str(box), "--address", BOX_ADDRESS)
        self.start(
            "box",
            "box",
            "run",
            "--data",
            str(box),
            "--cloud",
            self.cloud_url,
            "--address",
            BOX_ADDRESS,
            "--http-port",
            str(self.ports.box_http),
            "--https-port",
            str(self.ports.box_https),
        )
        state_file = box / "state.json"
        self.wait_until("box", lambda: json.loads(state_file.read_text())["state"] == "valid")
        return json.loads(state_file.read_text())

    def write_root(self) -> Path:
        root = self.lanlock("cloud", "ca", "root", "--data", str(self.data / "cloud"))
        path = self.data / "root-ca.pem"
        write_atomic(path, root.encode())
        return path.resolve()


def summary(demo: Demo, state: dict[str, str], root: Path, password: str) -> str:
    url = state["url"]
    return (
        f"lanlock demo — zone {demo.zone}, data in {demo.data}\n\n"
        f"  console        {demo.console_url}/  (password: {password})\n"
        f"  box by IP      http://{BOX_ADDRESS}:{demo.ports.box_http}/\n"
        f"  box by name    {url}   (valid until {state['not_after']})\n"
        f"  cloud          {demo.cloud_url}/healthz\n"
        f"  dns            127.0.0.1:{demo.ports.dns} (UDP and TCP)\n"
        f"  demo root CA   {root}\n\n"
        "Check the box's certificate with curl (it trusts only the demo root):\n"
        f"  curl --cacert {root} {url}status.json\n\n"
        "A browser trusts the box once the demo root CA is imported into it.\n"
        "Ctrl-C stops every part.\n"
    )


@contextlib.contextmanager
def stopping_on_signals(demo: Demo) -> Iterator[None]:
    """Ctrl-C (and SIGTERM) end the wait below; the parts are stopped either way.

    SIGINT is handled here too, not left to Python's default: a process started with SIGINT
    ignored (by a parent that ignores it, as a test runner's worker may) keeps it ignored, and
    such a demo would never stop on Ctrl-C.
    """

    def interrupt(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        click.echo("\nstopping …")
    finally:
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


PORT = click.IntRange(1, 65535)


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(defaults.DEMO_DATA),
    show_default=True,
    help="the demo's data folder (reused when run again)",
)
@zone_option(default=defaults.ZONE, show_default=True)
@click.option(
    "--cloud-port", type=PORT, default=Ports.cloud, show_default=True, help="port of the cloud"
)
@click.option(
    "--dns-port",
    type=PORT,
    default=Ports.dns,
    show_default=True,
    help="port of the DNS server (UDP and TCP)",
)
@click.option(
    "--console-port",
    type=PORT,
    default=Ports.console,
    show_default=True,
    help="port of the console",
)
@click.option(
    "--box-http-port",
    type=PORT,
    default=Ports.box_http,
    show_default=True,
    help="port of the box's homepage over HTTP",
)
@click.option(
    "--box-https-port",
    type=PORT,
    default=Ports.box_https,
    show_default=True,
    help="port of the box's homepage over HTTPS",
)
def demo(
    data: Path,
    zone: str,
    cloud_port: int,
    dns_port: int,
    console_port: int,
    box_http_port: int,
    box_https_port: int,
) -> None:
    """Run the cloud, the DNS server, the console and one box on loopback; Ctrl-C stops them."""
    data.mkdir(parents=True, exist_ok=True)
    running = Demo(
        data, zone, Ports(cloud_port, dns_port, console_port, box_http_port, box_https_port)
    )
    with stopping_on_signals(running):
        running.seed()
        running.start_servers()
        state = running.start_box()
        root = running.write_root()
        password = (
            running.lanlock("console", "password", "--data", str(data / "console"))
            .strip()
            .splitlines()[0]
        )
        click.echo(summary(running, state, root, password))
        while all(p.poll() is None for p in running.processes.values()):
            time.sleep(0.5)
        stopped = [role for role, p in running.processes.items() if p.poll() is not None]
        raise DemoError(f"the {', '.join(stopped)} stopped:\n{running.tail(stopped[0])}")
