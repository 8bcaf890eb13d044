"""Small demo backends, so the example config runs with nothing else installed.

Each answers every request with 200 and a line naming itself; POST/PUT bodies are echoed.
``gtm lb demo-backend --listen 127.0.0.1:9001 --listen 127.0.0.1:9002``
"""

from __future__ import annotations

from aiohttp import web

from gtm.config.settings import Listen
from gtm.errors import ServeError


def make_app(name: str) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method in ("POST", "PUT"):
            return web.Response(body=await request.read())
        return web.Response(text=f"hello from {name}\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_demo_backends(addresses: list[Listen]) -> list[web.AppRunner]:
    runners: list[web.AppRunner] = []
    for address in addresses:
        runner = web.AppRunner(make_app(str(address)), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, address.host, address.port).start()
        except OSError as exc:
            await runner.cleanup()
            for started in runners:
                await started.cleanup()
            raise ServeError(f"cannot start demo backend on {address}: {exc.strerror}") from exc
        runners.append(runner)
    return runners


async def _nothing() -> None:
    """SIGHUP: the demo backends have nothing to reload."""


def serve_demo(addresses: list[Listen]) -> int:
    from gtm.process import run_async, wait_for_stop

    async def main() -> None:
        runners = await start_demo_backends(addresses)
        await wait_for_stop(on_reload=_nothing)
        for runner in runners:
            await runner.cleanup()

    run_async(main)
    return 0
