"""RewardService: the catalog, redemptions for members, and vouchers at the partner's counter."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import rewards_pb2 as pb
from coalition.v1 import rewards_pb2_grpc
from gateway.domain import errors
from gateway.domain.partners import parse_partner_name
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import (
    reward_from_proto,
    reward_to_proto,
    transaction_to_proto,
    voucher_to_proto,
)
from gateway.service import partners as partner_service
from gateway.service import rewards


class RewardServicer(Servicer, rewards_pb2_grpc.RewardServiceServicer):
    def _publisher(self, parent: str) -> str:
        """The partner a reward is published under: the caller itself, or any for the operator."""
        caller = self.caller()
        if not parent:
            if caller.partner_id is None:
                raise errors.InvalidArgument.on_field(
                    "parent", "MISSING_PARENT", "the operator names the publishing partner"
                )
            return caller.partner_id
        partner_id = parse_partner_name(parent, "parent")
        if caller.partner_id is not None and caller.partner_id != partner_id:
            raise errors.PermissionDenied(
                "PARTNER_NOT_AUTHORIZED",
                "a partner publishes rewards only under its own name",
                {"parent": parent},
            )
        return partner_id

    @rpc
    async def CreateReward(
        self, request: pb.CreateRewardRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateRewardResponse:
        partner_id = self._publisher(request.parent)
        draft = reward_from_proto(request.reward)

        async def work(conn: AsyncConnection) -> pb.CreateRewardResponse:
            await partner_service.get(conn, partner_id)
            reward = await rewards.create(conn, self.ctx, partner_id, draft)
            return pb.CreateRewardResponse(reward=reward_to_proto(reward))

        return await self.once("CreateReward", request, pb.CreateRewardResponse, work)

    @rpc
    async def ListRewards(
        self, request: pb.ListRewardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRewardsResponse:
        partner_id = parse_partner_name(request.partner, "partner") if request.partner else None
        async with self.read() as conn:
            page, token = await rewards.list_page(
                conn,
                self.ctx,
                partner_id,
                request.available_only,
                request.page_size,
                request.page_token,
            )
        return pb.ListRewardsResponse(
            rewards=[reward_to_proto(r) for r in page], next_page_token=token
        )

    @rpc
    async def RedeemReward(
        self, request: pb.RedeemRewardRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeemRewardResponse:
        rewards.parse_reward_name(request.reward)

        async def work(conn: AsyncConnection) -> pb.RedeemRewardResponse:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            voucher, txn = await rewards.redeem(conn, self.ctx, member.id, request.reward)
            return pb.RedeemRewardResponse(
                voucher=voucher_to_proto(voucher, self.ctx.clock.now()),
                transaction=transaction_to_proto(txn, member.tier),
            )

        return await self.once("RedeemReward", request, pb.RedeemRewardResponse, work)

    @rpc
    async def ValidateVoucher(
        self, request: pb.ValidateVoucherRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateVoucherResponse:
        async with self.read() as conn:
            voucher = await rewards.find_voucher(conn, self.caller().partner_id, request.code)
        now = self.ctx.clock.now()
        return pb.ValidateVoucherResponse(
            voucher=voucher_to_proto(voucher, now), valid=voucher.usable(now)
        )

    @rpc
    async def ConsumeVoucher(
        self, request: pb.ConsumeVoucherRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConsumeVoucherResponse:
        async def work(conn: AsyncConnection) -> pb.ConsumeVoucherResponse:
            voucher = await rewards.consume(conn, self.ctx, self.caller().partner_id, request.code)
            return pb.ConsumeVoucherResponse(
                voucher=voucher_to_proto(voucher, self.ctx.clock.now())
            )

        return await self.once("ConsumeVoucher", request, pb.ConsumeVoucherResponse, work)
