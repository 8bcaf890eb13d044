"""/v1/certificates on a real control plane (both stores): checks, sealing, audit, roles,
and that no key material is ever in a response, the audit log, the logs or the store."""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization

from gtm.cli import main as gtm_main
from gtm.control.plane import ControlPlane, ControlSettings
from gtm.sealing import read_key
from tests.control.conftest import POSTGRES_URL, running
from tests.tls.pki import CA, new_key


def pair(ca: CA, names: list[str], **issue: Any) -> dict[str, str]:
    chain, key, _ = ca.issue(names, **issue)
    return {"chain": chain.decode(), "key": key.decode()}


def key_body(key: str) -> str:
    """A line from the middle of a PEM key: what would show if any of it leaked."""
    return key.splitlines()[1]


async def raw_rows(plane: ControlPlane) -> list[tuple[Any, ...]]:
    """Every certificate row as the database holds it, every column."""
    settings = plane.settings
    if settings.store_url is None:
        with sqlite3.connect(settings.state_dir / "gtm.db") as conn:
            return conn.execute("SELECT * FROM certificates").fetchall()
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(f'SELECT * FROM "{settings.namespace}".certificates')
        return [tuple(row.values()) for row in rows]
    finally:
        await conn.close()


async def test_upload_list_replace_delete_and_audit(
        settings: ControlSettings, caplog: pytest.LogCaptureFixture) -> None:
    ca = CA()
    first, second = pair(ca, ["www.example.com", "example.com"]), pair(ca, ["www.example.com"])
    caplog.set_level(logging.DEBUG)
    async with running(settings) as (plane, api):
        status, body, _ = await api.call("PUT", "/v1/certificates/www", first)
        assert status == 201, body
        assert body["names"] == ["www.example.com", "example.com"] and not body["replaced"]
        assert body["revision"] == 1 and body["key_type"] == "EC P-256"
        assert body["issuer"] == "CN=gtm test CA" and body["key_id"] == read_key(
            settings.resolved_key_file()).id
        status, body, _ = await api.call("PUT", "/v1/certificates/www", second)
        assert (status, body["replaced"], body["revision"]) == (200, True, 2)
        status, listing, _ = await api.call("GET", "/v1/certificates")
        assert [item["name"] for item in listing["items"]] == ["www"]
        status, one, _ = await api.call("GET", "/v1/certificates/www")
        assert status == 200 and one["names"] == ["www.example.com"]
        status, body, _ = await api.call("DELETE", "/v1/certificates/www")
        assert (status, body["deleted"], body["revision"]) == (200, True, 3)
        status, body, _ = await api.call("DELETE", "/v1/certificates/www")
        assert status == 404
        status, body, _ = await api.call("GET", "/v1/certificates/www")
        assert status == 404
        status, audit, _ = await api.call("GET", "/v1/audit?limit=100")
        entries = [e for e in audit["items"] if e["action"].startswith("certificate.")]
        assert [(e["action"], e["outcome"]) for e in entries] == [
            ("certificate.delete", "ok"), ("certificate.put", "ok"), ("certificate.put", "ok")]
        assert entries[1]["detail"]["replaced"] and entries[1]["detail"]["revision"] == 2
        assert entries[2]["detail"]["names"] == ["www.example.com", "example.com"]
        assert len(entries[2]["detail"]["fingerprint_sha256"]) == 64
        assert entries[2]["detail"]["not_after"].startswith("20")
        rows = await raw_rows(plane)
        seen = " ".join(map(str, [listing, one, audit, caplog.text, rows]))
        for key in (first["key"], second["key"]):
            assert key_body(key) not in seen
            der = serialization.load_pem_private_key(key.encode(), None).private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())
            columns = [v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r]
            for start in range(0, len(der) - 12, 12):  # no 12-byte run of it, anywhere
                assert not any(der[start:start + 12] in value for value in columns)
        assert "PRIVATE KEY" not in seen


async def test_bad_uploads_name_the_field_and_store_nothing(settings: ControlSettings) -> None:
    ca = CA()
    good = pair(ca, ["www.example.com"])
    other = pair(ca, ["other.example.com"])
    expired = pair(ca, ["old.example.com"], days=-1, start_days=-30)
    encrypted = new_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")).decode()
    cases: list[tuple[str, Any, str, str]] = [
        ("www", {"chain": good["chain"], "key": other["key"]}, "key", "does not belong"),
        ("old", expired, "chain", "expired on"),
        ("www", {"chain": "not a certificate", "key": good["key"]}, "chain", "no PEM certificate"),
        ("www", {"chain": good["chain"], "key": "-----BEGIN PRIVATE KEY-----\nxx\n"
                 "-----END PRIVATE KEY-----\n"}, "key", "cannot be parsed"),
        ("www", {"chain": good["chain"], "key": "nothing"}, "key", "no PEM private key"),
        ("www", {"chain": good["chain"], "key": encrypted}, "key", "encrypted"),
        ("www", {"chain": good["chain"] + good["key"], "key": good["key"]}, "chain",
         "holds a private key"),
        ("www", {"chain": "é" + good["chain"], "key": good["key"]}, "chain", "not PEM"),
        ("www", {"key": good["key"]}, "chain", "is required"),
        ("www", {"chain": good["chain"], "key": 5}, "key", "must be of type str"),
        ("bad%20name", good, "name", "certificate name"),
        ("-dash", good, "name", "certificate name"),
        ("x" * 101, good, "name", "certificate name"),
    ]
    async with running(settings) as (plane, api):
        for name, body, where, reason in cases:
            status, reply, _ = await api.call("PUT", f"/v1/certificates/{name}", body)
            assert (status, reply["error"]["field"]) == (400, where), (name, where, reply)
            assert reason in reply["error"]["message"], reply
            assert key_body(good["key"]) not in str(reply)
        status, reply, _ = await api.call("PUT", "/v1/certificates/www", "[]")
        assert status == 400
        assert await plane.store.certificates(0) == []
        status, audit, _ = await api.call("GET", "/v1/audit?limit=100")
        refused = [e for e in audit["items"] if e["action"] == "certificate.put"]
        assert refused and all(e["outcome"] == "invalid" for e in refused)
        assert {e["detail"]["field"] for e in refused} >= {"key", "chain", "name"}
        assert key_body(good["key"]) not in str(audit)


