"""Thin helpers over the real RewardService stub for the rewards and reward concurrency tests.

Every mutation gets a fresh request_id unless the test passes one; every call takes the caller's
metadata explicitly, so a test reads as who did what.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from earn_api import Meta, rid, ts
from google.protobuf import duration_pb2

from coalition.v1 import common_pb2, rewards_pb2, rewards_pb2_grpc

CODE_SHOWN = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}")
"""How a voucher code is shown: Crockford base-32 (no I, L, O, U) in four groups of four."""

FREE_NIGHT = rewards_pb2.Reward.KIND_FREE_NIGHT
ISSUED = rewards_pb2.Voucher.STATE_ISSUED
CONSUMED = rewards_pb2.Voucher.STATE_CONSUMED
EXPIRED = rewards_pb2.Voucher.STATE_EXPIRED
REFUNDED = rewards_pb2.Voucher.STATE_REFUNDED


def reward(
    points_price: int = 1_000,
    stock: int = 10,
    validity: timedelta = timedelta(days=30),
    start: datetime | None = None,
    end: datetime | None = None,
    **fields: Any,
) -> rewards_pb2.Reward:
    """A Reward message; display_name defaults to "Free night", kind to FREE_NIGHT."""
    fields.setdefault("display_name", "Free night")
    fields.setdefault("kind", FREE_NIGHT)
    message = rewards_pb2.Reward(points_price=points_price, stock=stock, **fields)
    message.voucher_validity.CopyFrom(duration_pb2.Duration(seconds=int(validity.total_seconds())))
    if start is not None:
        message.start_time.CopyFrom(ts(start))
    if end is not None:
        message.end_time.CopyFrom(ts(end))
    return message


class Rewards:
    """The RewardService stub on the gateway's channel (or a given one)."""

    def __init__(self, gateway: Any, channel: Any = None) -> None:
        self.gateway = gateway
        self.stub = rewards_pb2_grpc.RewardServiceStub(channel or gateway.channel)

    @property
    def operator(self) -> Meta:
        return list(self.gateway.as_operator)

    def create_call(
        self, meta: Meta, message: rewards_pb2.Reward, parent: str = "", request_id: str = ""
    ) -> Any:
        return self.stub.CreateReward(
            rewards_pb2.CreateRewardRequest(
                request_id=request_id or rid(), parent=parent, reward=message
            ),
            metadata=meta,
        )

    async def create(
        self, meta: Meta, message: rewards_pb2.Reward, parent: str = ""
    ) -> rewards_pb2.Reward:
        reply: rewards_pb2.CreateRewardResponse = await self.create_call(meta, message, parent)
        return reply.reward

    def list_call(self, meta: Meta, **fields: Any) -> Any:
        return self.stub.ListRewards(rewards_pb2.ListRewardsRequest(**fields), metadata=meta)

    async def catalog(self, meta: Meta, page_size: int = 100, **fields: Any) -> list[Any]:
        """Every page of ListRewards, in the server's order."""
        found: list[rewards_pb2.Reward] = []
        token = ""
        while True:
            reply = await self.list_call(meta, page_size=page_size, page_token=token, **fields)
            assert len(reply.rewards) <= page_size
            found.extend(reply.rewards)
            token = reply.next_page_token
            if not token:
                return found

    async def get(self, name: str) -> rewards_pb2.Reward:
        partner = "/".join(name.split("/")[:2])
        found: list[rewards_pb2.Reward] = [
            r for r in await self.catalog(self.operator, partner=partner) if r.name == name
        ]
        assert len(found) == 1, f"{name} is listed {len(found)} times"
        return found[0]

    def redeem_call(
        self, meta: Meta, member: str, reward_name: str, request_id: str = "", **kw: Any
    ) -> Any:
        return self.stub.RedeemReward(
            rewards_pb2.RedeemRewardRequest(
                request_id=request_id or rid(),
                member=common_pb2.MemberRef(member=member),
                reward=reward_name,
            ),
            metadata=meta,
            **kw,
        )

    async def redeem(
        self, meta: Meta, member: str, reward_name: str, request_id: str = ""
    ) -> rewards_pb2.RedeemRewardResponse:
        reply: rewards_pb2.RedeemRewardResponse = await self.redeem_call(
            meta, member, reward_name, request_id
        )
        return reply

    def validate_call(self, meta: Meta, code: str) -> Any:
        return self.stub.ValidateVoucher(
            rewards_pb2.ValidateVoucherRequest(code=code), metadata=meta
        )

    async def validate(self, meta: Meta, code: str) -> rewards_pb2.ValidateVoucherResponse:
        reply: rewards_pb2.ValidateVoucherResponse = await self.validate_call(meta, code)
        return reply

    def consume_call(self, meta: Meta, code: str, request_id: str = "", **kw: Any) -> Any:
        return self.stub.ConsumeVoucher(
            rewards_pb2.ConsumeVoucherRequest(request_id=request_id or rid(), code=code),
            metadata=meta,
            **kw,
        )

    async def consume(self, meta: Meta, code: str, request_id: str = "") -> rewards_pb2.Voucher:
        reply: rewards_pb2.ConsumeVoucherResponse = await self.consume_call(meta, code, request_id)
        return reply.voucher
