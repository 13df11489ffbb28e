"""The wallet web service (aiohttp): Apple's PassKit protocol under /passkit, and the member's
card page under /cards. Handlers parse, call one use case, and render.

PassKit endpoints (webServiceURL = {COALITION_WALLET_URL}/passkit), as Apple defines them:

    POST   /v1/devices/{device}/registrations/{passType}/{serial}   201 new, 200 known, 401
    DELETE /v1/devices/{device}/registrations/{passType}/{serial}   200, 401
    GET    /v1/devices/{device}/registrations/{passType}?passesUpdatedSince=tag   200, 204
    GET    /v1/passes/{passType}/{serial}                          200, 304, 401
    POST   /v1/log                                                 200

Errors answer JSON {"reason": ..., "message": ...} with 400, 401 or 404; while the database is
out of reach, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import segno
from aiohttp import web
from babel.dates import format_date
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from gateway.domain.errors import (
    CoalitionError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from gateway.service.context import AppContext
from wallet.adapters.pkpass import IMAGE_NAMES
from wallet.config import Wallet
from wallet.domain import card as dc
from wallet.service import cards, passkit

PASSKIT_PREFIX = "/passkit/v1"
REQUEST_BODY_BYTES_MAX = 64 * 1024
"""PassKit bodies are a push token or a few log lines."""
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
)
_STATUS = {
    InvalidArgument: 400,
    Unauthenticated: 401,
    NotFound: 404,
    FailedPrecondition: 503,
    Unavailable: 503,
}
PAGE_HEADERS = {
    # The page URL carries the card's secret: never send it on, never cache the page.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

log = logging.getLogger("coalition.passkit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: CoalitionError) -> web.Response:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 400)
    headers = None
    if isinstance(exc, Unavailable):  # a database outage: "try again in N s" (RFC 9110 10.2.3)
        headers = {"Retry-After": str(math.ceil(float(exc.metadata.get("retry_after_s", 1))))}
    return web.json_response(
        {"reason": exc.reason, "message": exc.message}, status=status, headers=headers
    )


def _errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except CoalitionError as exc:
            return _error(exc)
        except web.HTTPException:
            raise
        except Exception:  # a bug: log it, answer without internals
            log.exception("wallet web request %s %s failed", request.method, request.path)
            return web.json_response(
                {"reason": "INTERNAL", "message": "the request failed; it was logged"}, status=500
            )

    return wrapped


def _http_date(when: datetime) -> str:
    return format_datetime(when.replace(microsecond=0), usegmt=True)


def _if_modified_since(request: web.Request) -> datetime | None:
    raw = request.headers.get("If-Modified-Since")
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None  # an unreadable date is no condition (RFC 9110 13.1.3)
    # "-0000" and the asctime form carry no zone: HTTP dates are always GMT (RFC 9110 5.6.7).
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _pass_response(data: bytes, card: cards.CardView) -> web.Response:
    return web.Response(
        body=data,
        content_type=dc.PKPASS_MIME,
        headers={
            "Last-Modified": _http_date(card.update_time),
            "Content-Disposition": 'attachment; filename="card.pkpass"',
            "Cache-Control": "no-cache",
        },
    )


def add_wallet_routes(app: web.Application, ctx: AppContext, wallet: Wallet) -> None:
    db = ctx.database

    def path_args(request: web.Request) -> tuple[str, str, str]:
        info = request.match_info
        return info["device"], info["pass_type"], info["serial"]

    @_errors
    async def register(request: web.Request) -> web.Response:
        device, pass_type, serial = path_args(request)
        body = await request.read()
        async with db.begin() as conn:
            created = await passkit.register(
                conn, ctx, device, pass_type, serial, request.headers.get("Authorization"), body
            )
        return web.Response(status=201 if created else 200)

    @_errors
    async def unregister(request: web.Request) -> web.Response:
        device, pass_type, serial = path_args(request)
        async with db.begin() as conn:
            await passkit.unregister(
                conn, ctx, device, pass_type, serial, request.headers.get("Authorization")
            )
        return web.Response(status=200)

    @_errors
    async def updated(request: web.Request) -> web.Response:
        async with db.connect() as conn:
            found = await passkit.updated_serials(
                conn,
                request.match_info["device"],
                request.match_info["pass_type"],
                request.query.get("passesUpdatedSince"),
            )
        if found is None:
            return web.Response(status=204)
        return web.json_response(
            {"serialNumbers": found.serial_numbers, "lastUpdated": found.last_updated}
        )

    @_errors
    async def latest_pass(request: web.Request) -> web.Response:
        if wallet.apple is None:
            raise cards.not_configured()
        async with db.connect() as conn:
            card = await passkit.authorized_card(
                conn,
                ctx,
                request.match_info["pass_type"],
                request.match_info["serial"],
                request.headers.get("Authorization"),
            )
        since = _if_modified_since(request)
        if since is not None and card.update_time.replace(microsecond=0) <= since:
            return web.Response(status=304, headers={"Last-Modified": _http_date(card.update_time)})
        data = await asyncio.to_thread(cards.build_pkpass, ctx, wallet, card)
        return _pass_response(data, card)

    @_errors
    async def device_log(request: web.Request) -> web.Response:
        passkit.log_messages(passkit.body_field(await request.read(), "logs"))
        return web.Response(status=200)

    async def page_card(request: web.Request) -> cards.CardView:
        serial = request.match_info["serial"]
        token = request.query.get("token", "")
        if not dc.is_serial_number(serial) or not passkit.same_secret(
            token, ctx.vault.pass_token(serial)
        ):
            raise NotFound("CARD_NOT_FOUND", "no such card, or the link is incomplete")
        async with db.connect() as conn:
            card = await cards.find(conn, serial_number=serial)
        if card is None:
            raise NotFound("CARD_NOT_FOUND", "no such card, or the link is incomplete")
        return card

    @_errors
    async def card_page(request: web.Request) -> web.Response:
        card = await page_card(request)
        async with db.connect() as conn:
            member = await cards.member_of(conn, ctx, card)
            content = await cards.current_content(conn, ctx, member)
        html = render_page(ctx, wallet, card, content, request.query["token"])
        return web.Response(
            text=html, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    @_errors
    async def card_pass(request: web.Request) -> web.Response:
        if wallet.apple is None:
            raise cards.not_configured()
        card = await page_card(request)
        data = await asyncio.to_thread(cards.build_pkpass, ctx, wallet, card)
        response = _pass_response(data, card)
        response.headers.update({"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})
        return response

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in IMAGE_NAMES:
            raise web.HTTPNotFound()
        return web.Response(
            body=wallet.images[name],
            content_type="image/png",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    devices = f"{PASSKIT_PREFIX}/devices/{{device}}/registrations/{{pass_type}}"
    app.router.add_post(f"{devices}/{{serial}}", register)
    app.router.add_delete(f"{devices}/{{serial}}", unregister)
    app.router.add_get(devices, updated)
    app.router.add_get(f"{PASSKIT_PREFIX}/passes/{{pass_type}}/{{serial}}", latest_pass)
    app.router.add_post(f"{PASSKIT_PREFIX}/log", device_log)
    app.router.add_get("/cards/assets/{name}", asset)
    app.router.add_get("/cards/{serial}", card_page)
    app.router.add_get("/cards/{serial}/pass.pkpass", card_pass)


def render_page(
    ctx: AppContext, wallet: Wallet, card: cards.CardView, content: dc.CardContent, token: str
) -> str:
    """The member's card page: the card, its QR code, and the two wallet buttons."""
    lang = dc.language(content.locale)
    qr = segno.make(content.loyalty_number, error="m").svg_inline(
        scale=6, dark="#000", light="#fff", omitsize=True
    )
    base = wallet.program.web_url.rstrip("/")
    current = replace(card, content=content)
    return _TEMPLATES.get_template("card.html.j2").render(
        lang=lang,
        t=dc.STRINGS[lang],
        program=wallet.program.program_name,
        background=wallet.program.background_color,
        foreground=wallet.program.foreground_color,
        label=wallet.program.label_color,
        content=content,
        balance=format_decimal(content.balance_points, locale=lang),
        expiring=format_decimal(content.expiring_points, locale=lang),
        expires=format_date(content.expiring_time, "long", locale=lang)
        if content.expiring_time
        else "",
        number=dc.formatted_number(content.loyalty_number),
        qr=Markup(qr),
        pkpass_url=f"{base}/cards/{card.serial_number}/pass.pkpass?token={token}"
        if wallet.apple
        else "",
        pkpass_mime=dc.PKPASS_MIME,
        google_url=cards.google_save_url(ctx, wallet, current) if wallet.google else "",
    )
