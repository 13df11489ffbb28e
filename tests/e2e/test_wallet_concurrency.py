"""Wallet cards under real concurrent clients (PostgreSQL only): issuing, PassKit registrations
and the updater after a burst of earns. Every gRPC outcome is tallied as "OK" or "CODE REASON",
every HTTP one by status; anything unexpected (INTERNAL, a 500) fails the test and is printed.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from earn_api import Api, purchase, ref, rid
from errors import decode_status, details_of
from google.rpc import error_details_pb2
from sqlalchemy import func, select
from wallet_support import PASS_TYPE_ID, WalletWeb, wallet_web

from coalition.v1 import points_pb2, points_pb2_grpc, wallet_pb2, wallet_pb2_grpc
from gateway.service.cards import CARDS, CHANGES
from gateway.service.context import AppContext
from wallet.service.cards import REGISTRATIONS
from wallet.service.updates import CARD_PUSH_INTERVAL_S, DEVICES, CardUpdater, Round

pytestmark = pytest.mark.postgres

CHANNELS = 10
CALL_TIMEOUT_S = 30.0
OK = "OK"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def served(ctx: AppContext, tmp_path: Path) -> AsyncIterator[WalletWeb]:
    async for made in wallet_web(ctx, tmp_path):
        yield made


@pytest.fixture
async def api(start_gateway: Any, served: WalletWeb) -> Api:
    return Api(await start_gateway(wallet=served.rig.wallet))


@pytest.fixture
async def channels(api: Api) -> AsyncIterator[list[grpc.aio.Channel]]:
    """Separate connections, so concurrent calls really are concurrent on the wire."""
    opened = [grpc.aio.insecure_channel(api.gateway.target) for _ in range(CHANNELS)]
    yield opened
    for channel in opened:
        await channel.close()


@pytest.fixture
async def phone(served: WalletWeb) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)  # no client-side queueing
    async with aiohttp.ClientSession(base_url=served.base, connector=connector) as session:
        yield session


# -- helpers ---------------------------------------------------------------------------------


def describe(result: object) -> str:
    """OK, "CODE REASON" for a gRPC error, or the exception itself for anything else."""
    if not isinstance(result, BaseException):
        return OK
    if isinstance(result, grpc.aio.AioRpcError):
        try:
            infos = details_of(decode_status(result), error_details_pb2.ErrorInfo)
        except AssertionError:
            infos = []
        reason = infos[0].reason if len(infos) == 1 else f"(no ErrorInfo: {result.details()})"
        return f"{result.code().name} {reason}"
    return f"{type(result).__name__}: {result!r}"


def expect_outcomes(results: list[Any], expected: dict[str, int]) -> None:
    counts = Counter(describe(r) for r in results)
    assert counts == Counter(expected), f"expected {expected}, got {dict(counts)}"


async def fire(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Start every call at once and collect each result or exception."""
    return list(await asyncio.gather(*(call() for call in calls), return_exceptions=True))


def issue_call(
    api: Api, channel: grpc.aio.Channel, member: str
) -> Callable[[], Awaitable[wallet_pb2.IssueWalletCardResponse]]:
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    request = wallet_pb2.IssueWalletCardRequest(request_id=rid(), member=ref(member))
    return lambda: stub.IssueWalletCard(request, metadata=api.operator, timeout=CALL_TIMEOUT_S)


def earn_call(
    channel: grpc.aio.Channel, hotel: list[tuple[str, str]], member: str, amount_minor: int
) -> Callable[[], Awaitable[Any]]:
    stub = points_pb2_grpc.PointsServiceStub(channel)
    request = points_pb2.EarnPointsRequest(
        request_id=rid(), member=ref(member), purchase=purchase(amount_minor)
    )
    return lambda: stub.EarnPoints(request, metadata=hotel, timeout=CALL_TIMEOUT_S)


