"""The box's own settings file (``config.toml`` in its data folder), written atomically.

It holds what pairing and the admin give the box: the console, the credentials, the shared
token, the scope the cloud assigned, the log level. It holds secrets (the subscription code and
the token), so it is written with mode 0600.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from lanlock.fileio import write_atomic

CONFIG_FILE = "config.toml"
LOCK_FILE = "config.toml.lock"
STATE_FILE = "state.json"  # what the agent last saw: written by it, read by ``lanlock box status``


class BoxConfigError(RuntimeError):
    """The settings file exists but cannot be used; the message says what to do."""


@dataclass
class BoxConfig:
    name: str = ""
    console_url: str | None = None
    db_uuid: str | None = None
    enterprise_code: str | None = None
    token: str | None = None  # hex of the 32-byte secret shared with the console
    cloud_url: str | None = None
    cloud_ca: str | None = None
    scope: str | None = None
    zone: str | None = None
    # When the cloud said to renew the certificate of this serial (hex): lanlock.renewal. The
    # time as the cloud announced it too, so that the same announcement is not drawn again.
    renew_at: str | None = None
    renew_at_serial: str | None = None
    renew_announced: str | None = None
    password_hash: str | None = None
    log_level: str | None = None  # None: the default level
    log_level_until: float | None = None  # when a raised level falls back to the default
    form_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def has_credentials(self) -> bool:
        return bool(self.db_uuid and self.enterprise_code)

    def forget_console(self) -> None:
        """Disconnecting (or removal by the console) wipes the console, its cloud, the
        credentials and the token; the scope and zone stay (they are the box's name at the
        cloud, whoever pairs it next)."""
        self.console_url = self.db_uuid = self.enterprise_code = self.token = None
        self.cloud_url = None


def load_config(data_dir: Path) -> BoxConfig:
    path = data_dir / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return BoxConfig()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BoxConfigError(
            f"the box's settings {path} cannot be read ({exc}); restore the file, or delete it "
            "to start over (the box will then need to be paired again)"
        ) from exc
    known = {f.name for f in dataclasses.fields(BoxConfig)}
    return BoxConfig(**{k: v for k, v in raw.items() if k in known})


def change_config(data_dir: Path, change: Callable[[BoxConfig], None]) -> BoxConfig:
    """Read, change and write the settings as one step, whoever else writes them.

    The running agent and the ``lanlock box`` commands are different processes: an exclusive
    lock on ``config.toml.lock`` (a file of its own, since every write replaces
    ``config.toml``) makes each read-change-write whole, so that neither undoes the other's.
    """
    with _exclusive(data_dir / LOCK_FILE):
        config = load_config(data_dir)
        change(config)
        _save(data_dir, config)
        return config


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:  # elsewhere than POSIX the box runs alone on its folder
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _save(data_dir: Path, config: BoxConfig) -> None:
    # Only change_config() calls this, under the lock: a write outside it could undo another's.
    values: dict[str, Any] = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    write_atomic(data_dir / CONFIG_FILE, tomli_w.dumps(values).encode(), mode=0o600)
