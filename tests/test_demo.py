"""``lanlock demo`` brings up all four roles, and the curl line it prints succeeds (issue 5)."""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.realparts import require
from tests.servers import free_port, lanlock_command, read_until


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def running_demo(data: Path, ports: list[int]) -> Iterator[str]:
    names = ["--cloud-port", "--dns-port", "--console-port", "--box-http-port", "--box-https-port"]
    args = [x for pair in zip(names, map(str, ports), strict=True) for x in pair]
    process = subprocess.Popen(
        lanlock_command("demo", "--data", str(data), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Started with SIGINT ignored, as a worker of a test runner may start it: Ctrl-C must
        # stop the demo all the same (it once hung here, one run in ten).
        preexec_fn=_ignore_sigint,
    )
    try:
        output = read_until(process, "Ctrl-C stops every part", seconds=120)
        assert process.poll() is None, output
        yield output
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    assert "stopping" in process.stdout.read()


def test_demo_comes_up_and_its_curl_line_verifies(tmp_path):
    curl = shutil.which("curl")
    require(curl is not None, "curl is not installed")
    ports = [free_port() for _ in range(5)]
    with running_demo(tmp_path / "demo", ports) as output:
        line = next(x for x in output.splitlines() if x.strip().startswith("curl "))
        result = subprocess.run(
            shlex.split(line.strip()), capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        assert '"state":"valid"' in result.stdout
        url = re.search(r"box by name\s+(\S+)", output).group(1)
        assert re.fullmatch(r"https://127-0-0-1\.[a-z2-7]{16}\.iot\.localhost:\d+/", url)
        assert re.search(r"console\s+http://127\.0\.0\.1:\d+/\s+\(password: \S+\)", output)
    with running_demo(tmp_path / "demo", ports) as again:  # the same data: the same box and URL
        assert re.search(r"box by name\s+(\S+)", again).group(1) == url
