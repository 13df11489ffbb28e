"""The member's card page as a phone shows it: issued over gRPC, opened in headless Chromium
(Debian's chromium and chromium-driver, driven by Selenium), and the same URLs fetched by a plain
HTTP client for what a browser does not show (status codes, headers, the pass download, assets).

Selenium's webdriver is synchronous: every call runs in a thread (asyncio.to_thread) so the
gateway and the wallet web service, both on the test's event loop, keep serving meanwhile.
Without chromium the browser tests are skipped locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import struct
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from earn_api import Api, ref, rid
from wallet_support import WalletWeb, wallet_web
from yarl import URL

from coalition.v1 import members_pb2, wallet_pb2, wallet_pb2_grpc

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (390, 844)
"""A phone-sized window (CSS pixels)."""
PAGE_LOAD_TIMEOUT_S = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCREENSHOT_BYTES_MIN = 5 * 1024
GOOGLE_SAVE_PREFIX = "https://pay.google.com/gp/v/save/"

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def served(ctx: Any, tmp_path: Path) -> AsyncIterator[WalletWeb]:
    async for made in wallet_web(ctx, tmp_path):
        yield made


@pytest.fixture
async def api(start_gateway: Any, served: WalletWeb) -> Api:
    return Api(await start_gateway(wallet=served.rig.wallet))


@pytest.fixture
async def client(served: WalletWeb) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=served.base) as session:
        yield session


def _browser_problem() -> str:
    """Why no browser can be started here, or "" when one can."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return ""


def require_browser() -> None:
    """Skip without a browser; under CI=true fail instead (CI must not skip silently)."""
    problem = _browser_problem()
    if not problem:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no browser for the card page tests: {problem}", pytrace=False)
    pytest.skip(f"no browser for the card page tests: {problem}")


