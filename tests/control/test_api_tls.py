"""The control plane API over HTTPS: served with a checked pair, TLS 1.2+ only, rotated
in place from its files, and reached by the CLI with a CA bundle."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gtm.control.plane import ControlSettings, start_control_plane
from gtm.errors import CertificateError
from tests.control.conftest import running
from tests.tls.pki import CA


def write_pair(directory: Path, ca: CA, days: float = 30) -> tuple[Path, Path, int]:
    chain, key, cert = ca.issue(["127.0.0.1", "localhost"], days=days)
    (directory / "api.crt").write_bytes(chain)
    (directory / "api.key").write_bytes(key)
    return directory / "api.crt", directory / "api.key", cert.serial_number


def handshake(url: str, cafile: Path, max_version: ssl.TLSVersion | None = None,
              ciphers: str | None = None) -> tuple[int, str | None, str | None]:
    """(serial served, TLS version, cipher) of one handshake with the API."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cafile))
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
        version, cipher = tls.version(), (tls.cipher() or ("",))[0]
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number), version, cipher


def served_serial(url: str, cafile: Path) -> int:
    return handshake(url, cafile)[0]


async def test_https_api_rotates_its_pair_and_refuses_old_clients(tmp_path: Path) -> None:
    ca = CA()
    cafile = ca.write(tmp_path / "ca.pem")
    cert, key, first = write_pair(tmp_path, ca)
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", tls_cert=cert,
                               tls_key=key)
    async with running(settings) as (plane, _api):
        assert plane.url.startswith("https://127.0.0.1:")
        assert await asyncio.to_thread(served_serial, plane.url, cafile) == first
        assert plane.tls is not None
        assert plane.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
        _, version, cipher = await asyncio.to_thread(
            handshake, plane.url, cafile, ssl.TLSVersion.TLSv1_2)
        assert version == "TLSv1.2" and cipher is not None and cipher.startswith("ECDHE-")
        with pytest.raises(ssl.SSLError):  # no forward secrecy: refused
            await asyncio.to_thread(handshake, plane.url, cafile, ssl.TLSVersion.TLSv1_2,
                                    "AES128-GCM-SHA256")

        _, _, second = write_pair(tmp_path, ca)
        assert plane.tls.rescan()
        assert await asyncio.to_thread(served_serial, plane.url, cafile) == second

        key.write_bytes(CA().issue(["127.0.0.1"])[1])  # a key of another certificate
        assert not plane.tls.rescan()                   # refused: the pair before serves
        assert await asyncio.to_thread(served_serial, plane.url, cafile) == second

        # The CLI reaches it with the CA bundle, and says why without one.
        token = plane.admin_token_path.read_text().strip()
        command = [sys.executable, "-m", "gtm.cli", "config", "history", "--api", plane.url,
                   "--token", token]
        good = await asyncio.to_thread(subprocess.run, [*command, "--ca", str(cafile)],
                                       capture_output=True, text=True, timeout=30)
        assert good.returncode == 0, good.stderr
        bad = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                      text=True, timeout=30)
        assert bad.returncode != 0 and "certificate verify failed" in bad.stderr


async def test_a_bad_pair_stops_the_start(tmp_path: Path) -> None:
    ca = CA()
    cert, key, _ = write_pair(tmp_path, ca, days=-1)  # expired
    with pytest.raises(CertificateError, match="expired"):
        await start_control_plane(ControlSettings(port=0, state_dir=tmp_path / "control",
                                                  tls_cert=cert, tls_key=key))
