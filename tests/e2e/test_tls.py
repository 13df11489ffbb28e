"""TLS and mutual TLS with certificates from the coalition's own CA."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2

from coalition.v1 import partners_pb2 as pb
from coalition.v1 import partners_pb2_grpc
from gateway.entrypoints.grpc.server import TlsConfig
from partners import ca

# TLS libraries check validity against the wall clock, so certificates here start now.
NOW = datetime.now(UTC)


@pytest.fixture
def authority() -> ca.CertificateAuthority:
    return ca.create_ca(now=NOW)


@pytest.fixture
async def tls_gateway(start_gateway, authority, ctx):
    ctx.ca = authority  # lets the gateway issue certificates
    ctx.clock.set(NOW)
    server = ca.issue_server_certificate(authority, ["localhost", "127.0.0.1"], now=NOW)
    assert server.private_key_pem is not None
    ca_pem = authority.to_pem()[0]
    gateway = await start_gateway(TlsConfig(server.certificate_pem, server.private_key_pem, ca_pem))
    return gateway, ca_pem


def secure_channel(target: str, ca_pem: bytes, cert: bytes | None = None, key: bytes | None = None):
    credentials = grpc.ssl_channel_credentials(ca_pem, key, cert)
    return grpc.aio.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


async def test_a_client_certificate_authenticates_its_partner(tls_gateway, authority) -> None:
    gateway, ca_pem = tls_gateway
    async with secure_channel(gateway.target, ca_pem) as channel:
        stub = partners_pb2_grpc.PartnerServiceStub(channel)
        created = await stub.CreatePartner(
            pb.CreatePartnerRequest(
                request_id="p1",
                partner_id="tls-hotel",
                partner=pb.Partner(display_name="TLS Hotel", type=pb.PARTNER_TYPE_HOTEL),
            ),
            metadata=gateway.as_operator,  # an API key works over TLS too
        )
    key_pem, csr_pem = ca.make_csr("anything: the CA decides the identity")
    issued = ca.issue_partner_certificate(authority, "tls-hotel", csr_pem=csr_pem, now=NOW)
    async with secure_channel(
        gateway.mtls_target, ca_pem, issued.certificate_pem, key_pem
    ) as channel:
        stub = partners_pb2_grpc.PartnerServiceStub(channel)
        me = await stub.GetPartner(pb.GetPartnerRequest(name=created.partner.name))
        assert me.partner.display_name == "TLS Hotel"
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListPartners(pb.ListPartnersRequest())
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_certificate_issued_over_grpc_from_a_csr_works(tls_gateway) -> None:
    gateway, ca_pem = tls_gateway
    async with secure_channel(gateway.target, ca_pem) as channel:
        stub = partners_pb2_grpc.PartnerServiceStub(channel)
        await stub.CreatePartner(
            pb.CreatePartnerRequest(
                request_id="p2",
                partner_id="ride-co",
                partner=pb.Partner(display_name="Ride Co", type=pb.PARTNER_TYPE_RIDE_SHARE),
            ),
            metadata=gateway.as_operator,
        )
        key_pem, csr_pem = ca.make_csr("ride-co")
        issued = await stub.IssueClientCertificate(
            pb.IssueClientCertificateRequest(
                request_id="cert-1",
                parent="partners/ride-co",
                csr_pem=csr_pem.decode(),
                validity=duration_pb2.Duration(seconds=30 * 86_400),
            ),
            metadata=gateway.as_operator,
        )
        assert issued.private_key_pem == ""  # the partner kept its own key
        assert issued.ca_certificate_pem.encode() == ca_pem
    async with secure_channel(
        gateway.mtls_target, ca_pem, issued.certificate_pem.encode(), key_pem
    ) as channel:
        me = await partners_pb2_grpc.PartnerServiceStub(channel).GetPartner(
            pb.GetPartnerRequest(name="partners/ride-co")
        )
        assert me.partner.type == pb.PARTNER_TYPE_RIDE_SHARE


async def test_a_certificate_from_another_ca_is_refused(tls_gateway) -> None:
    gateway, ca_pem = tls_gateway
    rogue = ca.create_ca("Rogue CA", now=NOW)
    key_pem, csr_pem = ca.make_csr("x")
    forged = ca.issue_partner_certificate(rogue, "tls-hotel", csr_pem=csr_pem, now=NOW)
    async with secure_channel(
        gateway.mtls_target, ca_pem, forged.certificate_pem, key_pem
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await partners_pb2_grpc.PartnerServiceStub(channel).GetPartner(
                pb.GetPartnerRequest(name="partners/tls-hotel"), timeout=5
            )
    assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


async def test_plaintext_client_cannot_talk_to_a_tls_server(tls_gateway) -> None:
    gateway, _ = tls_gateway
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await partners_pb2_grpc.PartnerServiceStub(channel).GetPartner(
                pb.GetPartnerRequest(name="partners/x"), timeout=5
            )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_mtls_port_refuses_a_client_without_certificate(tls_gateway) -> None:
    gateway, ca_pem = tls_gateway
    async with secure_channel(gateway.mtls_target, ca_pem) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await partners_pb2_grpc.PartnerServiceStub(channel).GetPartner(
                pb.GetPartnerRequest(name="partners/x"), metadata=gateway.as_operator, timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
