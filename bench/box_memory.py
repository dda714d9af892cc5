"""The resident memory of an idle ``lanlock box run``, as a Raspberry-Pi-class box would hold it.

Starts the box on a fresh data folder (its device key, admin password and self-signed
certificate made at start), with a cloud URL nobody answers, so that it settles in its retry
wait with both listeners up; then reads VmRSS from /proc every second for ``--seconds`` and
prints the largest reading. Run it from the repository root with the project's venv:

    .venv/bin/python bench/box_memory.py [--seconds 10] [--python PATH]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="readings after settling")
    parser.add_argument("--python", default=sys.executable, help="the environment to run from")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        command = [
            args.python, "-m", "lanlock", "box", "run", "--data", data,
            "--http-port", str(free_port()), "--https-port", str(free_port()),
            "--address", "10.0.0.7", "--cloud", "http://127.0.0.1:1",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            time.sleep(5)  # start-up: key, password, self-signed pair, first (failing) check
            readings = []
            for _ in range(args.seconds):
                readings.append(rss_kib(process.pid))
                time.sleep(1)
        finally:
            process.terminate()
            process.wait(15)
    print(f"idle lanlock box run: max VmRSS {max(readings) / 1024:.1f} MiB over {len(readings)} s")


if __name__ == "__main__":
    main()
