"""Private keys sealed for storage: AES-256-GCM under one master key kept in a file.

The control plane seals each certificate's private key before it reaches the store, and
a balancer that serves control-plane certificates unseals it in memory; the store (and
its backups) only ever hold ciphertext. Each sealed value carries:

- the *key id* (a short hash of the master key), so a node holding another key says so,
  naming both ids, instead of failing with an opaque authentication error;
- a fresh 96-bit nonce (random: a few thousand uploads are nowhere near the limit);
- associated data binding it to its certificate name, so a ciphertext moved to another
  row fails to open rather than serving one name's key under another.

The key file holds 32 random bytes in base64 on one line, mode 0600. ``gtm up`` creates
``var/control/secret.key``; elsewhere ``--secret-key-file`` or ``$GTM_SECRET_KEY_FILE``
name it, and ``gtm certs keygen FILE`` makes one. Every node that seals or unseals needs
the same file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gtm import log
from gtm.errors import ConfigError, SealingError

KEY_BYTES = 32
NONCE_BYTES = 12
SECRET_KEY_FILE = "secret.key"
ENV_KEY_FILE = "GTM_SECRET_KEY_FILE"
_AAD = b"gtm certificate private key v1\0"
_ID_CONTEXT = b"gtm secret key id v1\0"


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str


class SecretKey:
    """A master key; its repr (and every error) shows the id and file, never the key."""

    __slots__ = ("_aead", "id", "path")

    def __init__(self, raw: bytes, path: Path | None = None):
        if len(raw) != KEY_BYTES:
            raise SealingError(f"a secret key is {KEY_BYTES} bytes, not {len(raw)}",
                               str(path or "secret key"))
        self._aead = AESGCM(raw)
        self.id = key_id(raw)
        self.path = path

    def __repr__(self) -> str:
        return f"<secret key {self.id} from {self.path or 'memory'}>"

    def seal(self, name: str, plaintext: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        return Sealed(self._aead.encrypt(nonce, plaintext, _aad(name)), nonce, self.id)

    def unseal(self, name: str, sealed: Sealed) -> bytes:
        if sealed.key_id != self.id:
            raise SealingError(
                f"sealed with secret key {sealed.key_id}, but this node holds key {self.id}"
                f"{f' ({self.path})' if self.path else ''}: give it the control plane's key "
                "file", f"certificate {name}")
        try:
            return self._aead.decrypt(sealed.nonce, sealed.ciphertext, _aad(name))
        except (InvalidTag, ValueError) as exc:
            raise SealingError("the sealed private key does not open: it was altered, or "
                               "sealed for another certificate name", f"certificate {name}"
                               ) from exc


def _aad(name: str) -> bytes:
    return _AAD + name.encode("utf-8")


def key_id(raw: bytes) -> str:
    """16 hex digits naming a key without revealing it (a hash of a random 256-bit key)."""
    return hashlib.sha256(_ID_CONTEXT + raw).hexdigest()[:16]


def key_file(explicit: Path | None, default: Path | None = None) -> Path | None:
    """The key file to use: given, else ``$GTM_SECRET_KEY_FILE``, else ``default``."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_KEY_FILE)
    return Path(from_env) if from_env else default


def read_base64_file(path: Path, size: int, what: str, hint: str,
                     error: type[ConfigError] = SealingError) -> bytes:
    """``size`` random bytes kept as base64 on one line (a secret key, ticket keys);
    ``error`` (naming the file) says what is wrong, with ``hint`` on how to make one."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise error(f"cannot read the {what}: {reason}", str(path)) from exc
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"must hold {size} random bytes in base64 ({hint})", str(path)) from exc
    if len(raw) != size:
        raise error(f"must hold {size} random bytes in base64, not {len(raw)} ({hint})",
                    str(path))
    return raw


def read_key(path: Path) -> SecretKey:
    raw = read_base64_file(path, KEY_BYTES, "secret key", "make one with `gtm certs keygen FILE`")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SealingError(f"cannot read the secret key: {exc.strerror}", str(path)) from exc
    if stat.S_IMODE(mode) & 0o077:
        log.control.warning("secret key %s is readable by others (mode %o): chmod 600 it",
                            path, stat.S_IMODE(mode))
    return SecretKey(raw, path)


def create_key(path: Path) -> SecretKey:
    """A new random key in a new file (0600 from the start); refuses to overwrite one."""
    raw = os.urandom(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SealingError("exists already: refusing to replace a secret key (values "
                           "sealed with it could never be opened again)", str(path)) from exc
    except OSError as exc:
        raise SealingError(f"cannot create: {exc.strerror}", str(path)) from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(raw).decode("ascii") + "\n")
    return SecretKey(raw, path)


def ensure_key(path: Path) -> tuple[SecretKey, bool]:
    """The key in ``path``, created first when there is none; True when it was created."""
    if not path.exists():
        try:
            return create_key(path), True
        except SealingError:
            if not path.exists():
                raise
            # Another process made it between our look and our create: use theirs.
    return read_key(path), False
