"""DonationService: charities, donations and receipts, matching campaigns, pledges."""

from __future__ import annotations

import asyncio

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import donations_pb2 as pb
from coalition.v1 import donations_pb2_grpc
from gateway.adapters import documents
from gateway.domain import donations as dd
from gateway.domain import errors
from gateway.domain.members import parse_member_name
from gateway.domain.partners import PartnerType, parse_partner_name
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import money, time_from_proto, timestamp, transaction_to_proto
from gateway.service import donations
from gateway.service.context import AppContext

_KIND = {k: pb.DonationKind.Value(f"DONATION_KIND_{k.value}") for k in dd.DonationKind}
_PLEDGE_KIND = {k: pb.PledgeKind.Value(f"PLEDGE_KIND_{k.value}") for k in dd.PledgeKind}
_PLEDGE_KIND_FROM = {v: k for k, v in _PLEDGE_KIND.items()}


def charity_to_proto(listed: donations.ListedCharity) -> pb.Charity:
    partner, matching = listed.partner, listed.matching
    profile = partner.settings.charity
    assert profile is not None
    return pb.Charity(
        name=f"charities/{partner.id}",
        display_name=partner.settings.display_name,
        description=profile.description,
        causes=list(profile.causes),
        minimum_donation_points=profile.minimum_donation_points,
        value_per_thousand_points=money(
            profile.value_per_thousand_minor, partner.settings.settlement_currency_code
        ),
        matching_sponsor=f"partners/{matching.sponsor_id}" if matching else "",
        matching_percent=matching.percent if matching else 0,
    )


def donation_to_proto(donation: dd.Donation) -> pb.Donation:
    return pb.Donation(
        name=donation.name,
        member=f"members/{donation.member_id}",
        charity=f"charities/{donation.charity_id}",
        points=donation.points,
        matched_points=donation.matched_points,
        matching_sponsor=f"partners/{donation.sponsor_id}" if donation.sponsor_id else "",
        value=money(donation.value_minor, donation.currency),
        matched_value=money(donation.matched_value_minor, donation.currency),
        receipt_number=donation.receipt_number,
        create_time=timestamp(donation.create_time),
        transaction=f"members/{donation.member_id}/transactions/{donation.transaction_id}",
        kind=_KIND[donation.kind],
        pledge=f"members/{donation.member_id}/pledges/{donation.pledge_id}"
        if donation.pledge_id
        else "",
    )


def receipt_to_proto(receipt: dd.Receipt) -> pb.DonationReceipt:
    return pb.DonationReceipt(
        receipt_number=receipt.receipt_number,
        donor_name=receipt.donor_name,
        charity_display_name=receipt.charity_display_name,
        donate_time=timestamp(receipt.donate_time),
        points=receipt.points,
        matched_points=receipt.matched_points,
        value=money(receipt.value_minor, receipt.currency),
        matched_value=money(receipt.matched_value_minor, receipt.currency),
        donation=receipt.donation,
        charity=receipt.charity,
        matching_sponsor_display_name=receipt.sponsor_display_name,
    )


def matching_to_proto(campaign: dd.MatchingCampaign) -> pb.MatchingCampaign:
    return pb.MatchingCampaign(
        name=campaign.name,
        sponsor=f"partners/{campaign.sponsor_id}",
        percent=campaign.percent,
        budget_points=campaign.budget_points,
        spent_points=campaign.spent_points,
        start_time=timestamp(campaign.start_time),
        end_time=timestamp(campaign.end_time),
        stop_time=timestamp(campaign.stop_time),
        create_time=timestamp(campaign.create_time),
    )


def pledge_to_proto(pledge: dd.Pledge) -> pb.Pledge:
    return pb.Pledge(
        name=pledge.name,
        charity=f"charities/{pledge.charity_id}",
        kind=_PLEDGE_KIND[pledge.kind],
        points=pledge.points,
        next_donate_time=timestamp(pledge.next_run_time),
        create_time=timestamp(pledge.create_time),
        cancel_time=timestamp(pledge.cancel_time),
        partner=f"partners/{pledge.partner_id}" if pledge.partner_id else "",
    )


def _parent(parent: str) -> tuple[str, str]:
    """("charities", id) or ("members", id) of a ListDonations parent."""
    try:
        if parent.startswith("charities/"):
            return "charities", dd.parse_charity_name(parent, "parent")
        if parent.startswith("members/"):
            return "members", parse_member_name(parent, "parent")
    except errors.InvalidArgument:
        pass
    raise errors.InvalidArgument.on_field(
        "parent", "INVALID_PARENT", 'expected "members/{member}" or "charities/{charity}"'
    )