def pass_json(pkpass: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        loaded: dict[str, Any] = json.loads(archive.read("pass.json"))
        return loaded


def registration(serial: str, device: str) -> str:
    return f"/passkit/v1/devices/{device}/registrations/{PASS_TYPE_ID}/{serial}"


def auth(ctx: AppContext, serial: str) -> dict[str, str]:
    return {"Authorization": f"ApplePass {ctx.vault.pass_token(serial)}"}


async def post_status(
    phone: aiohttp.ClientSession, path: str, headers: dict[str, str], body: dict[str, Any]
) -> int | str:
    try:
        async with phone.post(path, json=body, headers=headers) as reply:
            if reply.status >= 500:
                return f"{reply.status} {await reply.text()}"
            return reply.status
    except aiohttp.ClientError as exc:
        return f"{type(exc).__name__}: {exc}"


async def count(ctx: AppContext, table: Any, *where: Any) -> int:
    async with ctx.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def carded_members(
    api: Api, channels: list[grpc.aio.Channel], n: int
) -> list[tuple[str, wallet_pb2.IssueWalletCardResponse]]:
    """n members, their cards issued all at once (the first tags taken concurrently)."""
    members = [await api.enroll(f"Member {i}") for i in range(n)]
    results = await fire(
        [issue_call(api, channels[i % len(channels)], m) for i, m in enumerate(members)]
    )
    expect_outcomes(results, {OK: n})
    return list(zip(members, results, strict=True))


# -- issuing ---------------------------------------------------------------------------------


async def test_concurrent_issues_for_one_member_make_one_card(
    ctx: AppContext, api: Api, channels: list[grpc.aio.Channel]
) -> None:
    _, key = await api.gateway.create_partner("grand-hotel")
    member = await api.enroll()
    await api.buy(api.gateway.auth(key), member, 10_000)
    calls = [issue_call(api, channels[i % CHANNELS], member) for i in range(20)]
    results = await fire(calls)
    expect_outcomes(results, {OK: 20})
    serials = {r.card.serial_number for r in results}
    assert len(serials) == 1, serials
    assert {pass_json(r.pkpass)["serialNumber"] for r in results} == serials
    assert {r.card_page_url for r in results} == {results[0].card_page_url}
    assert {r.card.balance_points for r in results} == {1_000}
    member_id = member.split("/")[1]
    assert await count(ctx, CARDS, CARDS.c.member_id == member_id) == 1
    # One mark: the new card's Google object is for the updater to create.
    assert await count(ctx, CHANGES) == 1


async def test_first_cards_of_many_members_at_once_get_distinct_tags(
    ctx: AppContext, api: Api, channels: list[grpc.aio.Channel]
) -> None:
    issued = await carded_members(api, channels, 20)
    assert len({r.card.serial_number for _, r in issued}) == 20
    async with ctx.database.connect() as conn:
        tags = list(await conn.scalars(select(CARDS.c.update_tag)))
    assert len(tags) == 20 and len(set(tags)) == 20, tags


# -- PassKit registrations -------------------------------------------------------------------


async def test_concurrent_registrations_of_one_device_and_pass(
    ctx: AppContext, api: Api, channels: list[grpc.aio.Channel], phone: aiohttp.ClientSession
) -> None:
    [(_, issued)] = await carded_members(api, channels, 1)
    serial = issued.card.serial_number
    path = registration(serial, "device-same")
    headers = auth(ctx, serial)
    statuses = await asyncio.gather(
        *(post_status(phone, path, headers, {"pushToken": f"token{i}"}) for i in range(20))
    )
    assert Counter(statuses) == Counter({201: 1, 200: 19}), Counter(statuses)
    assert await count(ctx, REGISTRATIONS) == 1
    assert await count(ctx, DEVICES) == 1
    async with ctx.database.connect() as conn:
        token = await conn.scalar(select(DEVICES.c.push_token))
    assert token in {f"token{i}" for i in range(20)}  # one of them won, whole


async def test_one_device_registers_ten_cards_at_once(
    ctx: AppContext, api: Api, channels: list[grpc.aio.Channel], phone: aiohttp.ClientSession
) -> None:
    issued = await carded_members(api, channels, 10)
    serials = [r.card.serial_number for _, r in issued]
    statuses = await asyncio.gather(
        *(
            post_status(
                phone, registration(s, "device-many"), auth(ctx, s), {"pushToken": "feed01"}
            )
            for s in serials
        )
    )
    assert Counter(statuses) == Counter({201: 10}), Counter(statuses)
    assert await count(ctx, REGISTRATIONS, REGISTRATIONS.c.device_library_id == "device-many") == 10
    assert await count(ctx, DEVICES) == 1
    async with phone.get(f"/passkit/v1/devices/device-many/registrations/{PASS_TYPE_ID}") as reply:
        assert reply.status == 200
        listed = await reply.json()
    assert sorted(listed["serialNumbers"]) == sorted(serials)


# -- the updater after a burst ---------------------------------------------------------------


async def test_a_burst_of_earns_is_one_push_per_device(
    ctx: AppContext,
    api: Api,
    served: WalletWeb,
    channels: list[grpc.aio.Channel],
    phone: aiohttp.ClientSession,
) -> None:
    rig = served.rig
    _, key = await api.gateway.create_partner("grand-hotel")
    hotel = api.gateway.auth(key)
    member = await api.enroll()
    await api.buy(hotel, member, 10_000)  # 1,000 points
    issued = (await fire([issue_call(api, channels[0], member)]))[0]
    serial = issued.card.serial_number
    rig.google.saved.add(issued.card.google_object_id)
    async with ctx.database.connect() as conn:
        issued_version = (await conn.execute(select(CHANGES.c.version))).scalar_one()
    tokens = {f"burst-device-{i}": f"beef{i:04d}" for i in range(3)}
    for device, token in tokens.items():
        status = await post_status(
            phone, registration(serial, device), auth(ctx, serial), {"pushToken": token}
        )
        assert status == 201

    results = await fire(
        [earn_call(channels[i % CHANNELS], hotel, member, 1_000) for i in range(30)]
    )
    expect_outcomes(results, {OK: 30})
    final = (await api.balance(member)).available_points
    assert final == 1_000 + 30 * 100
    member_id = member.split("/")[1]
    async with ctx.database.connect() as conn:
        mark = (await conn.execute(select(CHANGES))).one()
    assert mark.member_id == member_id and mark.version == issued_version + 30

    done = await CardUpdater(ctx, rig.wallet).run_once()
    assert done == Round(cards=1, pushes=3)
    assert Counter(p.token for p in rig.apns.pushes) == Counter(tokens.values())
    [(_, patch)] = rig.google.patches
    assert patch["loyaltyPoints"]["balance"] == {"int": final}
    assert await count(ctx, CHANGES) == 0
    assert await CardUpdater(ctx, rig.wallet).run_once() == Round()

    async with phone.get(
        f"/passkit/v1/passes/{PASS_TYPE_ID}/{serial}", headers=auth(ctx, serial)
    ) as reply:
        assert reply.status == 200
        card = pass_json(await reply.read())
    assert card["storeCard"]["primaryFields"][0]["value"] == final


async def test_updaters_racing_each_other_push_every_card_once(
    ctx: AppContext,
    api: Api,
    served: WalletWeb,
    channels: list[grpc.aio.Channel],
    phone: aiohttp.ClientSession,
) -> None:
    rig = served.rig
    _, key = await api.gateway.create_partner("grand-hotel")
    hotel = api.gateway.auth(key)
    issued = await carded_members(api, channels, 12)
    for i, (_, reply) in enumerate(issued):
        serial = reply.card.serial_number
        status = await post_status(
            phone, registration(serial, f"race-{i}"), auth(ctx, serial), {"pushToken": f"ace{i}"}
        )
        assert status == 201
    results = await fire(
        [earn_call(channels[i % CHANNELS], hotel, m, 500) for i, (m, _) in enumerate(issued)]
    )
    expect_outcomes(results, {OK: 12})
    rounds = await asyncio.gather(*(CardUpdater(ctx, rig.wallet).run_once() for _ in range(4)))
    assert sum(r.cards for r in rounds) == 12, rounds
    assert sum(r.pushes for r in rounds) == 12 and not any(r.failed for r in rounds), rounds
    assert Counter(p.token for p in rig.apns.pushes) == Counter(f"ace{i}" for i in range(12))
    assert await count(ctx, CHANGES) == 0


async def test_earns_during_updater_rounds_end_with_the_final_balance_pushed(
    ctx: AppContext,
    api: Api,
    served: WalletWeb,
    channels: list[grpc.aio.Channel],
    phone: aiohttp.ClientSession,
) -> None:
    rig = served.rig
    _, key = await api.gateway.create_partner("grand-hotel")
    hotel = api.gateway.auth(key)
    [(member, issued)] = await carded_members(api, channels, 1)
    serial = issued.card.serial_number
    rig.google.saved.add(issued.card.google_object_id)
    status = await post_status(
        phone, registration(serial, "busy-phone"), auth(ctx, serial), {"pushToken": "b0b"}
    )
    assert status == 201
    stop = asyncio.Event()

    async def updater() -> None:
        while not stop.is_set():
            await CardUpdater(ctx, rig.wallet).run_once()
            await asyncio.sleep(0)

    running = asyncio.create_task(updater())
    try:
        results = await fire(
            [earn_call(channels[i % CHANNELS], hotel, member, 1_000) for i in range(30)]
        )
    finally:
        stop.set()
        await running
    expect_outcomes(results, {OK: 30})
    # Drain what the racing rounds left (a bumped mark waits CARD_PUSH_INTERVAL_S).
    for _ in range(5):
        ctx.clock.advance(timedelta(seconds=CARD_PUSH_INTERVAL_S))
        if not (await CardUpdater(ctx, rig.wallet).run_once()).cards:
            break
    assert await count(ctx, CHANGES) == 0
    final = (await api.balance(member)).available_points
    assert final == 30 * 100
    assert rig.google.patches[-1][1]["loyaltyPoints"]["balance"] == {"int": final}
    async with ctx.database.connect() as conn:
        row = (await conn.execute(select(CARDS))).one()
    assert row.pushed_tag == row.update_tag
    assert json.loads(row.content)["balance_points"] == final
    async with phone.get(
        f"/passkit/v1/passes/{PASS_TYPE_ID}/{serial}", headers=auth(ctx, serial)
    ) as reply:
        assert pass_json(await reply.read())["storeCard"]["primaryFields"][0]["value"] == final


# -- a device adding one pass while deleting another -----------------------------------------

RACE_ROUNDS = 30
"""Each round races one unregister with one register; the bug shows in about half of them."""


async def test_a_device_deleting_one_pass_while_adding_another(
    ctx: AppContext, api: Api, channels: list[grpc.aio.Channel], phone: aiohttp.ClientSession
) -> None:
    [(_, old), (_, new)] = await carded_members(api, channels, 2)
    gone, added = old.card.serial_number, new.card.serial_number

    async def unregister(device: str) -> int | str:
        async with phone.delete(registration(gone, device), headers=auth(ctx, gone)) as reply:
            return reply.status if reply.status < 500 else f"{reply.status} {await reply.text()}"

    for i in range(RACE_ROUNDS):
        device = f"swap-{i}"
        body = {"pushToken": f"5a{i:04d}"}
        assert await post_status(phone, registration(gone, device), auth(ctx, gone), body) == 201
        outcome = list(
            await asyncio.gather(
                unregister(device),
                post_status(phone, registration(added, device), auth(ctx, added), body),
            )
        )
        assert outcome == [200, 201], (i, outcome)
        async with ctx.database.connect() as conn:
            held = set(
                await conn.scalars(
                    select(REGISTRATIONS.c.serial_number).where(
                        REGISTRATIONS.c.device_library_id == device
                    )
                )
            )
        assert held == {added}, (i, held)


async def test_a_device_registering_with_a_new_token_while_its_old_one_is_forgotten(
    ctx: AppContext, api: Api, channels: list[grpc.aio.Channel]
) -> None:
    """APNs calls a token dead while the phone registers again with a new one: in any order,
    the phone ends up registered with its new token (forgetting locks the device row, and
    deletes only while the row still has the dead token)."""
    from wallet.service import passkit
    from wallet.service.updates import forget_devices

    [(_, issued)] = await carded_members(api, channels, 1)
    serial = issued.card.serial_number
    header = auth(ctx, serial)["Authorization"]

    async def register(device: str, token: str) -> None:
        async with ctx.database.begin() as conn:
            body = json.dumps({"pushToken": token}).encode()
            await passkit.register(conn, ctx, device, PASS_TYPE_ID, serial, header, body)

    async def forget(device: str, token: str) -> None:
        async with ctx.database.begin() as conn:
            await forget_devices(conn, {device: token})

    for i in range(RACE_ROUNDS):
        device = f"restored-{i}"
        await register(device, "01d")
        await asyncio.gather(forget(device, "01d"), register(device, "4e3"))
        async with ctx.database.connect() as conn:
            token = await conn.scalar(
                select(DEVICES.c.push_token).where(DEVICES.c.device_library_id == device)
            )
        assert token == "4e3", (i, "the device registered with a new token was forgotten")
        assert await count(ctx, REGISTRATIONS, REGISTRATIONS.c.device_library_id == device) == 1
