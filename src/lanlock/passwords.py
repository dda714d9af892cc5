"""Admin passwords (the box's and the console's): made at first start, kept as an scrypt hash,
compared in constant time.

The hash is stored as ``scrypt$N$r$p$salt$hash`` (salt and hash in unpadded URL-safe base64): the
box keeps it in its config.toml, the console in its store. The password itself is also kept,
readable by the owner only, in ``admin-password`` in the data folder, so that ``lanlock box
password`` (or ``lanlock console password``) can show it to whoever is at the machine (and so has
the files anyway); the web servers only ever compare against the hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from lanlock.fileio import write_atomic

PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def new_password() -> str:
    # 4 groups of 4 from an alphabet without look-alikes: easy to read aloud and to type.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str | None) -> bool:
    """Constant-time comparison against an scrypt hash; False for anything malformed."""
    if not stored or not password:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate, _unb64(digest))


def write_password_file(data_dir: Path, password: str) -> None:
    """Kept readable by the owner only, so that a ``… password`` command can show it again."""
    write_atomic(data_dir / PASSWORD_FILE, (password + "\n").encode(), mode=0o600)


def read_password_file(data_dir: Path) -> str | None:
    try:
        return (data_dir / PASSWORD_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