def _start_chrome(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager neither looks for nor downloads one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    driver.set_window_size(*WINDOW)
    return driver


class Browser:
    """The webdriver, each call in a thread."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def call(self, name: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.driver, name), *args)

    async def open(self, url: str) -> None:
        await self.call("get", url)

    async def element(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return await self.call("find_element", By.CSS_SELECTOR, css)

    async def elements(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        found: list[Any] = await self.call("find_elements", By.CSS_SELECTOR, css)
        return found

    async def text(self, css: str) -> str:
        element = await self.element(css)
        return str(await asyncio.to_thread(lambda: element.text))

    async def attribute(self, css: str, name: str) -> str | None:
        element = await self.element(css)
        value = await asyncio.to_thread(element.get_attribute, name)
        return None if value is None else str(value)

    async def displayed(self, css: str) -> bool:
        element = await self.element(css)
        return bool(await asyncio.to_thread(element.is_displayed))

    async def script(self, source: str) -> Any:
        return await self.call("execute_script", source)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    require_browser()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    driver = await asyncio.to_thread(_start_chrome, profile)
    try:
        yield Browser(driver)
    finally:
        await asyncio.to_thread(driver.quit)


# -- helpers ---------------------------------------------------------------------------------


async def enroll(api: Api, name: str, locale: str = "") -> members_pb2.Member:
    reply: members_pb2.EnrollMemberResponse = await api.members.EnrollMember(
        members_pb2.EnrollMemberRequest(
            request_id=rid(), member=members_pb2.Member(display_name=name, locale=locale)
        ),
        metadata=api.operator,
    )
    return reply.member


async def issue(api: Api, member: str) -> wallet_pb2.IssueWalletCardResponse:
    stub = wallet_pb2_grpc.WalletServiceStub(api.gateway.channel)
    reply: wallet_pb2.IssueWalletCardResponse = await stub.IssueWalletCard(
        wallet_pb2.IssueWalletCardRequest(request_id=rid(), member=ref(member)),
        metadata=api.operator,
    )
    return reply


def token_of(page_url: str) -> str:
    [token] = parse_qs(urlsplit(page_url).query)["token"]
    return token


def grouped(number: str) -> str:
    """How a loyalty number is printed: groups of four digits."""
    return " ".join(re.findall(r"\d{1,4}", number))


def spaced(text: str) -> str:
    """Any Unicode space (French groups thousands with U+202F) as a plain space."""
    return re.sub(r"\s", " ", text).strip()


def pass_json(pkpass: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        loaded: dict[str, Any] = json.loads(archive.read("pass.json"))
        return loaded


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, data[:16]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def google_claims(url: str, served: WalletWeb) -> dict[str, Any]:
    assert url.startswith(GOOGLE_SAVE_PREFIX), url
    claims: dict[str, Any] = jwt.decode(
        url.removeprefix(GOOGLE_SAVE_PREFIX),
        served.rig.google.public_key_pem,
        algorithms=["RS256"],
        audience="google",
    )
    return claims


async def carded_member(
    api: Api, name: str = "Ada Lovelace", locale: str = "", purchase_minor: int = 15_000
) -> tuple[members_pb2.Member, wallet_pb2.IssueWalletCardResponse]:
    """A member who earned at a hotel (10 points per USD), then got their card."""
    _, key = await api.gateway.create_partner(f"hotel-{rid()[:8]}")
    member = await enroll(api, name, locale)
    if purchase_minor:
        await api.buy(api.gateway.auth(key), member.name, purchase_minor)
    return member, await issue(api, member.name)


# -- in the browser --------------------------------------------------------------------------


async def test_the_card_page_shows_the_card_and_both_wallet_buttons(
    api: Api, served: WalletWeb, browser: Browser, tmp_path: Path
) -> None:
    member, issued = await carded_member(api, "Ada Lovelace", purchase_minor=15_000)
    serial = issued.card.serial_number
    token = token_of(issued.card_page_url)
    assert issued.card_page_url == f"{served.base}/cards/{serial}?token={token}"
    assert issued.card.balance_points == 1_500

    await browser.open(issued.card_page_url)

    assert await browser.attribute("html", "lang") == "en"
    assert await browser.text("#balance") == "1,500"
    assert await browser.text("#balance-label") == "POINTS"  # text-transform: uppercase
    assert await browser.text("#tier") == "Blue"
    assert await browser.text("#member") == "Ada Lovelace"
    assert await browser.text("#program") == served.rig.wallet.program.program_name
    number = await browser.text("#number")
    assert number == grouped(member.loyalty_number)
    assert re.fullmatch(r"\d{4} \d{4} \d{4}", number), number
    assert number.replace(" ", "") == member.loyalty_number
    assert not await browser.elements("#expiring")  # nothing expires yet: no row for it
    title = await browser.call("execute_script", "return document.title")
    assert title == f"{served.rig.wallet.program.program_name} · Loyalty card"

    apple = "#add-to-apple-wallet"
    assert await browser.displayed(apple)
    assert await browser.text(apple) == "Add to Apple Wallet"
    assert (
        await browser.attribute(apple, "href")
        == f"{served.base}/cards/{serial}/pass.pkpass?token={token}"
    )
    assert await browser.attribute(apple, "type") == "application/vnd.apple.pkpass"

    google = "#save-to-google-wallet"
    assert await browser.displayed(google)
    assert await browser.text(google) == "Save to Google Wallet"
    google_href = await browser.attribute(google, "href")
    assert google_href is not None
    claims = google_claims(google_href, served)
    [loyalty_object] = claims["payload"]["loyaltyObjects"]
    assert loyalty_object["id"] == f"{served.rig.wallet.program.google_issuer_id}.{serial}"
    assert loyalty_object["loyaltyPoints"]["balance"] == {"int": 1_500}
    assert loyalty_object["accountId"] == member.loyalty_number

    # The QR code: an inline SVG that is drawn, square, inside the card.
    qr = "section.card .code svg"
    assert await browser.displayed(qr)
    size = await browser.script(
        "const r = document.querySelector('section.card .code svg').getBoundingClientRect();"
        "return [r.width, r.height];"
    )
    assert size[0] >= 100 and abs(size[0] - size[1]) < 1, size
    assert len(await browser.elements(f"{qr} path")) >= 1
    label = await browser.attribute("section.card .code [role=img]", "aria-label")
    assert label == f"Loyalty number {number}"

    # Laid out for the phone: nothing wider than the viewport, the buttons within it.
    layout = await browser.script(
        "const a = document.getElementById('add-to-apple-wallet').getBoundingClientRect();"
        "const g = document.getElementById('save-to-google-wallet').getBoundingClientRect();"
        "return {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,"
        " apple: [a.left, a.right, a.height], google: [g.left, g.right, g.height]};"
    )
    assert layout["inner"] <= WINDOW[0], layout
    assert layout["scroll"] <= layout["inner"], layout
    for left, right, height in (layout["apple"], layout["google"]):
        assert 0 <= left < right <= layout["inner"] and height >= 44, layout  # a tappable size

    # The page's Content-Security-Policy leaves it intact: nothing was blocked, nothing failed
    # (but the favicon the browser asks for on its own: the page has none).
    logs = await browser.call("get_log", "browser")
    problems = [
        e
        for e in logs
        if (e.get("level") == "SEVERE" and "/favicon.ico" not in e.get("message", ""))
        or "Content Security Policy" in e.get("message", "")
    ]
    assert not problems, logs

    shot = tmp_path / "card.png"
    assert await browser.call("save_screenshot", str(shot))
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > SCREENSHOT_BYTES_MIN, len(data)
    width, height = png_size(data)
    assert 0 < width <= WINDOW[0] * 3 and height > width, (width, height)


async def test_a_french_member_sees_the_page_in_french(
    api: Api, served: WalletWeb, browser: Browser, tmp_path: Path
) -> None:
    english, english_card = await carded_member(api, "Ada Lovelace", purchase_minor=2_000)
    member, issued = await carded_member(api, "Émilie du Châtelet", "fr-FR", 15_000)
    assert member.locale == "fr-FR"

    await browser.open(issued.card_page_url)
    assert await browser.attribute("html", "lang") == "fr"
    assert await browser.text("#add-to-apple-wallet") == "Ajouter à Apple Wallet"
    assert await browser.text("#save-to-google-wallet") == "Enregistrer dans Google Wallet"
    assert spaced(await browser.text("#balance")) == "1 500"  # French groups with a space
    assert await browser.text("#member") == "Émilie du Châtelet"
    assert await browser.text("#tier") == "Blue"
    assert await browser.text("#number") == grouped(member.loyalty_number)
    footer = await browser.text("footer")
    assert footer == "Gardez ce lien pour vous : il ouvre votre carte."
    title = await browser.call("execute_script", "return document.title")
    assert title.endswith("Carte de fidélité"), title
    await browser.call("save_screenshot", str(tmp_path / "carte.png"))
    assert (tmp_path / "carte.png").read_bytes().startswith(PNG_SIGNATURE)

    # The English member's page, in the same browser, is still English.
    await browser.open(english_card.card_page_url)
    assert await browser.attribute("html", "lang") == "en"
    assert await browser.text("#add-to-apple-wallet") == "Add to Apple Wallet"
    assert await browser.text("#balance") == "200"
    assert await browser.text("#number") == grouped(english.loyalty_number)


async def test_a_name_with_markup_is_shown_as_text(api: Api, browser: Browser) -> None:
    name = "<img src=x onerror=\"document.title='owned'\">&amp; Co"
    _, issued = await carded_member(api, name, purchase_minor=0)
    await browser.open(issued.card_page_url)
    assert await browser.text("#member") == name
    assert not await browser.elements("#member img")
    assert await browser.script("return document.title") != "owned"
    assert await browser.text("#balance") == "0"


async def test_the_page_shows_the_balance_now_not_when_the_card_was_issued(
    api: Api, served: WalletWeb, browser: Browser
) -> None:
    member, issued = await carded_member(api, purchase_minor=15_000)
    _, key = await api.gateway.create_partner("late-hotel")
    await api.buy(api.gateway.auth(key), member.name, 50_000)  # 5,000 more: Silver
    await browser.open(issued.card_page_url)
    assert await browser.text("#balance") == "6,500"
    assert await browser.text("#tier") == "Silver"
    href = await browser.attribute("#save-to-google-wallet", "href")
    assert href is not None
    [loyalty_object] = google_claims(href, served)["payload"]["loyaltyObjects"]
    assert loyalty_object["loyaltyPoints"]["balance"] == {"int": 6_500}


# -- over plain HTTP -------------------------------------------------------------------------


async def test_the_page_answers_with_private_headers(
    api: Api, client: aiohttp.ClientSession
) -> None:
    _, issued = await carded_member(api)
    async with client.get(URL(issued.card_page_url).path_qs) as reply:
        assert reply.status == 200
        assert reply.content_type == "text/html"
        assert reply.charset == "utf-8"
        headers = reply.headers
        html = await reply.text()
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = {
        part.strip().split(" ", 1)[0]: part.strip()
        for part in headers["Content-Security-Policy"].split(";")
        if part.strip()
    }
    assert policy["default-src"] == "default-src 'none'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert "script-src" not in policy  # no scripts at all: default-src 'none' covers them
    assert '<meta name="referrer" content="no-referrer">' in html
    assert "<script" not in html


async def test_a_wrong_or_missing_token_finds_no_card(
    api: Api, client: aiohttp.ClientSession
) -> None:
    _, issued = await carded_member(api)
    _, other = await carded_member(api, "Grace Hopper")
    serial = issued.card.serial_number
    token = token_of(issued.card_page_url)
    wrong = [
        f"/cards/{serial}?token={'0' * len(token)}",
        f"/cards/{serial}?token={token[:-1]}",
        f"/cards/{serial}?token={token}0",
        f"/cards/{serial}",
        f"/cards/{serial}?token=",
        f"/cards/{serial}?token=%C3%A9{token[1:]}",  # not even ASCII
        f"/cards/{other.card.serial_number}?token={token}",  # another card's token
        f"/cards/{serial.upper()}?token={token}",
        f"/cards/{'f' * 32}?token={token}",  # no such card
        f"/cards/not-a-serial?token={token}",
        f"/cards/{serial}/pass.pkpass?token={'0' * len(token)}",
        f"/cards/{serial}/pass.pkpass",
    ]
    for path in wrong:
        async with client.get(path) as reply:
            assert reply.status == 404, path
            assert reply.content_type == "application/json", path
            body = await reply.json()
        assert body["reason"] == "CARD_NOT_FOUND", (path, body)
        assert token not in json.dumps(body)


async def test_the_apple_button_downloads_the_signed_pass(
    api: Api, served: WalletWeb, client: aiohttp.ClientSession
) -> None:
    member, issued = await carded_member(api)
    serial = issued.card.serial_number
    token = token_of(issued.card_page_url)
    async with client.get(URL(issued.card_page_url).path_qs) as reply:
        html = await reply.text()
    match = re.search(r'id="add-to-apple-wallet" href="([^"]+)"', html)
    assert match, html
    href = match.group(1).replace("&amp;", "&")
    assert href == f"{served.base}/cards/{serial}/pass.pkpass?token={token}"
    async with client.get(URL(href).path_qs) as reply:
        assert reply.status == 200
        assert reply.content_type == "application/vnd.apple.pkpass"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert reply.headers["Cache-Control"] == "no-store"
        assert "card.pkpass" in reply.headers["Content-Disposition"]
        assert reply.headers["Last-Modified"]
        data = await reply.read()
    card = pass_json(data)
    assert card["serialNumber"] == serial
    assert card["authenticationToken"] == token
    assert card["storeCard"]["primaryFields"][0]["value"] == 1_500
    assert card["barcodes"][0]["message"] == member.loyalty_number
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {"pass.json", "manifest.json", "signature"} <= set(archive.namelist())


async def test_the_logo_is_served_and_nothing_else(
    api: Api, served: WalletWeb, client: aiohttp.ClientSession
) -> None:
    async with client.get("/cards/assets/logo@3x.png") as reply:
        assert reply.status == 200
        assert reply.content_type == "image/png"
        logo = await reply.read()
    width, height = png_size(logo)
    assert width > 0 and height > 0
    assert logo == served.rig.wallet.images["logo@3x.png"]

    raw_paths = [
        "/cards/assets/../../etc/passwd",
        "/cards/assets/..%2f..%2fetc%2fpasswd",
        "/cards/assets/%2e%2e/%2e%2e/etc/passwd",
        "/cards/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/cards/assets/..%5c..%5cetc%5cpasswd",
        "/cards/assets/logo@3x.png/../../../../etc/passwd",
        "/cards/assets/%2fetc%2fpasswd",
        "/cards/assets/card.html.j2",
        "/cards/assets/..%2ftemplates%2fcard.html.j2",
        "/cards/assets/",
    ]
    # A separate session that sends each path byte for byte (no client-side normalization).
    async with aiohttp.ClientSession() as raw:
        for path in raw_paths:
            async with raw.get(URL(served.base + path, encoded=True)) as reply:
                body = await reply.read()
                assert reply.status == 404, (path, reply.status, body[:200])
            assert b"root:" not in body, path
            assert not body.startswith(PNG_SIGNATURE), path


def test_without_a_browser_the_page_tests_skip_locally_and_fail_on_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard the browser fixture uses, with the driver made to look missing."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        assert _browser_problem() == ""
    monkeypatch.setitem(globals(), "CHROMEDRIVER", Path("/nonexistent/chromedriver"))
    assert "/nonexistent/chromedriver missing" in _browser_problem()
    assert "apt-get install chromium chromium-driver" in _browser_problem()

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromedriver missing"):
        require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and no browser"):
        require_browser()
