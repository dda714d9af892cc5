"""Whether standard error goes to the systemd journal, so that log lines leave the time to it.

Under a systemd unit (deploy/systemd/), a service's standard error is a stream to the journal,
which stamps every line with its own time, unit and PID: a line carrying its own timestamp would
show two. systemd names that stream in ``JOURNAL_STREAM`` as ``<device>:<inode>``. Every child
process inherits the variable whatever its standard error became (the demo's parts write to
files), so the variable alone is not enough: standard error itself must be that stream.
"""

from __future__ import annotations

import os

STREAM_VARIABLE = "JOURNAL_STREAM"
STDERR = 2


def stderr_is_journal() -> bool:
    """True when this process's standard error is the journal stream systemd gave it."""
    stream = os.environ.get(STREAM_VARIABLE)
    if not stream:
        return False
    try:
        seen = os.fstat(STDERR)
    except OSError:  # no standard error at all
        return False
    return stream == f"{seen.st_dev}:{seen.st_ino}"


def time_prefix() -> str:
    """The start of a stderr log format: the time, unless the journal adds its own."""
    return "" if stderr_is_journal() else "%(asctime)s "
