"""The deployment's DNS cookie secret in the control plane: sealed in the document, the
same on every node that follows, rotated with the previous secret still accepted."""

from __future__ import annotations

import json
from pathlib import Path

from gtm.config.cookies import DNS_COOKIES
from gtm.config.document import compile_document
from gtm.control.cookies import apply_cookie_secrets, ensure_cookie_secret, rotate_cookie_secret
from gtm.control.service import ConfigService
from gtm.control.sqlite_store import SqliteStore
from gtm.dns.cookies import Cookies, new_secret
from gtm.sealing import create_key
from tests.control.conftest import example_document

CLIENT = bytes(range(8))
ADDRESS = bytes((192, 0, 2, 1))


async def test_nodes_share_the_sealed_secret_and_rotation_keeps_the_old_one(
        tmp_path: Path) -> None:
    key = create_key(tmp_path / "secret.key")
    store = SqliteStore(tmp_path / "config.sqlite3")
    await store.open()
    try:
        service = ConfigService(store)
        await service.propose(example_document(), 0, "test", "zones")
        first = await ensure_cookie_secret(service, key, "test")
        assert first == 2
        assert await ensure_cookie_secret(service, key, "test") is None  # there already
        record = await store.get(2)
        assert record is not None and record.document is not None
        stored = json.dumps(record.document[DNS_COOKIES])
        # Two nodes, each with its own secret until the version arrives.
        one, two = Cookies([new_secret()]), Cookies([new_secret()])
        compiled = compile_document(record.document, "version 2")
        for node in (one, two):
            apply_cookie_secrets(node, compiled, key)
            assert node.current.hex() not in stored  # only ciphertext is stored
        _, issued = one.exchange(CLIENT, b"", ADDRESS)
        assert two.exchange(CLIENT, issued, ADDRESS)[0]  # the other node accepts it
        # Rotation: a new secret issues, the old one is still accepted.
        await rotate_cookie_secret(service, key, "test")
        rotated = await store.latest()
        assert rotated is not None and rotated.document is not None
        assert len(rotated.document[DNS_COOKIES]["secrets"]) == 2
        fresh_node = Cookies([new_secret()])
        apply_cookie_secrets(fresh_node, compile_document(rotated.document, "v3"), key)
        assert fresh_node.exchange(CLIENT, issued, ADDRESS)[0]
        _, newer = fresh_node.exchange(bytes(8), b"", ADDRESS)
        assert not one.exchange(bytes(8), newer, ADDRESS)[0]  # one still runs version 2
        # Twice rotated: the first secret is gone.
        await rotate_cookie_secret(service, key, "test")
        latest = await store.latest()
        assert latest is not None and latest.document is not None
        apply_cookie_secrets(fresh_node, compile_document(latest.document, "v4"), key)
        fresh_node.issued.clear()
        assert not fresh_node.exchange(CLIENT, issued, ADDRESS)[0]
    finally:
        await store.close()


async def test_a_node_with_another_key_keeps_its_own_secret(tmp_path: Path) -> None:
    key = create_key(tmp_path / "secret.key")
    other = create_key(tmp_path / "other.key")
    store = SqliteStore(tmp_path / "config.sqlite3")
    await store.open()
    try:
        service = ConfigService(store)
        await service.propose(example_document(), 0, "test", "zones")
        await ensure_cookie_secret(service, key, "test")
        latest = await store.latest()
        assert latest is not None and latest.document is not None
        own = new_secret()
        node = Cookies([own])
        apply_cookie_secrets(node, compile_document(latest.document, "v2"), other)
        assert node.current == own
    finally:
        await store.close()
