"""Thin helpers over the real DonationService stub for the donation tests.

Every mutation gets a fresh request_id unless the test passes one; every call takes the caller's
metadata explicitly, so a test reads as who did what.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from earn_api import Meta, ref, rid, ts

from coalition.v1 import donations_pb2, donations_pb2_grpc, partners_pb2

MONTHLY = donations_pb2.PLEDGE_KIND_MONTHLY
EXPIRING = donations_pb2.PLEDGE_KIND_EXPIRING


def profile(
    minimum: int = 100, value_per_thousand_minor: int = 10_00, **fields: Any
) -> partners_pb2.CharityProfile:
    """A charity profile: USD 10.00 per 1,000 points and a 100-point minimum unless told."""
    return partners_pb2.CharityProfile(
        minimum_donation_points=minimum,
        value_per_thousand_points_minor=value_per_thousand_minor,
        **fields,
    )


class Donations:
    """The DonationService stub on the gateway's channel (or a given one)."""

    def __init__(self, gateway: Any, channel: Any = None) -> None:
        self.gateway = gateway
        self.stub = donations_pb2_grpc.DonationServiceStub(channel or gateway.channel)

    @property
    def operator(self) -> Meta:
        return list(self.gateway.as_operator)

    async def charity(self, charity_id: str, display_name: str = "", **fields: Any) -> str:
        """Create a charity partner; its API key's metadata."""
        fields.setdefault("charity", profile())
        _, key = await self.gateway.create_partner(
            charity_id, "CHARITY", display_name=display_name or charity_id.title(), **fields
        )
        return key

    def donate_call(
        self, meta: Meta, member: str, charity: str, points: int, request_id: str = ""
    ) -> Any:
        return self.stub.DonatePoints(
            donations_pb2.DonatePointsRequest(
                request_id=request_id or rid(),
                member=ref(member),
                charity=charity,
                points=points,
            ),
            metadata=meta,
        )

    async def donate(
        self, meta: Meta, member: str, charity: str, points: int
    ) -> donations_pb2.DonatePointsResponse:
        reply: donations_pb2.DonatePointsResponse = await self.donate_call(
            meta, member, charity, points
        )
        return reply

    def list_call(self, meta: Meta, parent: str, page_size: int = 0, token: str = "") -> Any:
        return self.stub.ListDonations(
            donations_pb2.ListDonationsRequest(
                parent=parent, page_size=page_size, page_token=token
            ),
            metadata=meta,
        )

    async def listing(self, meta: Meta, parent: str, page_size: int = 100) -> list[Any]:
        """Every page of ListDonations, in the server's order."""
        found: list[donations_pb2.Donation] = []
        token = ""
        while True:
            reply = await self.list_call(meta, parent, page_size, token)
            found.extend(reply.donations)
            token = reply.next_page_token
            if not token:
                return found

    async def charities(self, meta: Meta, cause: str = "", page_size: int = 100) -> list[Any]:
        found: list[donations_pb2.Charity] = []
        token = ""
        while True:
            reply = await self.stub.ListCharities(
                donations_pb2.ListCharitiesRequest(
                    cause=cause, page_size=page_size, page_token=token
                ),
                metadata=meta,
            )
            found.extend(reply.charities)
            token = reply.next_page_token
            if not token:
                return found

    def receipt_call(self, meta: Meta, name: str, fmt: int = 0) -> Any:
        return self.stub.GetDonationReceipt(
            donations_pb2.GetDonationReceiptRequest(name=name, format=fmt), metadata=meta
        )

    def matching_call(
        self,
        meta: Meta,
        charity: str,
        budget: int,
        end: datetime,
        percent: int = 100,
        sponsor: str = "",
        start: datetime | None = None,
    ) -> Any:
        campaign = donations_pb2.MatchingCampaign(
            sponsor=sponsor, percent=percent, budget_points=budget, end_time=ts(end)
        )
        if start is not None:
            campaign.start_time.CopyFrom(ts(start))
        return self.stub.CreateMatchingCampaign(
            donations_pb2.CreateMatchingCampaignRequest(
                request_id=rid(), parent=charity, matching_campaign=campaign
            ),
            metadata=meta,
        )

    async def matching(
        self, meta: Meta, charity: str, budget: int, end: datetime, **kw: Any
    ) -> Any:
        reply = await self.matching_call(meta, charity, budget, end, **kw)
        return reply.matching_campaign

    def pledge_call(self, meta: Meta, member: str, charity: str, kind: int, points: int = 0) -> Any:
        return self.stub.CreatePledge(
            donations_pb2.CreatePledgeRequest(
                request_id=rid(),
                member=ref(member),
                pledge=donations_pb2.Pledge(charity=charity, kind=kind, points=points),
            ),
            metadata=meta,
        )
