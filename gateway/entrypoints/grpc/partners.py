"""PartnerService (operator only, except a partner reading itself)."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection

from coalition.v1 import partners_pb2 as pb
from coalition.v1 import partners_pb2_grpc
from gateway.domain import errors
from gateway.domain.partners import parse_partner_name
from gateway.entrypoints.auth import Authenticator
from gateway.entrypoints.errors import rpc
from gateway.entrypoints.grpc.base import Servicer
from gateway.entrypoints.grpc.convert import (
    api_key_to_proto,
    campaign_from_proto,
    campaign_to_proto,
    partner_to_proto,
    partner_type_filter,
    partner_type_from_proto,
    settings_from_proto,
    timestamp,
)
from gateway.service import campaigns
from gateway.service import partners as partner_service
from gateway.service.context import AppContext
from partners.ca import CLIENT_CERT_VALIDITY_DAYS_DEFAULT

SERVICE = "coalition.v1.PartnerService"
SECONDS_PER_DAY = 86_400


class PartnerServicer(Servicer, partners_pb2_grpc.PartnerServiceServicer):
    def __init__(self, ctx: AppContext, authenticator: Authenticator) -> None:
        super().__init__(ctx)
        self.authenticator = authenticator

    @rpc
    async def CreatePartner(
        self, request: pb.CreatePartnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePartnerResponse:
        kind = partner_type_from_proto(request.partner.type)
        settings = settings_from_proto(request.partner)

        async def work(conn: AsyncConnection) -> pb.CreatePartnerResponse:
            partner = await partner_service.create(
                conn, self.ctx, request.partner_id, kind, settings
            )
            return pb.CreatePartnerResponse(partner=partner_to_proto(partner))

        return await self.once("CreatePartner", request, pb.CreatePartnerResponse, work)

    @rpc
    async def GetPartner(
        self, request: pb.GetPartnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPartnerResponse:
        partner_id = parse_partner_name(request.name)
        caller = self.caller()
        if not caller.is_operator and caller.partner_id != partner_id:
            # Same answer as a missing partner: another partner's existence is not disclosed.
            raise partner_service.partner_not_found(partner_id)
        async with self.read() as conn:
            partner = await partner_service.get(conn, partner_id)
        return pb.GetPartnerResponse(partner=partner_to_proto(partner))

    @rpc
    async def ListPartners(
        self, request: pb.ListPartnersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPartnersResponse:
        kind = partner_type_filter(request.type)
        async with self.read() as conn:
            page, token = await partner_service.list_page(
                conn, request.page_size, request.page_token, kind
            )
        return pb.ListPartnersResponse(
            partners=[partner_to_proto(p) for p in page], next_page_token=token
        )

    @rpc
    async def UpdatePartner(
        self, request: pb.UpdatePartnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePartnerResponse:
        partner_id = parse_partner_name(request.partner.name, "partner.name")
        paths = list(request.update_mask.paths)
        # Fields outside the mask may be empty: only validate what is being changed.
        changes = settings_from_proto(request.partner)

        async def work(conn: AsyncConnection) -> pb.UpdatePartnerResponse:
            partner = await partner_service.update_settings(
                conn, self.ctx, partner_id, changes, paths
            )
            return pb.UpdatePartnerResponse(partner=partner_to_proto(partner))

        return await self.once("UpdatePartner", request, pb.UpdatePartnerResponse, work)

    @rpc
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        partner_id = parse_partner_name(request.parent, "parent")

        async def work(conn: AsyncConnection) -> pb.CreateApiKeyResponse:
            key, secret = await partner_service.create_api_key(
                conn, self.ctx, partner_id, request.display_name
            )
            return pb.CreateApiKeyResponse(api_key=api_key_to_proto(key), secret=secret)

        def without_secret(response: pb.CreateApiKeyResponse) -> pb.CreateApiKeyResponse:
            return pb.CreateApiKeyResponse(api_key=response.api_key)

        return await self.once(
            "CreateApiKey", request, pb.CreateApiKeyResponse, work, redact=without_secret
        )

    @rpc
    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        async def work(conn: AsyncConnection) -> pb.RevokeApiKeyResponse:
            key = await partner_service.revoke_api_key(conn, self.ctx, request.name)
            return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(key))

        response = await self.once("RevokeApiKey", request, pb.RevokeApiKeyResponse, work)
        self.authenticator.cache.clear()  # revocation takes effect here at once
        return response

    @rpc
    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        partner_id = parse_partner_name(request.parent, "parent")
        async with self.read() as conn:
            keys, token = await partner_service.list_api_keys(
                conn, partner_id, request.page_size, request.page_token
            )
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in keys], next_page_token=token
        )

    @rpc
    async def IssueClientCertificate(
        self, request: pb.IssueClientCertificateRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueClientCertificateResponse:
        partner_id = parse_partner_name(request.parent, "parent")
        days = CLIENT_CERT_VALIDITY_DAYS_DEFAULT
        if request.HasField("validity"):
            seconds = request.validity.seconds
            if seconds <= 0 or seconds % SECONDS_PER_DAY:
                raise errors.InvalidArgument.on_field(
                    "validity", "INVALID_VALIDITY", "a positive whole number of days"
                )
            days = seconds // SECONDS_PER_DAY

        async def work(conn: AsyncConnection) -> pb.IssueClientCertificateResponse:
            issued, ca_pem = await partner_service.issue_certificate(
                conn, self.ctx, partner_id, request.csr_pem.encode() or None, days
            )
            return pb.IssueClientCertificateResponse(
                certificate_pem=issued.certificate_pem.decode(),
                ca_certificate_pem=ca_pem.decode(),
                private_key_pem=(issued.private_key_pem or b"").decode(),
                serial_number=issued.serial_number,
                expire_time=timestamp(issued.not_after),
            )

        def without_key(
            response: pb.IssueClientCertificateResponse,
        ) -> pb.IssueClientCertificateResponse:
            kept = pb.IssueClientCertificateResponse()
            kept.CopyFrom(response)
            kept.private_key_pem = ""  # a generated private key is never stored
            return kept

        return await self.once(
            "IssueClientCertificate",
            request,
            pb.IssueClientCertificateResponse,
            work,
            redact=without_key,
        )

    @rpc
    async def CreateCampaign(
        self, request: pb.CreateCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCampaignResponse:
        partner_id = parse_partner_name(request.parent, "parent")
        draft = campaign_from_proto(request.campaign, self.ctx.clock.now())

        async def work(conn: AsyncConnection) -> pb.CreateCampaignResponse:
            partner = await partner_service.get(conn, partner_id)
            campaign = await campaigns.create(conn, self.ctx, partner, draft)
            return pb.CreateCampaignResponse(campaign=campaign_to_proto(campaign, 0))

        return await self.once("CreateCampaign", request, pb.CreateCampaignResponse, work)

    @rpc
    async def ListCampaigns(
        self, request: pb.ListCampaignsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCampaignsResponse:
        partner_id = parse_partner_name(request.parent, "parent")
        async with self.read() as conn:
            await partner_service.get(conn, partner_id)
            page, token = await campaigns.list_page(
                conn, partner_id, request.page_size, request.page_token
            )
            spent = await campaigns.spent(conn, [c.id for c in page])
        return pb.ListCampaignsResponse(
            campaigns=[campaign_to_proto(c, spent.get(c.id, 0)) for c in page],
            next_page_token=token,
        )

    @rpc
    async def EndCampaign(
        self, request: pb.EndCampaignRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndCampaignResponse:
        async def work(conn: AsyncConnection) -> pb.EndCampaignResponse:
            campaign = await campaigns.end(conn, self.ctx, request.name)
            spent = await campaigns.spent(conn, [campaign.id])
            return pb.EndCampaignResponse(
                campaign=campaign_to_proto(campaign, spent.get(campaign.id, 0))
            )

        return await self.once("EndCampaign", request, pb.EndCampaignResponse, work)
