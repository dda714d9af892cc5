"""The cloud's secret key: what encrypts the CA's private keys (and the ACME account key) at rest.

Every replica of one store needs the same key: give them ``LANLOCK_SECRET_KEY``, or the same file.
A single cloud makes the file itself at first start, readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from lanlock.config import SECRET_KEY_VARIABLE

MIN_SECRET_CHARS = 16


class SecretKeyError(RuntimeError):
    """The secret key cannot be had; the message says where it was looked for and what to do."""


def load_or_create_secret(path: Path, environ: dict[str, str] | None = None) -> bytes:
    environ = dict(os.environ) if environ is None else environ
    if value := environ.get(SECRET_KEY_VARIABLE, "").strip():
        if len(value) < MIN_SECRET_CHARS:
            raise SecretKeyError(
                f"{SECRET_KEY_VARIABLE} must be at least {MIN_SECRET_CHARS} characters"
            )
        return value.encode()
    try:
        return _read_secret_file(path)
    except FileNotFoundError:
        return _create_secret_file(path)


def _read_secret_file(path: Path) -> bytes:
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from exc
    if len(value) < MIN_SECRET_CHARS:
        raise SecretKeyError(
            f"the secret key file {path} is shorter than {MIN_SECRET_CHARS} characters; "
            "restore it from backup (the CA keys in the store need it)"
        )
    return value


def _create_secret_file(path: Path) -> bytes:
    value = secrets.token_urlsafe(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    # O_EXCL and 0600 from the start: the key is never readable by others, not even for an instant.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(value + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process made the file first: then use theirs
        except FileExistsError:
            return _read_secret_file(path)
    finally:
        tmp.unlink(missing_ok=True)
    return value
