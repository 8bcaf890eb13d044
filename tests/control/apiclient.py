"""A small API client for the tests: a real aiohttp session against a real server."""

from __future__ import annotations

from typing import Any

import aiohttp


class Api:
    def __init__(self, base: str, token: str | None):
        self.base = base
        self.token = token
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = ...,  # type: ignore[assignment]
        if_match: int | None = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        headers = dict(headers or {})
        chosen = self.token if token is ... else token
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        async with self.session.request(method, self.base + path, json=body,
                                        headers=headers) as response:
            data = await response.json(content_type=None)
            return response.status, data, response.headers  # type: ignore[return-value]
