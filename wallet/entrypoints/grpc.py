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


def _redacted(response: pb.IssueWalletCardResponse) -> pb.IssueWalletCardResponse:
    """What the idempotency store keeps: the card, not the pass and links (they carry the card's
    secret); a replay rebuilds them."""
    return pb.IssueWalletCardResponse(card=response.card)


class WalletServicer(Servicer, wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, ctx: AppContext, wallet: Wallet) -> None:
        super().__init__(ctx)
        self.wallet = wallet

    def _response(self, issued: cards.IssuedCard) -> pb.IssueWalletCardResponse:
        return pb.IssueWalletCardResponse(
            pkpass=issued.pkpass,
            google_save_url=issued.google_save_url,
            card=card_to_proto(self.wallet, issued.card),
            card_page_url=issued.page_url,
        )

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
            issued = await cards.issue(conn, self.ctx, self.wallet, member)
            return self._response(issued)

        response = await self.once(
            "IssueWalletCard", request, pb.IssueWalletCardResponse, work, redact=_redacted
        )
        if response.card_page_url:
            return response
        # A replay: the same card, with its pass and links rebuilt from what it shows now.
        async with self.read() as conn:
            card = await cards.get(conn, response.card.name.split("/")[1])
        issued = await asyncio.to_thread(cards.rendered, self.ctx, self.wallet, card)
        return pb.IssueWalletCardResponse(
            pkpass=issued.pkpass,
            google_save_url=issued.google_save_url,
            card=response.card,
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
