"""Session ticket keys shared by a balancer's workers, and by balancers given one key file.

OpenSSL makes random ticket keys for each SSL context, so a client resuming on another
worker (SO_REUSEPORT spreads connections), on another balancer of the region, or after a
listener's TLS settings changed gets a full handshake instead. The standard library has
no call to set the keys; OpenSSL has (``SSL_CTX_set_tlsext_ticket_keys``, a ctrl), reached
here through ctypes. Reaching it needs the ``SSL_CTX *`` inside the stdlib's context: on
the CPython versions whose layout is known it is read there and then checked (OpenSSL's
options for it must be the stdlib's); anything unexpected leaves OpenSSL's own keys.

Keys are 80 bytes (16 name, 32 HMAC, 32 AES). Without a file each balancer makes its own
(`gtm lb serve` before it forks its workers, so they share them; balancers started in
one process, as by `gtm up`, each have theirs); with ``[lb.tls] ticket_key_file`` (base64
of 80 random bytes: ``head -c 80 /dev/urandom | base64 -w0``) every balancer holding the
file resumes the others' clients. Rotate by replacing the file and reloading: tickets
made under the old keys then get a full handshake. The keys a balancer uses are its own
(regional_lb.tls.listener.TlsRegistry); this module keeps only what is true of the
whole process: where OpenSSL's call is, or why it cannot be reached.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
from pathlib import Path

from gtm import log
from gtm.errors import CertificateError
from gtm.sealing import read_base64_file

KEY_BYTES = 80
_SET_TICKET_KEYS = 59           # SSL_CTRL_SET_TLSEXT_TICKET_KEYS
_KNOWN_LAYOUT = {(3, 11), (3, 12), (3, 13)}  # PySSLContext starts with its SSL_CTX *

_openssl: ctypes.CDLL | None = None
_unavailable = ""               # why keys cannot be set here (said once)


def new_keys() -> bytes:
    """Keys for one balancer without a key file (made before it forks its workers)."""
    return os.urandom(KEY_BYTES)


def read_key_file(path: Path) -> bytes:
    return read_base64_file(path, KEY_BYTES, "ticket key file",
                            "head -c 80 /dev/urandom | base64 -w0", CertificateError)


def apply(ctx: ssl.SSLContext, keys: bytes) -> bool:
    """Give ``ctx`` these keys; False (said once in the log) when it cannot be done."""
    pointer = _context_pointer(ctx)
    if pointer is None:
        return False
    assert _openssl is not None
    buffer = ctypes.create_string_buffer(keys, len(keys))
    return bool(_openssl.SSL_CTX_ctrl(pointer, _SET_TICKET_KEYS, len(keys), buffer) == 1)


def _context_pointer(ctx: ssl.SSLContext) -> int | None:
    global _unavailable
    if _unavailable:
        return None
    library = _library()
    if library is None:
        return None
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or library.SSL_CTX_get_options(pointer) != int(ctx.options):
        _unavailable = "the ssl module's context does not have the expected layout"
        log.tls.warning("session ticket keys stay per context: %s", _unavailable)
        return None
    return int(pointer)


def _library() -> ctypes.CDLL | None:
    global _openssl, _unavailable
    if _openssl is not None:
        return _openssl
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in _KNOWN_LAYOUT:
        _unavailable = f"not a CPython whose ssl layout is known ({sys.version.split()[0]})"
    else:
        try:
            import _ssl

            library = ctypes.CDLL(_ssl.__file__)  # its libssl, whatever it was linked to
            library.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                                             ctypes.c_void_p]
            library.SSL_CTX_ctrl.restype = ctypes.c_long
            library.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
            library.SSL_CTX_get_options.restype = ctypes.c_uint64
            _openssl = library
            return library
        except (OSError, AttributeError) as exc:
            _unavailable = f"OpenSSL's ticket key call is not reachable: {exc}"
    log.tls.warning("session ticket keys stay per context: %s", _unavailable)
    return None
