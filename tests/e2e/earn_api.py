"""Thin helpers over the real stubs for the earn rules, campaign and tier tests.

Every mutation gets a fresh request_id unless the test passes one; every call takes the caller's
metadata explicitly, so a test reads as who did what.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2

from coalition.v1 import (
    common_pb2,
    members_pb2,
    members_pb2_grpc,
    partners_pb2,
    partners_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
)
from gateway.service import outbox

Meta = list[tuple[str, str]]

WEEKEND = [partners_pb2.DAY_OF_WEEK_SATURDAY, partners_pb2.DAY_OF_WEEK_SUNDAY]


def rid() -> str:
    return uuid.uuid4().hex


def ref(member: str) -> common_pb2.MemberRef:
    return common_pb2.MemberRef(member=member)


def purchase(amount_minor: int, currency: str = "USD", category: str = "") -> common_pb2.Purchase:
    return common_pb2.Purchase(amount_minor=amount_minor, currency_code=currency, category=category)


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def when(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def parts(message: Any) -> list[tuple[str, int]]:
    """(kind, points) of a transaction's or a quote's breakdown, in evaluation order."""
    return [(c.kind, c.points) for c in message.breakdown]


def progress(balance: common_pb2.Balance) -> tuple[str, str, int, int]:
    """(tier, next_tier, points_to_next_tier, qualifying_points)."""
    return (
        balance.tier,
        balance.next_tier,
        balance.points_to_next_tier,
        balance.qualifying_points,
    )


def campaign(end: datetime | None, start: datetime | None = None, **fields: Any) -> Any:
    """A Campaign message; display_name defaults to "Double points"."""
    fields.setdefault("display_name", "Double points")
    message = partners_pb2.Campaign(**fields)
    if end is not None:
        message.end_time.CopyFrom(ts(end))
    if start is not None:
        message.start_time.CopyFrom(ts(start))
    return message


async def tier_events(ctx: Any, member: str) -> list[outbox.Event]:
    """The member's TierChanged events, oldest first, read from the outbox."""
    async with ctx.database.connect() as conn:
        return await outbox.events(conn, subject=member, type_=outbox.TIER_CHANGED)


class Api:
    """The gateway's points, member and partner stubs on one channel."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.points = points_pb2_grpc.PointsServiceStub(gateway.channel)
        self.members = members_pb2_grpc.MemberServiceStub(gateway.channel)
        self.partners = partners_pb2_grpc.PartnerServiceStub(gateway.channel)

    @property
    def operator(self) -> Meta:
        return list(self.gateway.as_operator)

    # -- members ---------------------------------------------------------------------------

    async def enroll(self, name: str = "Ada Lovelace") -> str:
        reply: members_pb2.EnrollMemberResponse = await self.members.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=rid(), member=members_pb2.Member(display_name=name)
            ),
            metadata=self.operator,
        )
        return reply.member.name

    async def balance(self, member: str) -> common_pb2.Balance:
        reply: members_pb2.GetBalanceResponse = await self.members.GetBalance(
            members_pb2.GetBalanceRequest(member=ref(member)), metadata=self.operator
        )
        return reply.balance

    async def get_member(self, member: str) -> members_pb2.GetMemberResponse:
        reply: members_pb2.GetMemberResponse = await self.members.GetMember(
            members_pb2.GetMemberRequest(name=member), metadata=self.operator
        )
        return reply

    async def history(self, member: str) -> list[common_pb2.PointsTransaction]:
        found: list[common_pb2.PointsTransaction] = []
        token = ""
        while True:
            reply = await self.members.ListTransactions(
                members_pb2.ListTransactionsRequest(
                    member=ref(member), page_size=100, page_token=token
                ),
                metadata=self.operator,
            )
            found.extend(reply.transactions)
            token = reply.next_page_token
            if not token:
                return found

    # -- points ----------------------------------------------------------------------------

    def earn_call(self, meta: Meta, member: str, **fields: Any) -> Any:
        fields.setdefault("request_id", rid())
        return self.points.EarnPoints(
            points_pb2.EarnPointsRequest(member=ref(member), **fields), metadata=meta
        )

    async def earn(self, meta: Meta, member: str, **fields: Any) -> common_pb2.PointsTransaction:
        reply: points_pb2.EarnPointsResponse = await self.earn_call(meta, member, **fields)
        return reply.transaction

    async def buy(self, meta: Meta, member: str, amount_minor: int, **fields: Any) -> Any:
        """An earn for a USD purchase (or fields["purchase"] overridden by the caller)."""
        return await self.earn(meta, member, purchase=purchase(amount_minor), **fields)

    def quote_call(self, meta: Meta, member: str, **fields: Any) -> Any:
        return self.points.QuoteEarn(
            points_pb2.QuoteEarnRequest(member=ref(member), **fields), metadata=meta
        )

    def reverse_call(self, meta: Meta, name: str, points: int = 0) -> Any:
        return self.points.ReverseTransaction(
            points_pb2.ReverseTransactionRequest(request_id=rid(), transaction=name, points=points),
            metadata=meta,
        )

    # -- partners and campaigns ------------------------------------------------------------

    def update_partner_call(self, partner: str, mask: list[str], **fields: Any) -> Any:
        return self.partners.UpdatePartner(
            partners_pb2.UpdatePartnerRequest(
                request_id=rid(),
                partner=partners_pb2.Partner(name=partner, **fields),
                update_mask=field_mask_pb2.FieldMask(paths=mask),
            ),
            metadata=self.operator,
        )

    def create_campaign_call(
        self,
        parent: str,
        message: Any,
        request_id: str = "",
        meta: Meta | None = None,
    ) -> Any:
        return self.partners.CreateCampaign(
            partners_pb2.CreateCampaignRequest(
                request_id=request_id or rid(), parent=parent, campaign=message
            ),
            metadata=meta or self.operator,
        )

    async def create_campaign(self, parent: str, message: Any) -> partners_pb2.Campaign:
        reply: partners_pb2.CreateCampaignResponse = await self.create_campaign_call(
            parent, message
        )
        return reply.campaign

    def list_campaigns_call(
        self, parent: str, page_size: int = 0, page_token: str = "", meta: Meta | None = None
    ) -> Any:
        return self.partners.ListCampaigns(
            partners_pb2.ListCampaignsRequest(
                parent=parent, page_size=page_size, page_token=page_token
            ),
            metadata=meta or self.operator,
        )

    async def campaigns(self, parent: str) -> dict[str, partners_pb2.Campaign]:
        """Every campaign of the partner, by name (all pages)."""
        found: dict[str, partners_pb2.Campaign] = {}
        token = ""
        while True:
            reply = await self.list_campaigns_call(parent, 100, token)
            found.update((c.name, c) for c in reply.campaigns)
            token = reply.next_page_token
            if not token:
                return found

    def end_campaign_call(self, name: str, request_id: str = "", meta: Meta | None = None) -> Any:
        return self.partners.EndCampaign(
            partners_pb2.EndCampaignRequest(request_id=request_id or rid(), name=name),
            metadata=meta or self.operator,
        )
