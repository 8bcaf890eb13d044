"""A backend process for the auto-scaling tests: answers after a delay, names itself.

``python tests/lb/scale_backend.py --listen 127.0.0.1:9100 --delay 0.05``; ``/agent``
answers ``{"load": N}`` (N from --load) for backend-reported metrics, or, with
``--load-header NAME``, sends N in that header on every answer (and no body field).
``--start-delay S``: listens only after S seconds (a backend slow to come up).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--load", type=float, default=0.0)
    parser.add_argument("--load-header")
    parser.add_argument("--start-delay", type=float, default=0.0)
    args = parser.parse_args()
    headers = {args.load_header: str(args.load)} if args.load_header else {}
    host, port = args.listen.rsplit(":", 1)

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/agent":
            return web.json_response({} if headers else {"load": args.load}, headers=headers)
        if args.delay:
            await asyncio.sleep(args.delay)
        return web.Response(text=f"{args.listen}\n", headers=headers)

    async def run() -> None:
        await asyncio.sleep(args.start_delay)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, int(port)).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


if __name__ == "__main__":
    main()
