"""The wallet card as a phone and Google see it: issue over gRPC, register over the PassKit web
service, earn, receive the push on a local HTTP/2 APNs, list the updated serials, fetch the new
pass, and the Google object patched with the new balance."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from earn_api import Api, ref, rid
from errors import expect_error
from wallet_support import PASS_TYPE_ID, WalletRig, WalletWeb, wallet_web

from coalition.v1 import wallet_pb2, wallet_pb2_grpc
from wallet.service.updates import CardUpdater

DEVICE = "device-library-0001"
PUSH_TOKEN = "a1b2c3d4e5f6"


@pytest.fixture
async def served(ctx: Any, tmp_path: Path) -> AsyncIterator[WalletWeb]:
    async for made in wallet_web(ctx, tmp_path):
        yield made


@pytest.fixture
def rig(served: WalletWeb) -> WalletRig:
    return served.rig


@pytest.fixture
async def phone(served: WalletWeb) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=served.base) as session:
        yield session


@pytest.fixture
async def api(start_gateway: Any, rig: WalletRig) -> Api:
    return Api(await start_gateway(wallet=rig.wallet))


async def issue(api: Api, member: str, request_id: str = "") -> wallet_pb2.IssueWalletCardResponse:
    stub = wallet_pb2_grpc.WalletServiceStub(api.gateway.channel)
    reply: wallet_pb2.IssueWalletCardResponse = await stub.IssueWalletCard(
        wallet_pb2.IssueWalletCardRequest(request_id=request_id or rid(), member=ref(member)),
        metadata=api.operator,
    )
    return reply


def pass_json(pkpass: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        loaded: dict[str, Any] = json.loads(archive.read("pass.json"))
        return loaded


def primary_points(pkpass: bytes) -> int:
    return int(pass_json(pkpass)["storeCard"]["primaryFields"][0]["value"])


def registration(serial: str, device: str = DEVICE) -> str:
    return f"/passkit/v1/devices/{device}/registrations/{PASS_TYPE_ID}/{serial}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"ApplePass {token}"}


async def test_a_phone_follows_the_card_through_an_earn(
    ctx: Any, api: Api, rig: WalletRig, phone: aiohttp.ClientSession
) -> None:
    _, hotel_key = await api.gateway.create_partner("grand-hotel")
    member = await api.enroll("Ada Lovelace")
    await api.buy(api.gateway.auth(hotel_key), member, 10_000)  # 100 USD at 10/USD: 1,000 points
    issued = await issue(api, member)
    first = pass_json(issued.pkpass)
    serial, token = first["serialNumber"], first["authenticationToken"]
    assert primary_points(issued.pkpass) == 1_000
    assert first["webServiceURL"].endswith("/passkit")

    # Register: 201 new, 200 again, 401 with the wrong token.
    body = {"pushToken": PUSH_TOKEN}
    async with phone.post(registration(serial), json=body, headers=auth(token)) as reply:
        assert reply.status == 201
    async with phone.post(registration(serial), json=body, headers=auth(token)) as reply:
        assert reply.status == 200
    async with phone.post(registration(serial), json=body, headers=auth("0" * 64)) as reply:
        assert reply.status == 401
    async with phone.post(registration(serial), json=body) as reply:
        assert reply.status == 401

    # Everything the device holds, then nothing newer than what it was told.
    listing = f"/passkit/v1/devices/{DEVICE}/registrations/{PASS_TYPE_ID}"
    async with phone.get(listing) as reply:
        assert reply.status == 200
        known = await reply.json()
    assert known["serialNumbers"] == [serial]
    async with phone.get(listing, params={"passesUpdatedSince": known["lastUpdated"]}) as reply:
        assert reply.status == 204

    # The pass as the device has it: Last-Modified, then 304 while unchanged.
    pass_path = f"/passkit/v1/passes/{PASS_TYPE_ID}/{serial}"
    async with phone.get(pass_path, headers=auth(token)) as reply:
        assert reply.status == 200
        assert reply.content_type == "application/vnd.apple.pkpass"
        last_modified = reply.headers["Last-Modified"]
        assert primary_points(await reply.read()) == 1_000
    unchanged = {**auth(token), "If-Modified-Since": last_modified}
    async with phone.get(pass_path, headers=unchanged) as reply:
        assert reply.status == 304
    async with phone.get(pass_path, headers=auth("f" * 64)) as reply:
        assert reply.status == 401

    # An earn marks the card; the updater pushes the device and patches Google.
    rig.google.saved.add(f"{rig.wallet.program.google_issuer_id}.{serial}")
    await api.buy(api.gateway.auth(hotel_key), member, 5_000)
    done = await CardUpdater(ctx, rig.wallet).run_once()
    assert (done.cards, done.pushes, done.failed) == (1, 1, 0)
    [push] = rig.apns.pushes
    assert push.token == PUSH_TOKEN
    assert push.http_version == "2"
    assert push.headers["apns-topic"] == PASS_TYPE_ID
    assert json.loads(push.body) == {}
    [(object_id, patch)] = rig.google.patches
    assert object_id == f"{rig.wallet.program.google_issuer_id}.{serial}"
    assert patch["loyaltyPoints"]["balance"] == {"int": 1_500}

    # The device asks what changed since its tag, and fetches the new pass.
    async with phone.get(listing, params={"passesUpdatedSince": known["lastUpdated"]}) as reply:
        assert reply.status == 200
        changed = await reply.json()
    assert changed["serialNumbers"] == [serial]
    assert int(changed["lastUpdated"]) > int(known["lastUpdated"])
    async with phone.get(pass_path, headers=unchanged) as reply:
        assert reply.status == 200
        assert primary_points(await reply.read()) == 1_500
        assert reply.headers["Last-Modified"] != last_modified
        newest = reply.headers["Last-Modified"]
    async with phone.get(pass_path, headers={**auth(token), "If-Modified-Since": newest}) as reply:
        assert reply.status == 304

    # Nothing changed: the updater has nothing to push.
    assert (await CardUpdater(ctx, rig.wallet).run_once()).cards == 0

    # The device logs, then deletes the pass.
    async with phone.post("/passkit/v1/log", json={"logs": ["pass looked fine"]}) as reply:
        assert reply.status == 200
    async with phone.delete(registration(serial), headers=auth("0" * 64)) as reply:
        assert reply.status == 401
    async with phone.delete(registration(serial), headers=auth(token)) as reply:
        assert reply.status == 200
    async with phone.get(listing) as reply:
        assert reply.status == 204


async def test_a_reader_fetches_the_pass_without_registering(
    api: Api, phone: aiohttp.ClientSession
) -> None:
    member = await api.enroll()
    issued = await issue(api, member)
    card = pass_json(issued.pkpass)
    path = f"/passkit/v1/passes/{PASS_TYPE_ID}/{card['serialNumber']}"
    async with phone.get(path, headers=auth(card["authenticationToken"])) as reply:
        assert reply.status == 200
        assert pass_json(await reply.read())["serialNumber"] == card["serialNumber"]
    stale = format_datetime(
        issued.card.update_time.ToDatetime(tzinfo=UTC).replace(year=2000), usegmt=True
    )
    headers = {**auth(card["authenticationToken"]), "If-Modified-Since": stale}
    async with phone.get(path, headers=headers) as reply:
        assert reply.status == 200


async def test_apns_says_a_token_is_gone_and_the_device_is_forgotten(
    ctx: Any, api: Api, rig: WalletRig, phone: aiohttp.ClientSession
) -> None:
    _, hotel_key = await api.gateway.create_partner("grand-hotel")
    member = await api.enroll()
    card = pass_json((await issue(api, member)).pkpass)
    serial, token = card["serialNumber"], card["authenticationToken"]
    for device, push_token in (("phone-a", "aaaa1111"), ("phone-b", "bbbb2222")):
        async with phone.post(
            registration(serial, device), json={"pushToken": push_token}, headers=auth(token)
        ) as reply:
            assert reply.status == 201
    rig.apns.gone.add("bbbb2222")
    await api.buy(api.gateway.auth(hotel_key), member, 1_000)
    done = await CardUpdater(ctx, rig.wallet).run_once()
    assert (done.pushes, done.gone, done.failed) == (1, 1, 0)
    assert sorted(p.token for p in rig.apns.pushes) == ["aaaa1111", "bbbb2222"]
    async with phone.get(f"/passkit/v1/devices/phone-b/registrations/{PASS_TYPE_ID}") as reply:
        assert reply.status == 204
    stub = wallet_pb2_grpc.WalletServiceStub(api.gateway.channel)
    got = await stub.GetWalletCard(
        wallet_pb2.GetWalletCardRequest(member=ref(member)), metadata=api.operator
    )
    assert got.card.registered_device_count == 1
    assert got.card.balance_points == 100


async def test_the_google_save_link_verifies_with_the_service_account_key(
    api: Api, rig: WalletRig
) -> None:
    member = await api.enroll("Grace Hopper")
    issued = await issue(api, member)
    prefix = "https://pay.google.com/gp/v/save/"
    assert issued.google_save_url.startswith(prefix)
    claims = jwt.decode(
        issued.google_save_url.removeprefix(prefix),
        rig.google.public_key_pem,
        algorithms=["RS256"],
        audience="google",
    )
    assert claims["iss"] == rig.google.client_email
    assert claims["typ"] == "savetowallet"
    assert claims["origins"] == [rig.wallet.program.web_url]
    assert "loyaltyClasses" not in claims["payload"]  # created over REST: links stay short
    assert len(issued.google_save_url) < 1_800  # Google's limit for links
    [loyalty_object] = claims["payload"]["loyaltyObjects"]
    assert loyalty_object["classId"] == rig.wallet.program.google_class_id
    assert loyalty_object["id"] == issued.card.google_object_id
    assert loyalty_object["accountName"] == "Grace Hopper"
    assert loyalty_object["loyaltyPoints"]["balance"] == {"int": 0}
    assert loyalty_object["barcode"]["type"] == "QR_CODE"
    with pytest.raises(jwt.InvalidSignatureError):
        forged = issued.google_save_url.removeprefix(prefix)[:-4] + "AAAA"
        jwt.decode(forged, rig.google.public_key_pem, algorithms=["RS256"], audience="google")


async def test_issuing_is_idempotent_and_keeps_one_card_per_member(api: Api) -> None:
    member = await api.enroll()
    request_id = rid()
    first = await issue(api, member, request_id)
    replay = await issue(api, member, request_id)
    again = await issue(api, member)
    assert replay.card == first.card
    assert pass_json(replay.pkpass)["serialNumber"] == first.card.serial_number
    assert replay.card_page_url == first.card_page_url
    assert again.card.serial_number == first.card.serial_number


async def test_a_card_that_was_never_issued_is_not_found(api: Api) -> None:
    member = await api.enroll()
    stub = wallet_pb2_grpc.WalletServiceStub(api.gateway.channel)
    await expect_error(
        stub.GetWalletCard(
            wallet_pb2.GetWalletCardRequest(member=ref(member)), metadata=api.operator
        ),
        grpc.StatusCode.NOT_FOUND,
        "WALLET_CARD_NOT_FOUND",
    )


async def test_a_gateway_without_wallet_settings_says_so(gateway: Any) -> None:
    api = Api(gateway)
    member = await api.enroll()
    stub = wallet_pb2_grpc.WalletServiceStub(gateway.channel)
    await expect_error(
        stub.IssueWalletCard(
            wallet_pb2.IssueWalletCardRequest(request_id=rid(), member=ref(member)),
            metadata=api.operator,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "WALLET_NOT_CONFIGURED",
    )


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/passkit/v1/log", {}, b"[" * 60_000, 400),
        ("POST", "/passkit/v1/log", {}, b"\xff\xfe", 400),
        ("POST", "/passkit/v1/log", {}, b'{"logs": "not a list"}', 400),
        ("GET", f"/passkit/v1/devices/{DEVICE}/registrations/pass%00x", {}, b"", 400),
        ("GET", f"/passkit/v1/devices/dev%0A/registrations/{PASS_TYPE_ID}", {}, b"", 400),
        (
            "GET",
            f"/passkit/v1/passes/{PASS_TYPE_ID}/{'0' * 32}",
            {"Authorization": "Basic x"},
            b"",
            401,
        ),
    ],
    ids=["deep-json", "not-utf8", "logs-not-list", "nul-pass-type", "newline-device", "basic-auth"],
)
async def test_malformed_requests_get_a_reason_not_a_500(
    phone: aiohttp.ClientSession,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    async with phone.request(method, path, headers=headers, data=body) as reply:
        assert reply.status == status
        assert (await reply.json())["reason"]


async def test_odd_but_valid_dates_and_undecodable_tokens_are_handled(
    api: Api, phone: aiohttp.ClientSession
) -> None:
    member = await api.enroll()
    card = pass_json((await issue(api, member)).pkpass)
    path = f"/passkit/v1/passes/{PASS_TYPE_ID}/{card['serialNumber']}"
    token = card["authenticationToken"]
    # HTTP dates without a zone (RFC 850's "-0000", asctime) are GMT all the same.
    for date in ("Tue, 24 Nov 2099 19:46:52 -0000", "Sun Nov  6 08:49:37 2099"):
        async with phone.get(path, headers={**auth(token), "If-Modified-Since": date}) as reply:
            assert reply.status == 304, date
    # Bytes that are not UTF-8 in the Authorization header: wrong, not a crash.
    async with phone.get(path, headers={"Authorization": "ApplePass \udcff\udcfe"}) as reply:
        assert reply.status == 401


async def test_registering_checks_the_pass_before_reading_the_body(
    api: Api, phone: aiohttp.ClientSession
) -> None:
    member = await api.enroll()
    card = pass_json((await issue(api, member)).pkpass)
    path = registration(card["serialNumber"])
    async with phone.post(path, data=b"not json", headers=auth("0" * 64)) as reply:
        assert reply.status == 401
    async with phone.post(
        path, data=b"not json", headers=auth(card["authenticationToken"])
    ) as reply:
        assert reply.status == 400
        assert (await reply.json())["reason"] == "INVALID_JSON"
