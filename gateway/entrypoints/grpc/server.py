"""The gRPC server: every Coalition service, health checking and reflection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from coalition.v1 import (
    donations_pb2,
    donations_pb2_grpc,
    members_pb2,
    members_pb2_grpc,
    partners_pb2,
    partners_pb2_grpc,
    points_pb2,
    points_pb2_grpc,
    rewards_pb2,
    rewards_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from gateway.entrypoints.auth import Authenticator, AuthInterceptor
from gateway.entrypoints.grpc.base import fill_unimplemented
from gateway.entrypoints.grpc.donations import DonationServicer
from gateway.entrypoints.grpc.members import MemberServicer
from gateway.entrypoints.grpc.partners import PartnerServicer
from gateway.entrypoints.grpc.points import PointsServicer
from gateway.entrypoints.grpc.rewards import RewardServicer
from gateway.service.context import AppContext
from settlement.entrypoints.grpc import SettlementServicer
from wallet.config import Wallet
from wallet.domain.card import Program
from wallet.entrypoints.grpc import WalletServicer

GRPC_MESSAGE_BYTES_MAX = 4 * 1024 * 1024
"""Largest request accepted; bigger batches belong on StreamEarnPoints."""
GRPC_CONCURRENT_RPCS_MAX = 1_000
SHUTDOWN_GRACE_S = 10.0

log = logging.getLogger("coalition.grpc")

# Services whose capability lands with a later release; each answers UNIMPLEMENTED + ErrorInfo.
_LATER: list[tuple[str, type, Callable[[Any, grpc.aio.Server], None], str]] = []
_DESCRIPTORS = [
    members_pb2.DESCRIPTOR,
    partners_pb2.DESCRIPTOR,
    points_pb2.DESCRIPTOR,
    rewards_pb2.DESCRIPTOR,
    donations_pb2.DESCRIPTOR,
    wallet_pb2.DESCRIPTOR,
    settlement_pb2.DESCRIPTOR,
]


@dataclass(frozen=True)
class TlsConfig:
    certificate_pem: bytes
    private_key_pem: bytes
    client_ca_pem: bytes | None = None
    """The coalition CA: a port with require_client_certificate accepts its certificates."""
    require_client_certificate: bool = False
    """gRPC either requires a client certificate or never asks for one, so mTLS partners get a
    port of their own (serve --mtls-port) beside the API-key port."""


def add_port(server: grpc.aio.Server, address: str, tls: TlsConfig | None) -> int:
    """Bind another listener; returns its port."""
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        if tls.require_client_certificate and tls.client_ca_pem is None:
            raise ValueError("a port that requires client certificates needs the client CA")
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key_pem, tls.certificate_pem)],
            root_certificates=tls.client_ca_pem,
            require_client_auth=tls.require_client_certificate,
        )
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {address}")
    return int(port)


async def create_server(
    address: str, ctx: AppContext, tls: TlsConfig | None = None, wallet: Wallet | None = None
) -> tuple[grpc.aio.Server, int]:
    """A configured, bound, not yet started server and the port it got (bind port 0 in tests).

    Without a wallet, WalletService reads cards but issues none (WALLET_NOT_CONFIGURED)."""
    authenticator = Authenticator(ctx)
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(authenticator)],
        maximum_concurrent_rpcs=GRPC_CONCURRENT_RPCS_MAX,
        options=[
            ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 1),
        ],
    )
    members_pb2_grpc.add_MemberServiceServicer_to_server(MemberServicer(ctx), server)
    points_pb2_grpc.add_PointsServiceServicer_to_server(PointsServicer(ctx), server)
    partners_pb2_grpc.add_PartnerServiceServicer_to_server(
        PartnerServicer(ctx, authenticator), server
    )
    rewards_pb2_grpc.add_RewardServiceServicer_to_server(RewardServicer(ctx), server)
    donations_pb2_grpc.add_DonationServiceServicer_to_server(DonationServicer(ctx), server)
    settlement_pb2_grpc.add_SettlementServiceServicer_to_server(SettlementServicer(ctx), server)
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(
        WalletServicer(ctx, wallet or Wallet(Program())), server
    )
    for name, base, add, capability in _LATER:
        servicer = base()
        fill_unimplemented(servicer, base, name, {m: capability for m in vars(base)})
        add(servicer, server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [
        d.services_by_name[s].full_name for d in _DESCRIPTORS for s in d.services_by_name
    ]
    for service in ["", *service_names]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    return server, add_port(server, address, tls)