class DonationServicer(Servicer, donations_pb2_grpc.DonationServiceServicer):
    def __init__(self, ctx: AppContext) -> None:
        super().__init__(ctx)
        self.font = documents.find_unicode_font()

    def _donor_side(self) -> str | None:
        """The partner acting for a member (None: the operator); charities only receive."""
        caller = self.caller()
        if caller.partner_type == PartnerType.CHARITY.value:
            raise errors.PermissionDenied(
                "PARTNER_NOT_AUTHORIZED", "charities receive donations; they do not make them"
            )
        return caller.partner_id

    def _charity_side(self, charity_id: str) -> None:
        """A charity reads only its own donations; partners other than charities none."""
        caller = self.caller()
        if not caller.is_operator and caller.partner_id != charity_id:
            raise errors.PermissionDenied(
                "PARTNER_NOT_AUTHORIZED",
                "a charity reads only its own donations",
                {"charity": f"charities/{charity_id}"},
            )

    @rpc
    async def ListCharities(
        self, request: pb.ListCharitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCharitiesResponse:
        async with self.read() as conn:
            page, token = await donations.list_charities(
                conn, self.ctx, request.cause, request.page_size, request.page_token
            )
        return pb.ListCharitiesResponse(
            charities=[charity_to_proto(c) for c in page], next_page_token=token
        )

    @rpc
    async def DonatePoints(
        self, request: pb.DonatePointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DonatePointsResponse:
        self._donor_side()
        charity_id = dd.parse_charity_name(request.charity)

        async def work(conn: AsyncConnection) -> pb.DonatePointsResponse:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            donation, txn = await donations.donate(
                conn, self.ctx, member.id, charity_id, request.points
            )
            return pb.DonatePointsResponse(
                donation=donation_to_proto(donation),
                transaction=transaction_to_proto(txn, member.tier),
            )

        return await self.once("DonatePoints", request, pb.DonatePointsResponse, work)

    @rpc
    async def GetDonationReceipt(
        self, request: pb.GetDonationReceiptRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDonationReceiptResponse:
        dd.parse_donation_name(request.name)
        caller = self.caller()
        if request.format not in pb.ReceiptFormat.values():
            raise errors.InvalidArgument.on_field(
                "format", "INVALID_RECEIPT_FORMAT", "DATA, HTML or PDF"
            )
        async with self.read() as conn:
            donation = await donations.get_donation(
                conn, request.name, None if caller.is_operator else caller.partner_id
            )
            receipt = await donations.receipt(conn, self.ctx, donation)
        response = pb.GetDonationReceiptResponse(receipt=receipt_to_proto(receipt))
        if request.format == pb.RECEIPT_FORMAT_HTML:
            response.document = documents.receipt_html(receipt).encode()
            response.content_type = "text/html; charset=utf-8"
        elif request.format == pb.RECEIPT_FORMAT_PDF:
            # Tens of milliseconds with an embedded font: not on the event loop.
            response.document = await asyncio.to_thread(documents.receipt_pdf, receipt, self.font)
            response.content_type = "application/pdf"
        return response

    @rpc
    async def ListDonations(
        self, request: pb.ListDonationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDonationsResponse:
        kind, parent_id = _parent(request.parent)
        async with self.read() as conn:
            if kind == "charities":
                self._charity_side(parent_id)
                await donations.get_charity(conn, parent_id)
                page, token = await donations.list_donations(
                    conn, charity_id=parent_id, size=request.page_size, token=request.page_token
                )
            else:
                if not self.caller().is_operator:
                    raise errors.PermissionDenied(
                        "PARTNER_NOT_AUTHORIZED",
                        "only member apps (the operator) list a member's donations",
                    )
                member = await self.resolve_id(conn, parent_id)
                page, token = await donations.list_donations(
                    conn, member_id=member.id, size=request.page_size, token=request.page_token
                )
        return pb.ListDonationsResponse(
            donations=[donation_to_proto(d) for d in page], next_page_token=token
        )

    # -- matching campaigns ------------------------------------------------------------------

    @rpc
    async def CreateMatchingCampaign(
        self, request: pb.CreateMatchingCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateMatchingCampaignResponse:
        charity_id = dd.parse_charity_name(request.parent, "parent")
        draft = self._matching_draft(charity_id, request.matching_campaign)

        async def work(conn: AsyncConnection) -> pb.CreateMatchingCampaignResponse:
            campaign = await donations.create_matching(conn, self.ctx, draft)
            return pb.CreateMatchingCampaignResponse(matching_campaign=matching_to_proto(campaign))

        return await self.once(
            "CreateMatchingCampaign", request, pb.CreateMatchingCampaignResponse, work
        )

    def _matching_draft(self, charity_id: str, message: pb.MatchingCampaign) -> dd.MatchingDraft:
        caller = self.caller()
        field = "matching_campaign.sponsor"
        sponsor = parse_partner_name(message.sponsor, field) if message.sponsor else None
        if caller.is_operator and sponsor is None:
            raise errors.InvalidArgument.on_field(
                field, "MISSING_SPONSOR", "the operator names the sponsoring partner"
            )
        if not caller.is_operator:
            self._donor_side()
            if sponsor not in (None, caller.partner_id):
                raise errors.PermissionDenied(
                    "PARTNER_NOT_AUTHORIZED",
                    "a partner sponsors only in its own name",
                    {"field": field},
                )
            sponsor = caller.partner_id
        assert sponsor is not None
        end = time_from_proto(message, "end_time", "matching_campaign.end_time")
        if end is None:
            raise errors.InvalidArgument.on_field(
                "matching_campaign.end_time", "INVALID_TIME_RANGE", "a campaign needs an end_time"
            )
        start = time_from_proto(message, "start_time", "matching_campaign.start_time")
        return dd.MatchingDraft(
            sponsor_id=sponsor,
            charity_id=charity_id,
            percent=message.percent,
            budget_points=message.budget_points,
            start_time=start or self.ctx.clock.now(),
            end_time=end,
        )

    @rpc
    async def ListMatchingCampaigns(
        self, request: pb.ListMatchingCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMatchingCampaignsResponse:
        charity_id = dd.parse_charity_name(request.parent, "parent")
        caller = self.caller()
        # The operator and the charity see every campaign; a sponsor only its own.
        sees_all = caller.is_operator or caller.partner_id == charity_id
        sponsor = None if sees_all else caller.partner_id
        async with self.read() as conn:
            page, token = await donations.list_matching(
                conn, charity_id, sponsor, request.page_size, request.page_token
            )
        return pb.ListMatchingCampaignsResponse(
            matching_campaigns=[matching_to_proto(c) for c in page], next_page_token=token
        )

    @rpc
    async def EndMatchingCampaign(
        self, request: pb.EndMatchingCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndMatchingCampaignResponse:
        dd.parse_matching_name(request.name)
        sponsor = self.caller().partner_id

        async def work(conn: AsyncConnection) -> pb.EndMatchingCampaignResponse:
            campaign = await donations.end_matching(conn, self.ctx, request.name, sponsor)
            return pb.EndMatchingCampaignResponse(matching_campaign=matching_to_proto(campaign))

        return await self.once("EndMatchingCampaign", request, pb.EndMatchingCampaignResponse, work)

    # -- pledges -----------------------------------------------------------------------------

    @rpc
    async def CreatePledge(
        self, request: pb.CreatePledgeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePledgeResponse:
        partner_id = self._donor_side()
        message = request.pledge
        charity_id = dd.parse_charity_name(message.charity, "pledge.charity")
        kind = _PLEDGE_KIND_FROM.get(message.kind)
        if kind is None:
            raise errors.InvalidArgument.on_field(
                "pledge.kind", "INVALID_PLEDGE_KIND", "PLEDGE_KIND_MONTHLY or PLEDGE_KIND_EXPIRING"
            )
        start = time_from_proto(message, "start_time", "pledge.start_time")

        async def work(conn: AsyncConnection) -> pb.CreatePledgeResponse:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            pledge = await donations.create_pledge(
                conn, self.ctx, member.id, charity_id, kind, message.points, start, partner_id
            )
            return pb.CreatePledgeResponse(pledge=pledge_to_proto(pledge))

        return await self.once("CreatePledge", request, pb.CreatePledgeResponse, work)

    @rpc
    async def ListPledges(
        self, request: pb.ListPledgesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPledgesResponse:
        self._donor_side()
        async with self.read() as conn:
            member = await self.resolve(
                conn, request.member if request.HasField("member") else None
            )
            page, token = await donations.list_pledges(
                conn, member.id, request.show_cancelled, request.page_size, request.page_token
            )
        return pb.ListPledgesResponse(
            pledges=[pledge_to_proto(p) for p in page], next_page_token=token
        )

    @rpc
    async def CancelPledge(
        self, request: pb.CancelPledgeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelPledgeResponse:
        partner_id = self._donor_side()
        dd.parse_pledge_name(request.name)

        async def work(conn: AsyncConnection) -> pb.CancelPledgeResponse:
            pledge = await donations.cancel_pledge(conn, self.ctx, request.name, partner_id)
            return pb.CancelPledgeResponse(pledge=pledge_to_proto(pledge))

        return await self.once("CancelPledge", request, pb.CancelPledgeResponse, work)
