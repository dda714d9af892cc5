"""``config.toml`` has one writer at a time, across processes: nobody's change is lost.

``lanlock box credentials`` (a process of its own) and the running agent (which writes the
scope, the log level, pairing) both read, change and write the file. Here one process changes
the box's name one letter at a time as fast as it can, the way the agent writes, while
``lanlock box credentials`` runs again and again; each letter written must still be there at
the end, and so must the last credentials.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lanlock.box.settings import load_config
from tests.servers import lanlock_command

CREDENTIAL_RUNS = 12

AGENT_LIKE_WRITER = """
import sys, time
from pathlib import Path
from lanlock.box.settings import change_config

folder, stop = Path(sys.argv[1]), Path(sys.argv[2])
letters = 0
deadline = time.monotonic() + 120
while not stop.exists() and time.monotonic() < deadline:
    change_config(folder, lambda config: setattr(config, "name", config.name + "x"))
    letters += 1
print(letters)
"""


def test_the_agent_and_the_command_line_never_lose_each_others_writes(tmp_path: Path):
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", AGENT_LIKE_WRITER, str(tmp_path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for run in range(CREDENTIAL_RUNS):
            subprocess.run(
                lanlock_command(
                    "box", "credentials", "--data", str(tmp_path), "--db-uuid", f"db-{run}"
                ),
                check=True,
                capture_output=True,
                timeout=60,
            )
    finally:
        stop.touch()
        letters = int(writer.communicate(timeout=60)[0])
    config = load_config(tmp_path)
    assert letters > CREDENTIAL_RUNS  # the two really wrote at the same time
    lost = letters - len(config.name)
    assert lost == 0, f"{lost} of the writer's {letters} changes were lost"
    assert config.db_uuid == f"db-{CREDENTIAL_RUNS - 1}"
