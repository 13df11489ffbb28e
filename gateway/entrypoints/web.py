"""The HTTP side of the gateway (aiohttp): health probes and the wallet web service (Apple's
PassKit protocol and the member card page)."""

from __future__ import annotations

from aiohttp import web

from gateway.service.context import AppContext
from wallet.config import Wallet
from wallet.entrypoints.web import REQUEST_BODY_BYTES_MAX, add_wallet_routes


def create_web_app(ctx: AppContext, wallet: Wallet | None = None) -> web.Application:
    app = web.Application(client_max_size=REQUEST_BODY_BYTES_MAX)

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
    if wallet is not None:
        add_wallet_routes(app, ctx, wallet)
    return app