async def test_roles_and_unavailable_store(settings: ControlSettings) -> None:
    body = pair(CA(), ["www.example.com"])
    async with running(settings) as (plane, api):
        tokens = {}
        for role in ("viewer", "editor"):
            _, created, _ = await api.call("POST", "/v1/tokens", {"name": role, "role": role})
            tokens[role] = created["token"]
        for role, token in tokens.items():
            status, reply, _ = await api.call("PUT", "/v1/certificates/www", body, token=token)
            assert (status, reply["error"]["field"]) == (403, "Authorization"), role
            status, _, _ = await api.call("DELETE", "/v1/certificates/www", token=token)
            assert status == 403
        status, reply, _ = await api.call("GET", "/v1/certificates", token=tokens["viewer"])
        assert status == 200 and reply["items"] == []
        status, _, _ = await api.call("PUT", "/v1/certificates/www", body, token=None)
        assert status == 401
        await plane.store.close()
        if settings.store_url is not None:  # PostgreSQL reconnects by itself: point it away
            plane.store.url = "postgresql://postgres@127.0.0.1:9/test"  # type: ignore[attr-defined]
        status, reply, headers = await api.call("PUT", "/v1/certificates/www", body)
        assert status == 503 and headers["Retry-After"] == "5", reply


async def test_no_secret_key_refuses_uploads_with_503(tmp_path: Path) -> None:
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", create_secret_key=False)
    body = pair(CA(), ["www.example.com"])
    async with running(settings) as (plane, api):
        status, reply, _ = await api.call("PUT", "/v1/certificates/www", body)
        assert status == 503 and reply["error"]["field"] == "secret_key"
        assert "gtm certs keygen" in reply["error"]["message"]
        assert not (settings.state_dir / "secret.key").exists()
        assert await plane.store.certificates(0) == []


async def test_swapped_rows_do_not_open(tmp_path: Path) -> None:
    """Two rows' sealed keys exchanged in the database: neither opens under the other name."""
    settings = ControlSettings(port=0, state_dir=tmp_path / "control")
    ca = CA()
    async with running(settings) as (plane, api):
        for name in ("a", "b"):
            assert (await api.call("PUT", f"/v1/certificates/{name}",
                                   pair(ca, [f"{name}.example.com"])))[0] == 201
        rows = {r.name: r for r in await plane.store.certificates(0)}
        key = read_key(settings.resolved_key_file())
        from gtm.errors import SealingError
        from gtm.sealing import Sealed

        moved = Sealed(rows["a"].sealed_key, rows["a"].key_nonce, rows["a"].key_id)
        assert b"PRIVATE KEY" in key.unseal("a", moved)
        with pytest.raises(SealingError, match="certificate b"):
            key.unseal("b", moved)
        der = serialization.load_pem_private_key(key.unseal("a", moved), None).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        stored = (settings.state_dir / "gtm.db").read_bytes()
        for chunk in (der, der[-32:], base64.b64encode(der)[:48]):
            assert chunk not in stored


async def test_cli_upload_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    settings = ControlSettings(port=0, state_dir=tmp_path / "control")
    ca = CA()
    chain, key, _ = ca.issue(["www.example.com"])
    (tmp_path / "www.crt").write_bytes(chain)
    (tmp_path / "www.key").write_bytes(key)
    async with running(settings) as (plane, api):
        common = ["--api", plane.url, "--token", api.token or ""]

        def gtm(*args: str) -> int:
            return gtm_main(list(args))

        upload = ["certs", "upload", "www", "--chain", str(tmp_path / "www.crt"),
                  "--key", str(tmp_path / "www.key"), *common]
        assert await asyncio.to_thread(gtm, *upload) == 0
        assert "certificate www stored (revision 1)" in capsys.readouterr().out
        assert await asyncio.to_thread(gtm, "certs", "list", "--control", *common) == 0
        out = capsys.readouterr().out
        assert "www" in out and "www.example.com" in out and "gtm test CA" in out
        assert await asyncio.to_thread(gtm, "certs", "list", "--control", "--json",
                                       *common) == 0
        assert '"status": "ok"' in capsys.readouterr().out
        assert await asyncio.to_thread(gtm, "certs", "remove", "www", *common) == 0
        assert "deleted" in capsys.readouterr().out
        assert await asyncio.to_thread(gtm, "certs", "remove", "www", *common) == 2
        assert "no certificate 'www'" in capsys.readouterr().err
        remote = ["--api", "http://192.0.2.1:8080", "--token", "x"]
        assert await asyncio.to_thread(gtm, *upload[:7], *remote) == 2
        assert "plain HTTP" in capsys.readouterr().err
    keyfile = tmp_path / "made.key"
    assert gtm_main(["certs", "keygen", str(keyfile)]) == 0
    assert read_key(keyfile).id in capsys.readouterr().err
    assert gtm_main(["certs", "keygen", str(keyfile)]) == 2  # never overwritten
