"""Under systemd, log lines on standard error leave the time to the journal (issue 11).

Each role's logging set-up runs in a fresh interpreter whose standard error is a file, once as
in a terminal, once with ``JOURNAL_STREAM`` naming that very file (as systemd names the journal
stream it connects), and once with ``JOURNAL_STREAM`` inherited from a parent whose standard
error was something else. Only the second may drop the timestamp.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "

DNS_LOGS = """
import logging
from lanlock.dns.worker import configure_logging
configure_logging()
logging.getLogger("lanlock.dns.server").info("authoritative for iot.test")
"""

BOX_LOGS = """
import logging, sys
from pathlib import Path
from lanlock.box import logs
logs.setup(Path(sys.argv[1]))
logs.setup(Path(sys.argv[1]))  # a restart from the homepage sets the log up again
logging.getLogger("lanlock.box.agent").warning("paired through /iot/pair/one-time-code")
"""


def run_logging(tmp_path: Path, script: str, journal: str, *args: str) -> str:
    """What ``script`` wrote to its standard error; ``journal`` is "no", "this" or "inherited"."""
    stderr = tmp_path / f"stderr-{journal}.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with stderr.open("wb") as sink:
        seen = os.fstat(sink.fileno())
        if journal == "this":
            env["JOURNAL_STREAM"] = f"{seen.st_dev}:{seen.st_ino}"
        elif journal == "inherited":
            env["JOURNAL_STREAM"] = f"{seen.st_dev}:{seen.st_ino + 1}"
        subprocess.run(
            [sys.executable, "-c", script, *args], stderr=sink, env=env, timeout=60, check=True
        )
    return stderr.read_text()


@pytest.mark.parametrize(
    ("journal", "stamped"), [("no", True), ("this", False), ("inherited", True)]
)
def test_the_dns_leaves_the_time_to_the_journal_only_when_it_writes_to_it(
    tmp_path, journal, stamped
):
    line = run_logging(tmp_path, DNS_LOGS, journal).strip()
    shape = r"lanlock-dns\[\d+\] INFO authoritative for iot\.test"
    assert re.fullmatch((TIMESTAMP if stamped else "") + shape, line), line


def test_the_box_logs_only_to_its_file_outside_the_journal(tmp_path):
    assert run_logging(tmp_path, BOX_LOGS, "no", str(tmp_path / "box")) == ""
    assert run_logging(tmp_path, BOX_LOGS, "inherited", str(tmp_path / "box")) == ""


def test_the_box_logs_to_the_journal_redacted_and_without_time_and_keeps_its_file(tmp_path):
    stderr = run_logging(tmp_path, BOX_LOGS, "this", str(tmp_path / "box"))
    # Once, though set up twice; masked as in the file.
    assert stderr == "WARNING lanlock.box.agent: paired through /iot/pair/[redacted]\n"
    file_lines = (tmp_path / "box" / "logs" / "lanlock-box.log").read_text().splitlines()
    assert len(file_lines) == 1
    assert re.fullmatch(
        TIMESTAMP + r"WARNING lanlock\.box\.agent: paired through /iot/pair/\[redacted\]",
        file_lines[0],
    ), file_lines
