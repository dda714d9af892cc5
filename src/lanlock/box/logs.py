"""The box's log: a rotating file in its data folder, a level that falls back after 24 hours.

The log goes to the console (a signed "Download logs" link) and to the admin (with the
password), never to the public homepage; still, no secret is written to it. Every record that
reaches the file passes :class:`Redactor` first, which masks pairing links, the query of signed
links, bearer tokens, and the box's own secrets (its subscription code, its console token, its
admin password) wherever they appear, at any level. Third-party libraries (httpx, httpcore, …)
log at WARNING unless the box's level is DEBUG: at INFO, httpx writes every URL it requests.

Under a systemd unit the same lines, redacted alike, also go to the journal (standard error,
without a time of their own: the journal stamps each line), so that ``journalctl -u lanlock-box``
shows them; elsewhere standard error is left to uvicorn's few warnings, as before.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import time
from collections.abc import Iterable
from pathlib import Path

from lanlock import journal
from lanlock.box.settings import BoxConfig

LOG_FILE = "lanlock-box.log"
DEFAULT_LEVEL = "INFO"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
RAISED_LEVEL_SECONDS = 24 * 3600
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
JOURNAL_HANDLER = "lanlock-box-journal"
MASK = "[redacted]"
SHORTEST_SECRET = 8  # shorter known values would mask ordinary words; real secrets are longer

_SECRET_SHAPES = (
    # A pairing link's last part is the one-time code that pairs a box.
    (re.compile(r"(/iot/pair/)[^\s\"'<>]+"), rf"\g<1>{MASK}"),
    # The query of a signed link (its signature and expiry) or of any URL carrying a secret.
    (
        re.compile(r"\?[^\s\"'<>#]*?\b(?:signature|token|expires|code|password)=[^\s\"'<>#]*"),
        f"?{MASK}",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+"), rf"\g<1>{MASK}"),
)


class Redactor(logging.Filter):
    """Masks secrets in a record's message and traceback; lets every record through."""

    def __init__(self) -> None:
        super().__init__()
        self.known: tuple[str, ...] = ()
        self._formatter = logging.Formatter()

    def remember(self, values: Iterable[str | None]) -> None:
        """The box's own secrets, masked wherever they appear (replacing the ones before)."""
        self.known = tuple(v for v in values if v and len(v) >= SHORTEST_SECRET)

    def redact(self, text: str) -> str:
        for shape, replacement in _SECRET_SHAPES:
            text = shape.sub(replacement, text)
        for secret in self.known:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format is the handler's to report, not ours
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


REDACTOR = Redactor()


def setup(data_dir: Path) -> Path:
    """Send the root logger to ``logs/lanlock-box.log`` (5 files of 1 MiB), and to the journal
    when standard error is the journal; return the file's path. Called at every (re)start of
    the agent in one process, so each handler is added once."""
    path = data_dir / "logs" / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=1024 * 1024, backupCount=4, encoding="utf-8"
        )
        _add_redacted(root, handler, FORMAT)
    if journal.stderr_is_journal() and not any(h.name == JOURNAL_HANDLER for h in root.handlers):
        to_journal = logging.StreamHandler()  # standard error, as systemd connected it
        to_journal.set_name(JOURNAL_HANDLER)
        _add_redacted(root, to_journal, JOURNAL_FORMAT)
    return path


def _add_redacted(root: logging.Logger, handler: logging.Handler, fmt: str) -> None:
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(REDACTOR)  # on each handler: no line leaves unredacted, wherever it goes
    root.addHandler(handler)


def remember_secrets(config: BoxConfig, password: str | None) -> None:
    """What the redaction masks besides the shapes of secrets: this box's own ones."""
    REDACTOR.remember((config.enterprise_code, config.token, password))


def apply_level(config: BoxConfig) -> None:
    """The configured level on the ``lanlock`` loggers (the default once expired); the root
    logger, which every third-party logger falls back to, at WARNING unless that is DEBUG."""
    level = DEFAULT_LEVEL if level_expired(config) else (config.log_level or DEFAULT_LEVEL)
    logging.getLogger("lanlock").setLevel(level)
    third_party = max(logging.WARNING, logging.getLevelName(level))
    logging.getLogger().setLevel(logging.DEBUG if level == "DEBUG" else third_party)


def level_expired(config: BoxConfig, now: float | None = None) -> bool:
    if not config.log_level or config.log_level_until is None:
        return False
    return (time.time() if now is None else now) >= config.log_level_until
