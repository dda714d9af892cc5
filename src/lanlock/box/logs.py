"""The box's log: a rotating file in its data folder, a level that falls back after 24 hours."""

from __future__ import annotations

import logging
import logging.handlers
import time
from collections import deque
from pathlib import Path

from lanlock.box.settings import BoxConfig

LOG_FILE = "lanlock-box.log"
DEFAULT_LEVEL = "INFO"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
RAISED_LEVEL_SECONDS = 24 * 3600
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(data_dir: Path) -> Path:
    """Send the root logger to ``logs/lanlock-box.log`` (5 files of 1 MiB); return its path."""
    path = data_dir / "logs" / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1024 * 1024, backupCount=4, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    return path


def apply_level(config: BoxConfig) -> None:
    """The configured level on the root and ``lanlock`` loggers (the default once expired)."""
    level = DEFAULT_LEVEL if level_expired(config) else (config.log_level or DEFAULT_LEVEL)
    for name in ("", "lanlock"):
        logging.getLogger(name).setLevel(level)


def level_expired(config: BoxConfig, now: float | None = None) -> bool:
    if not config.log_level or config.log_level_until is None:
        return False
    return (time.time() if now is None else now) >= config.log_level_until


def tail(path: Path, lines: int = 200) -> list[str]:
    """The last ``lines`` lines of the log, for the homepage; [] when there is no log yet."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []
