"""The HTTP side of the gateway (aiohttp): health probes now; the wallet web service joins it."""

from __future__ import annotations

from aiohttp import web

from gateway.service.context import AppContext


def create_web_app(ctx: AppContext) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            async with ctx.database.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # any database failure means not ready
            return web.json_response(
                {"status": "unavailable", "error": type(exc).__name__}, status=503
            )
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
