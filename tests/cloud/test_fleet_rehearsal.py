"""The fleet rehearsal's checks, at the suite's size (bench/fleet.py --short).

A private PostgreSQL, two cloud replicas behind HAProxy, two DNS replicas and 80 boxes driven by
the box's own lifecycle code; one replica is killed with SIGKILL and started again, PostgreSQL is
restarted (fast) while the boxes ask. Only the correctness checks are asserted, never a timing:
every box ends with a certificate that verifies, no quota is exceeded, no scope is issued twice,
no nonce is accepted twice, the DNS replicas answer the boxes' names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import benchscripts
from tests.realparts import require


@pytest.mark.timeout(120)
def test_a_short_rehearsal_keeps_every_promise(tmp_path: Path) -> None:
    fleet = benchscripts.load("fleet")
    missing = fleet.missing_parts()
    require(not missing, "the fleet rehearsal needs " + "; ".join(missing))
    options = fleet.Options(**fleet.SHORT)

    report = fleet.rehearse(options, work=tmp_path)

    failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
    assert not failed, "\n".join(failed) + "\n" + "\n".join(report.get("logs", {}).values())
    events = [e["event"] for e in report["chaos"]]
    assert "cloud r0 killed (SIGKILL)" in events
    assert "PostgreSQL back" in events
    herd = report["herd"]
    assert herd["boxes"] == options.boxes + options.overbooked
    assert herd["answers_ok"] >= options.boxes + options.overbooked // 2
