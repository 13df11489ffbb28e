"""WalletService: a member's wallet card for Apple Wallet and Google Wallet."""

from __future__ import annotations

import asyncio

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import wallet_pb2 as pb
from coalition.v1 import wallet_pb2_grpc
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import timestamp
from gateway.service.context import AppContext
from wallet.config import Wallet
from wallet.domain import card as dc
from wallet.service import cards


def card_to_proto(wallet: Wallet, card: cards.CardView) -> pb.WalletCard:
    return pb.WalletCard(
        name=dc.card_name(card.member_id),
        serial_number=card.serial_number,
        pass_type_identifier=card.pass_type_id,
        update_time=timestamp(card.update_time),
        registered_device_count=card.registered_devices,
        balance_points=card.content.balance_points,
        tier=card.content.tier_code,
        google_object_id=wallet.program.google_object_id(card.serial_number),
        create_time=timestamp(card.create_time),
    )


class WalletServicer(Servicer, wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, ctx: AppContext, wallet: Wallet) -> None:
        super().__init__(ctx)
        self.wallet = wallet

    @rpc
    async def IssueWalletCard(
        self, request: pb.IssueWalletCardRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueWalletCardResponse:
        if not self.wallet.configured:
            raise cards.not_configured()

        async def work(conn: AsyncConnection) -> pb.IssueWalletCardResponse:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            card = await cards.issue(conn, self.ctx, self.wallet, member)
            # Only the card is kept for replays: the pass and links carry the card's secret.
            return pb.IssueWalletCardResponse(card=card_to_proto(self.wallet, card))

        first = await self.once("IssueWalletCard", request, pb.IssueWalletCardResponse, work)
        # The pass and links, for the first call and any replay alike, from what the card
        # shows now, signed off the event loop and outside the issuing transaction.
        async with self.read() as conn:
            card = await cards.get(conn, first.card.name.split("/")[1])
        issued = await asyncio.to_thread(cards.rendered, self.ctx, self.wallet, card)
        return pb.IssueWalletCardResponse(
            pkpass=issued.pkpass,
            google_save_url=issued.google_save_url,
            card=first.card,
            card_page_url=issued.page_url,
        )

    @rpc
    async def GetWalletCard(
        self, request: pb.GetWalletCardRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWalletCardResponse:
        async with self.read() as conn:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            card = await cards.get(conn, member.id)
        return pb.GetWalletCardResponse(card=card_to_proto(self.wallet, card))
