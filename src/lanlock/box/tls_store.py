"""The box's certificate files (docs/design.md §8): a folder per pair, a pointer, the previous
pair kept.

    tls/
      pairs/<name>/fullchain.pem   leaf + intermediates
      pairs/<name>/privkey.pem     mode 0600
      pairs/<name>/temporary       present for the self-signed start-up pair
      current                      the name of the pair in use (replaced atomically)
      previous                     the name of the pair before it, kept for rollback
      pending-key.pem              the TLS key of a request not yet answered (0600)

A pair's files are complete and fsynced before ``current`` names it, so a crash at any instant
leaves ``current`` naming a whole, matching pair.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import pki
from lanlock.fileio import fsync_dir, write_atomic
from lanlock.tls_profile import server_context

FULLCHAIN, PRIVKEY, TEMPORARY_MARK = "fullchain.pem", "privkey.pem", "temporary"


class CertificateUnreadable(OSError):
    """A certificate file exists but cannot be read (permissions, I/O): CERT_READ_EXCEPTION."""


class PairDamaged(ValueError):
    """The files can be read but are not a usable pair; the box treats this as no certificate."""


@dataclass(frozen=True)
class Pair:
    name: str
    folder: Path
    leaf: x509.Certificate
    chain: list[x509.Certificate]
    temporary: bool
    # The key as read with the certificate, checked to match it (never shown in a repr).
    key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    @property
    def cert_path(self) -> Path:
        return self.folder / FULLCHAIN

    @property
    def key_path(self) -> Path:
        return self.folder / PRIVKEY

    def ssl_context(self) -> ssl.SSLContext:
        """A complete server context for this pair, with the TLS profile (built before it is
        ever switched to)."""
        return server_context(self.cert_path, self.key_path)


class TLSStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pairs = folder / "pairs"

    # --- reading --------------------------------------------------------------------------

    def current(self) -> Pair | None:
        """The pair in use; None when there is none. Raises CertificateUnreadable or PairDamaged."""
        name = self._pointer("current")
        return None if name is None else self.read_pair(name)

    def read_pair(self, name: str) -> Pair:
        return self._read_folder(self.pairs / name)

    def _read_folder(self, folder: Path) -> Pair:
        name = folder.name
        try:
            chain_pem = (folder / FULLCHAIN).read_bytes()
            key_pem = (folder / PRIVKEY).read_bytes()
            temporary = (folder / TEMPORARY_MARK).exists()
        except FileNotFoundError as exc:
            raise PairDamaged(f"pair {name} lacks {Path(exc.filename).name}") from exc
        except OSError as exc:
            raise CertificateUnreadable(
                exc.errno, f"cannot read {exc.filename}: {exc.strerror}"
            ) from exc
        try:
            certificates = pki.certificates_from_pem(chain_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as exc:
            raise PairDamaged(f"pair {name} does not parse: {exc}") from exc
        if not certificates:
            raise PairDamaged(f"pair {name} holds no certificate")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PairDamaged(f"pair {name}: the key is not an EC key")
        if certificates[0].public_key() != key.public_key():
            raise PairDamaged(f"pair {name}: the certificate does not match the key")
        return Pair(name, folder, certificates[0], certificates[1:], temporary, key)

    def _pointer(self, which: str) -> str | None:
        path = self.folder / which
        try:
            name = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CertificateUnreadable(
                getattr(exc, "errno", None) or 5, f"cannot read {path}: {exc}"
            ) from exc
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise PairDamaged(f"{path} does not name a pair")
        return name

    # --- writing --------------------------------------------------------------------------

    def install(
        self, fullchain_pem: str, key: ec.EllipticCurvePrivateKey, temporary: bool = False
    ) -> Pair:
        """Write a new pair, then make it current atomically; keep the one before as previous."""
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)
        self._write_pair(self.pairs / name, fullchain_pem, key, temporary)
        pair = self.read_pair(name)  # what we wrote is what we will serve: check it first
        previous = self._safe_pointer("current")
        if previous:
            write_atomic(self.folder / "previous", previous.encode())
        write_atomic(self.folder / "current", name.encode())
        self._prune(keep={name, previous})
        return pair

    def fallback(self, make_certificate: Callable[[ec.EllipticCurvePrivateKey], str]) -> Pair:
        """A temporary pair beside the unreadable one, which stays current for check() to report."""
        key = pki.new_private_key()
        folder = self.folder / "fallback"
        shutil.rmtree(folder, ignore_errors=True)
        self._write_pair(folder, make_certificate(key), key, temporary=True)
        return self._read_folder(folder)

    def _write_pair(
        self, folder: Path, fullchain_pem: str, key: ec.EllipticCurvePrivateKey, temporary: bool
    ) -> None:
        folder.mkdir(parents=True)
        write_atomic(folder / PRIVKEY, pki.private_key_pem(key), mode=0o600)
        write_atomic(folder / FULLCHAIN, fullchain_pem.encode())
        if temporary:
            write_atomic(folder / TEMPORARY_MARK, b"self-signed start-up certificate\n")
        fsync_dir(folder.parent)

    def rollback(self) -> Pair | None:
        """Make the previous pair current again (when it is still whole)."""
        previous = self._safe_pointer("previous")
        if not previous:
            return None
        pair = self.read_pair(previous)
        write_atomic(self.folder / "current", previous.encode())
        return pair

    def wipe(self) -> None:
        """Forget every certificate and key (disconnect): the next start makes a temporary pair."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _safe_pointer(self, which: str) -> str | None:
        with contextlib.suppress(OSError, ValueError):
            return self._pointer(which)
        return None

    def _prune(self, keep: set[str | None]) -> None:
        for folder in self.pairs.iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    # --- the key of a request in flight ------------------------------------------------------

    def pending_key(self) -> ec.EllipticCurvePrivateKey:
        """The TLS key for the next request, kept until a certificate for it is installed.

        Asking again with the same key after a lost answer lets the cloud hand back the
        certificate it already issued (its reuse rule) instead of issuing another.
        """
        path = self.folder / "pending-key.pem"
        with contextlib.suppress(FileNotFoundError, ValueError):
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        key = pki.new_private_key()
        write_atomic(path, pki.private_key_pem(key), mode=0o600)
        return key

    def drop_pending_key(self) -> None:
        (self.folder / "pending-key.pem").unlink(missing_ok=True)
