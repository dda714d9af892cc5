"""``lanlock demo`` comes up, prints a command that works, and reuses its data when run again."""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.servers import free_port, lanlock_command


@contextlib.contextmanager
def running_demo(data: Path, port: int) -> Iterator[str]:
    process = subprocess.Popen(
        lanlock_command("demo", "--data", str(data), "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Uvicorn running" in line or process.poll() is not None:
                break
        assert process.poll() is None, "".join(lines)
        yield "".join(lines)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(15)


def printed_request_command(output: str) -> list[str]:
    line = next(x for x in output.splitlines() if " box request " in x)
    words = shlex.split(line.strip())
    assert words[0].endswith("lanlock")
    return [sys.executable, "-m", "lanlock", *words[1:]]


def test_demo_runs_the_cloud_and_its_printed_command_gets_a_certificate(tmp_path):
    port = free_port()
    with running_demo(tmp_path / "demo", port) as output:
        assert (tmp_path / "demo" / "root-ca.pem").read_text().startswith("-----BEGIN CERT")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["zone"] == "iot.localhost"
        result = subprocess.run(
            printed_request_command(output), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert ".iot.localhost" in result.stdout
    with running_demo(tmp_path / "demo", port) as second:
        assert printed_request_command(second) == printed_request_command(output)
