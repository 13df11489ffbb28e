"""The access control matrix (issue 11, item 5): every RPC × every kind of caller, as a table.

Columns (who calls, `matrix_support.Kind`): no credentials, a malformed header (a real key
under the wrong scheme, or a garbage bearer), a revoked key, an expired client certificate, a
client certificate from a foreign CA, the partner that owns what the request names (by key and
by certificate), a partner of each type that owns nothing of it (for the owner's own type that
is "another partner's key"), and the operator. Rows: every RPC of the contract, enumerated from
the service descriptors (an RPC without a row is a failing cell), plus a few request shapes that
authorize differently (on_behalf_of, lookups by partner account and by airline number, an
agency's booking, a member's donations).

Each cell sends one well-formed request that succeeds for an allowed caller (the data it names
is seeded in `matrix_support`, or made fresh for the cell) and asserts: an allowed caller gets
OK; a refused one gets exactly the expected code and ErrorInfo reason (UNAUTHENTICATED for a
credential problem; PERMISSION_DENIED, or NOT_FOUND where the contract hides that another
partner's resource exists); a certificate the TLS layer refuses never reaches a handler
(UNAVAILABLE, while the owner's valid certificate works on the same port); and after a refusal
the rightful caller can still do what was refused, so the refusal touched nothing.

Then: no read shows a partner another partner's data (every page of every listing, the
partner filter ignored, request ids not shared), a foreign resource answers exactly as a missing
one, certificates are trusted only where verified, a revoked key stops at once (also mid-stream),
API keys are found by digest and secrets compared in constant time, and no key, token or secret
is ever logged or echoed to a client. `test_matrix_summary` prints the table as observed.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import inspect
import io
import json
import logging
import re
import textwrap
import zipfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import field_mask_pb2
from matrix_support import (  # tests/reliability/matrix_support.py
    AGENCY_A,
    AGENCY_B,
    AIR_A,
    AIR_B,
    CALL_TIMEOUT_S,
    CHARITY_A,
    CHARITY_B,
    CREDENTIAL_KINDS,
    HOTEL_A,
    HOTEL_B,
    JANUARY,
    METHODS,
    PARTNERS,
    REQUESTS,
    RIDE_CO,
    Kind,
    Outcome,
    World,
    agency_booking,
    bearer,
    invoke,
    leaked,
    method_of,
    open_world,
    program_number,
    ref,
    secure_channel,
    usd,
)
from sqlalchemy import event

from coalition.v1 import (
    common_pb2,
    donations_pb2,
    members_pb2,
    partners_pb2,
    points_pb2,
    settlement_pb2,
    wallet_pb2,
)
from gateway.adapters.db import Database
from gateway.adapters.notify import LogChannel
from gateway.adapters.webhooks import WebhookSender
from gateway.domain.credentials import hash_api_key
from gateway.domain.rewards import display_code, new_voucher_code
from gateway.entrypoints import auth
from gateway.entrypoints.grpc.server import _DESCRIPTORS as server_descriptors
from gateway.entrypoints.logs import JsonFormatter
from gateway.service import delivery
from gateway.service import partners as partner_service
from partners import ca, webhooks
from partners.ca import partner_id_from_certificate
from wallet.service.updates import CardUpdater

OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

Answer = tuple[grpc.StatusCode, str]


def denied(reason: str) -> Answer:
    return DENIED, reason


def missing(reason: str) -> Answer:
    return NOT_FOUND, reason


# -- the expected table ----------------------------------------------------------------------

PARTNER_KINDS = frozenset(
    {
        Kind.OWNER,
        Kind.OWNER_CERT,
        Kind.HOTEL,
        Kind.RIDE_SHARE,
        Kind.AIRLINE,
        Kind.RETAIL,
        Kind.AGENCY,
        Kind.CHARITY,
    }
)
EVERYONE = PARTNER_KINDS | {Kind.OPERATOR}
ALL_BUT_CHARITIES = EVERYONE - {Kind.CHARITY}
PARTNERS_BUT_CHARITIES = PARTNER_KINDS - {Kind.CHARITY}
OWNER_ONLY = frozenset({Kind.OWNER, Kind.OWNER_CERT})
OWNER_AND_OPERATOR = OWNER_ONLY | {Kind.OPERATOR}
OPERATOR_ONLY = frozenset({Kind.OPERATOR})

NO_CHARITY = {Kind.CHARITY: denied("PARTNER_NOT_AUTHORIZED")}
# Points move at a partner: charities only receive, and the operator is no partner.
AT_A_PARTNER = {**NO_CHARITY, Kind.OPERATOR: denied("PARTNER_ONLY")}

CREDENTIAL_ANSWERS: dict[Kind, Answer] = {
    Kind.ANONYMOUS: (UNAUTHENTICATED, "MISSING_CREDENTIALS"),
    Kind.BAD_SCHEME: (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
    Kind.GARBAGE_KEY: (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
    Kind.REVOKED_KEY: (UNAUTHENTICATED, "INVALID_CREDENTIALS"),
    # The TLS handshake fails (expired; unknown issuer): the connection never carries an RPC.
    Kind.EXPIRED_CERT: (UNAVAILABLE, ""),
    Kind.FOREIGN_CERT: (UNAVAILABLE, ""),
}


@dataclass(frozen=True)
class Row:
    """Who may call one RPC (or one request shape of it), and what the others get."""

    allowed: frozenset[Kind]
    refused: Answer | None = None
    """The answer of every partner or operator not in `allowed`, unless `also` says otherwise."""
    also: Mapping[Kind, Answer] = field(default_factory=dict)
    owner: str = HOTEL_A
    """The partner whose resources the request names (and whose credentials the credential
    columns use)."""
    bugs: Mapping[Kind, str] = field(default_factory=dict)
    """Cells that misbehave today: xfail(strict=True) with the reason."""

    def answer(self, kind: Kind) -> Answer:
        if kind in CREDENTIAL_ANSWERS:
            return CREDENTIAL_ANSWERS[kind]
        if kind in self.allowed:
            return OK, ""
        found = self.also.get(kind, self.refused)
        assert found is not None, f"no expected answer for a refused {kind}"
        return found


# From each RPC's proto comment ("Who may call") and its servicer. Owner: hotel-a unless said.
EXPECTED: dict[str, Row] = {
    # MemberService: "the operator may call every RPC for every member. A partner may enroll
    # members, look them up, read their balance, and list the transactions it took part in".
    "MemberService.EnrollMember": Row(EVERYONE),
    "MemberService.GetMember": Row(EVERYONE),
    # Not in the service comment's list for partners, yet served to any partner and relied on
    # by tests/e2e/test_idempotency.py (a hotel updates a guest): the contract should say so.
    "MemberService.UpdateMember": Row(EVERYONE),
    "MemberService.LookupMember": Row(EVERYONE),
    # A partner names members only by its own account ids.
    "MemberService.LookupMember.by_partner_account": Row(
        OWNER_AND_OPERATOR, denied("NOT_YOUR_ACCOUNT")
    ),
    # An airline's numbers are the airline's (and its authorized agencies': agency-b is not).
    "MemberService.LookupMember.by_program_number": Row(
        OWNER_AND_OPERATOR, denied("AIRLINE_NOT_AUTHORIZED"), owner=AIR_A
    ),
    # A partner links only its own accounts (even holding the member's code).
    "MemberService.RequestLinkCode": Row(OWNER_AND_OPERATOR, denied("NOT_YOUR_ACCOUNT")),
    "MemberService.LinkAccount": Row(OWNER_AND_OPERATOR, denied("NOT_YOUR_ACCOUNT")),
    "MemberService.UnlinkAccount": Row(OWNER_AND_OPERATOR, missing("LINK_NOT_FOUND")),
    # Everyone may list; a partner sees only its own links and transactions (leak tests).
    "MemberService.ListLinkedAccounts": Row(EVERYONE),
    "MemberService.GetBalance": Row(EVERYONE),
    "MemberService.ListTransactions": Row(EVERYONE),
    # PartnerService: the operator only, except GetPartner for the partner itself; another
    # partner is NOT_FOUND, like a missing one.
    "PartnerService.CreatePartner": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.GetPartner": Row(OWNER_AND_OPERATOR, missing("PARTNER_NOT_FOUND")),
    "PartnerService.ListPartners": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.UpdatePartner": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.CreateApiKey": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.RevokeApiKey": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.ListApiKeys": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.IssueClientCertificate": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.CreateCampaign": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.ListCampaigns": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    "PartnerService.EndCampaign": Row(OPERATOR_ONLY, denied("OPERATOR_ONLY")),
    # PointsService: any partner, always as itself; charities do not issue or accept points.
    "PointsService.QuoteEarn": Row(PARTNERS_BUT_CHARITIES, also=AT_A_PARTNER),
    # Only a travel agency, only for the airlines it is authorized for (agency-b: air-b only).
    "PointsService.QuoteEarn.on_behalf_of": Row(
        OWNER_ONLY,
        denied("ON_BEHALF_OF_AGENCIES_ONLY"),
        also={**AT_A_PARTNER, Kind.AGENCY: denied("AIRLINE_NOT_AUTHORIZED")},
        owner=AGENCY_A,
    ),
    "PointsService.EarnPoints": Row(PARTNERS_BUT_CHARITIES, also=AT_A_PARTNER),
    "PointsService.EarnPoints.on_behalf_of": Row(
        OWNER_ONLY,
        denied("ON_BEHALF_OF_AGENCIES_ONLY"),
        also={**AT_A_PARTNER, Kind.AGENCY: denied("AIRLINE_NOT_AUTHORIZED")},
        owner=AGENCY_A,
    ),
    # As EarnPoints; a refused item is answered in the stream (ItemError), the stream lives on.
    "PointsService.StreamEarnPoints": Row(PARTNERS_BUT_CHARITIES, also=AT_A_PARTNER),
    "PointsService.RedeemPoints": Row(PARTNERS_BUT_CHARITIES, also=AT_A_PARTNER),
    "PointsService.AuthorizeRedemption": Row(PARTNERS_BUT_CHARITIES, also=AT_A_PARTNER),
    # "Only the partner that created the authorization"; another partner's transaction is
    # NOT_FOUND, never PERMISSION_DENIED, so existence does not leak.
    "PointsService.CaptureRedemption": Row(
        OWNER_ONLY, missing("TRANSACTION_NOT_FOUND"), also=AT_A_PARTNER
    ),
    "PointsService.VoidRedemption": Row(
        OWNER_ONLY, missing("TRANSACTION_NOT_FOUND"), also=AT_A_PARTNER
    ),
    "PointsService.ReverseTransaction": Row(
        OWNER_AND_OPERATOR, missing("TRANSACTION_NOT_FOUND"), also=NO_CHARITY
    ),
    # An agency booking: the agency (owner) or the airline (test below) or the operator.
    "PointsService.ReverseTransaction.agency_booking": Row(
        OWNER_AND_OPERATOR, missing("TRANSACTION_NOT_FOUND"), also=NO_CHARITY, owner=AGENCY_A
    ),
    # The operator (member apps), or the airline for its own program.
    "PointsService.ConvertPoints": Row(OWNER_AND_OPERATOR, denied("NOT_YOUR_PROGRAM"), owner=AIR_A),
    # RewardService: publish under one's own name; vouchers of one's own rewards only (another
    # partner's voucher is NOT_FOUND); the catalog and redemptions are open to every partner.
    "RewardService.CreateReward": Row(OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")),
    "RewardService.ListRewards": Row(EVERYONE),
    "RewardService.RedeemReward": Row(EVERYONE),
    "RewardService.ValidateVoucher": Row(OWNER_AND_OPERATOR, missing("VOUCHER_NOT_FOUND")),
    "RewardService.ConsumeVoucher": Row(OWNER_AND_OPERATOR, missing("VOUCHER_NOT_FOUND")),
    # DonationService: everyone lists charities; anyone but a charity donates and pledges for
    # a member; a charity reads only its own donations and receipts (owner charity-a).
    "DonationService.ListCharities": Row(EVERYONE),
    "DonationService.DonatePoints": Row(ALL_BUT_CHARITIES, also=NO_CHARITY),
    "DonationService.GetDonationReceipt": Row(
        OWNER_AND_OPERATOR, missing("DONATION_NOT_FOUND"), owner=CHARITY_A
    ),
    "DonationService.ListDonations": Row(
        OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED"), owner=CHARITY_A
    ),
    # A member's donations: member apps (the operator) only, not even a charity.
    "DonationService.ListDonations.of_member": Row(
        OPERATOR_ONLY, denied("PARTNER_NOT_AUTHORIZED"), owner=CHARITY_A
    ),
    # Sponsoring in hotel-a's name: hotel-a or the operator; a charity never sponsors.
    "DonationService.CreateMatchingCampaign": Row(
        OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")
    ),
    "DonationService.ListMatchingCampaigns": Row(EVERYONE),  # filtered: leak tests
    "DonationService.EndMatchingCampaign": Row(
        OWNER_AND_OPERATOR, missing("MATCHING_CAMPAIGN_NOT_FOUND")
    ),
    "DonationService.CreatePledge": Row(ALL_BUT_CHARITIES, also=NO_CHARITY),
    "DonationService.ListPledges": Row(ALL_BUT_CHARITIES, also=NO_CHARITY),
    "DonationService.CancelPledge": Row(OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")),
    # WalletService: the operator and any partner on behalf of a member.
    "WalletService.IssueWalletCard": Row(EVERYONE),
    "WalletService.GetWalletCard": Row(EVERYONE),
    # SettlementService: the operator / finance; a partner reads its own statement, lines and
    # price lists and reconciles its own file; anything else PARTNER_NOT_AUTHORIZED.
    "SettlementService.CloseSettlementPeriod": Row(OPERATOR_ONLY, denied("PARTNER_NOT_AUTHORIZED")),
    "SettlementService.GetStatement": Row(OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")),
    "SettlementService.ListStatements": Row(EVERYONE),  # a partner gets only its own
    "SettlementService.ListStatementLines": Row(
        OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")
    ),
    "SettlementService.GetNettingReport": Row(OPERATOR_ONLY, denied("PARTNER_NOT_AUTHORIZED")),
    "SettlementService.ReconcilePartnerFile": Row(
        OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")
    ),
    "SettlementService.CreateAdjustment": Row(OPERATOR_ONLY, denied("PARTNER_NOT_AUTHORIZED")),
    "SettlementService.CreatePriceList": Row(OPERATOR_ONLY, denied("PARTNER_NOT_AUTHORIZED")),
    "SettlementService.ListPriceLists": Row(OWNER_AND_OPERATOR, denied("PARTNER_NOT_AUTHORIZED")),
    "SettlementService.SetFxRate": Row(OPERATOR_ONLY, denied("PARTNER_NOT_AUTHORIZED")),
}

NO_ROW = "(no row)"
SQL_LOGGERS = ("sqlalchemy.engine", "aiosqlite")
DELIVERY_ROUNDS_MAX = 200
"""The deliverer's rounds in the logging test: enough for every event of the run."""


def _cells() -> list[Any]:
    """(row, kind) for every RPC of the descriptors: an RPC without a row is a failing cell."""
    cells = []
    for rpc in METHODS:
        rows = [r for r in EXPECTED if ".".join(r.split(".")[:2]) == rpc] or [f"{rpc}{NO_ROW}"]
        for row in rows:
            for kind in Kind:
                bug = EXPECTED[row].bugs.get(kind) if row in EXPECTED else None
                marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {bug}")] if bug else []
                cells.append(pytest.param(row, kind, id=f"{row}-{kind}", marks=marks))
    return cells


CELLS = _cells()
RESULTS: dict[tuple[str, Kind], str] = {}


@pytest.fixture(scope="module")
async def world(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with open_world(database, tmp_path_factory.mktemp("matrix")) as seeded:
        yield seeded


# -- the table is complete and consistent ----------------------------------------------------


def test_every_rpc_of_the_contract_has_a_row() -> None:
    rpcs = set(METHODS)
    rows = {".".join(r.split(".")[:2]) for r in EXPECTED}
    assert not rpcs - rows, f"RPCs with no row in EXPECTED: {sorted(rpcs - rows)}"
    assert not rows - rpcs, f"rows for RPCs the contract does not have: {sorted(rows - rpcs)}"
    assert set(EXPECTED) == set(REQUESTS), "every row needs its request, and only rows"
    served = {
        f"{service.name}.{method.name}"
        for descriptor in server_descriptors
        for service in descriptor.services_by_name.values()
        for method in service.methods
    }
    assert served == rpcs, "the matrix and the server do not see the same contract"


def test_every_refused_cell_has_an_expected_answer() -> None:
    for row, expected in EXPECTED.items():
        for kind in Kind:
            code, reason = expected.answer(kind)
            assert code is OK or reason or kind in CREDENTIAL_KINDS, (row, kind)
        assert not set(expected.also) & expected.allowed, f"{row}: `also` names allowed kinds"


# -- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "kind"), CELLS)
async def test_cell(world: World, row: str, kind: Kind) -> None:
    assert row in EXPECTED, f"{row.removesuffix(NO_ROW)} has no row in EXPECTED"
    expected = EXPECTED[row]
    request = REQUESTS[row]
    message = await request.build(world)
    outcome = await world.call(kind, expected.owner, row, message)
    RESULTS[(row, kind)] = _symbol(outcome)

    assert outcome.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), str(outcome)
    for secret in world.secrets_of(kind, expected.owner):
        assert secret not in outcome.raw, f"the answer echoes the caller's credential: {outcome}"
    code, reason = expected.answer(kind)
    if code is OK:
        assert outcome.ok, f"{row} as {kind} is allowed, but: {outcome}"
        return
    assert (outcome.code, outcome.reason) == (code, reason), (
        f"{row} as {kind}: expected {code.name} {reason or '(TLS refusal)'}, got {outcome}"
    )
    if reason:
        assert outcome.error_infos == 1, f"exactly one ErrorInfo expected: {outcome}"
    if request.prepared:
        # The refusal touched nothing: the rightful caller's identical request still works.
        rightful = Kind.OWNER if Kind.OWNER in expected.allowed else Kind.OPERATOR
        again = await world.call(rightful, expected.owner, row, message)
        assert again.ok, f"after a refused {kind}, {rightful} failed: {again}"


def _symbol(outcome: Outcome) -> str:
    if outcome.ok:
        return "ok"
    return {
        UNAUTHENTICATED: "unauth",
        UNAVAILABLE: "tls",
        DENIED: "denied",
        NOT_FOUND: "hidden",
    }.get(outcome.code, outcome.code.name)


# -- no listing leaks another partner's data -------------------------------------------------

PartnerAccount = common_pb2.PartnerAccount
EVERY_PARTNER = [partner_id for partner_id, _, _ in PARTNERS]
# Partners that legitimately appear in each other's data: an agency's booking is the airline's
# transaction (partner) and the agency's (channel_partner).
RELATED = {AGENCY_A: {AIR_A}, AIR_A: {AGENCY_A}}


def others(viewer: str) -> list[str]:
    return [p for p in EVERY_PARTNER if p != viewer and p not in RELATED.get(viewer, set())]


async def every_page(world: World, row: str, request: Any, viewer: str, items: str) -> list[Any]:
    """All items of a List RPC as the viewer, one small page at a time (tokens included)."""
    found: list[Any] = []
    request.page_size = 2
    for _ in range(500):  # bounded: a listing that never ends fails below
        outcome = await invoke(world.channel, method_of(row), request, world.auth(viewer))
        assert outcome.ok, f"{row} as {viewer}: {outcome}"
        found.extend(getattr(outcome.response, items))
        if not outcome.response.next_page_token:
            return found
        request.page_token = outcome.response.next_page_token
    raise AssertionError(f"{row} as {viewer}: pagination does not end")


READS = ("Get", "List", "Lookup", "Validate", "Quote", "Stream")
PUBLIC = {
    # Reads whose answer shows other partners' data by contract.
    "RewardService.ListRewards": "the catalog: every partner's rewards, for every partner",
    "DonationService.ListCharities": "the charities members can donate to",
    "DonationService.ListPledges": "a member's pledges, with the partner that took each",
}
READ_ROWS = sorted(
    row
    for row, expected in EXPECTED.items()
    if method_of(row).name.startswith(READS) and Kind.OWNER in expected.allowed
)


@pytest.mark.parametrize("row", [r for r in READ_ROWS if r not in PUBLIC])
async def test_no_read_shows_a_partner_another_partners_data(world: World, row: str) -> None:
    """Every read the owner may make, as the owner: nothing of any unrelated partner in it."""
    owner = EXPECTED[row].owner
    request = await REQUESTS[row].build(world)
    outcome = await world.call(Kind.OWNER, owner, row, request)
    assert outcome.ok, str(outcome)
    named = set(leaked(request, others(owner)))  # the charity a request names, say
    assert not set(leaked(outcome.response, others(owner))) - named, outcome.response


@pytest.mark.parametrize("row", sorted(PUBLIC))
async def test_public_reads_do_show_other_partners(world: World, row: str) -> None:
    """The exceptions above are real (and would need a decision if they should not be)."""
    outcome = await world.call(Kind.OWNER, HOTEL_A, row, await REQUESTS[row].build(world))
    assert outcome.ok and leaked(outcome.response, others(HOTEL_A)), str(outcome)


@pytest.mark.parametrize("viewer", EVERY_PARTNER)
async def test_a_partner_lists_only_its_own_transactions(world: World, viewer: str) -> None:
    # The partner filter names another partner: for a partner caller it must be ignored.
    request = members_pb2.ListTransactionsRequest(
        member=ref(world.member), partner=f"partners/{HOTEL_B if viewer != HOTEL_B else HOTEL_A}"
    )
    seen = await every_page(
        world, "MemberService.ListTransactions", request, viewer, "transactions"
    )
    me = f"partners/{viewer}"
    assert all(me in (t.partner, t.channel_partner) for t in seen), [
        (t.partner, t.channel_partner) for t in seen if me not in (t.partner, t.channel_partner)
    ]
    assert not leaked_all(seen, others(viewer))
    if viewer not in (AGENCY_B, CHARITY_B):  # every other partner took part in January
        assert seen, f"{viewer} sees none of its own transactions: the check proves nothing"


def leaked_all(items: list[Any], partner_ids: list[str]) -> list[str]:
    return sorted({marker for item in items for marker in leaked(item, partner_ids)})


@pytest.mark.parametrize("viewer", EVERY_PARTNER)
async def test_a_partner_lists_only_its_own_linked_accounts(world: World, viewer: str) -> None:
    request = members_pb2.ListLinkedAccountsRequest(member=ref(world.member), show_unlinked=True)
    seen = await every_page(
        world, "MemberService.ListLinkedAccounts", request, viewer, "linked_accounts"
    )
    me = f"partners/{viewer}"
    assert all(me in (a.partner_account.partner, a.program_number.program) for a in seen), seen
    assert not leaked_all(seen, others(viewer))
    if viewer in (HOTEL_A, HOTEL_B, AIR_A, AIR_B):
        assert seen, f"{viewer} does not even see its own link"


async def test_an_external_id_resolves_only_for_the_partner_that_linked_it(world: World) -> None:
    """hotel-a naming hotel-b's guest id (as its own account) finds nobody."""
    outcome = await invoke(
        world.channel,
        method_of("MemberService.LookupMember"),
        members_pb2.LookupMemberRequest(partner_account=PartnerAccount(external_id="guest-b1")),
        world.auth(HOTEL_A),
    )
    assert (outcome.code, outcome.reason) == (NOT_FOUND, "MEMBER_NOT_FOUND"), str(outcome)
    mine = await invoke(
        world.channel,
        method_of("MemberService.LookupMember"),
        members_pb2.LookupMemberRequest(partner_account=PartnerAccount(external_id="guest-a1")),
        world.auth(HOTEL_A),
    )
    assert mine.ok and mine.response.member.name == world.member, str(mine)


@pytest.mark.parametrize("viewer", EVERY_PARTNER)
async def test_a_sponsor_lists_only_its_own_matching_campaigns(world: World, viewer: str) -> None:
    request = donations_pb2.ListMatchingCampaignsRequest(parent=f"charities/{CHARITY_A}")
    seen = await every_page(
        world, "DonationService.ListMatchingCampaigns", request, viewer, "matching_campaigns"
    )
    sponsors = {c.sponsor for c in seen}
    if viewer == CHARITY_A:  # the charity sees every campaign for it
        assert {f"partners/{HOTEL_A}", f"partners/{HOTEL_B}"} <= sponsors
        return
    assert sponsors <= {f"partners/{viewer}"}, sponsors
    if viewer in (HOTEL_A, HOTEL_B):
        assert sponsors, f"{viewer} does not even see the campaign it sponsors"


@pytest.mark.parametrize("viewer", EVERY_PARTNER)
async def test_a_partner_lists_only_its_own_statement(world: World, viewer: str) -> None:
    request = settlement_pb2.ListStatementsRequest(parent=JANUARY)
    seen = await every_page(
        world, "SettlementService.ListStatements", request, viewer, "statements"
    )
    assert {s.partner for s in seen} <= {f"partners/{viewer}"}, [s.name for s in seen]
    if viewer != AGENCY_A:  # its booking is air-a's transaction: agency-a has no statement
        assert len(seen) == 1, f"{viewer} does not even see its own statement"


@pytest.mark.parametrize("viewer", [HOTEL_A, AIR_A, CHARITY_A])
async def test_statement_lines_carry_only_the_partners_transactions(
    world: World, viewer: str
) -> None:
    request = settlement_pb2.ListStatementLinesRequest(parent=f"{JANUARY}/statements/{viewer}")
    lines = await every_page(
        world, "SettlementService.ListStatementLines", request, viewer, "statement_lines"
    )
    assert lines
    assert not leaked_all(lines, others(viewer))


async def test_a_charity_lists_and_reads_only_its_own_donations(world: World) -> None:
    request = donations_pb2.ListDonationsRequest(parent=f"charities/{CHARITY_A}")
    seen = await every_page(world, "DonationService.ListDonations", request, CHARITY_A, "donations")
    assert seen and all(d.charity == f"charities/{CHARITY_A}" for d in seen)
    assert world.donations[CHARITY_B] not in {d.name for d in seen}
    other = await invoke(
        world.channel,
        method_of("DonationService.GetDonationReceipt"),
        donations_pb2.GetDonationReceiptRequest(name=world.donations[CHARITY_B]),
        world.auth(CHARITY_A),
    )
    assert (other.code, other.reason) == (NOT_FOUND, "DONATION_NOT_FOUND"), str(other)


async def test_a_quote_shows_only_the_partners_own_campaigns(world: World) -> None:
    def quote(partner_id: str) -> Any:
        return invoke(
            world.channel,
            method_of("PointsService.QuoteEarn"),
            points_pb2.QuoteEarnRequest(member=ref(world.member), purchase=usd(10_000)),
            world.auth(partner_id),
        )

    theirs = await quote(HOTEL_B)
    assert any(c.source.startswith(f"partners/{HOTEL_B}/") for c in theirs.response.breakdown)
    mine = await quote(HOTEL_A)
    assert mine.ok and not leaked(mine.response, others(HOTEL_A)), mine.response


@pytest.mark.parametrize("stream", [False, True], ids=["EarnPoints", "StreamEarnPoints"])
async def test_a_request_id_is_never_shared_across_partners(world: World, stream: bool) -> None:
    """hotel-b reusing a request_id hotel-a used gets its own answer: never hotel-a's stored
    transaction, nor REQUEST_ID_REUSED (which would tell it the id was taken)."""
    request_id = world.rid()

    async def earn(partner_id: str, amount_minor: int) -> Outcome:
        request = points_pb2.EarnPointsRequest(
            request_id=request_id,
            member=ref(world.member),
            purchase=usd(amount_minor),
            partner_reference=f"{partner_id.upper()}-SHARED-ID",
        )
        row = "PointsService.StreamEarnPoints" if stream else "PointsService.EarnPoints"
        message = points_pb2.StreamEarnPointsRequest(request=request) if stream else request
        outcome = await invoke(world.channel, method_of(row), message, world.auth(partner_id))
        assert outcome.ok, f"{partner_id}: {outcome}"
        txn = outcome.response.transaction
        assert txn.partner == f"partners/{partner_id}", txn
        return outcome

    first = await earn(HOTEL_A, 1_000)
    different = await earn(HOTEL_B, 2_000)  # another payload under hotel-a's id
    same = await earn(RIDE_CO, 1_000)  # hotel-a's very payload and id
    names = {o.response.transaction.name for o in (first, different, same)}
    assert len(names) == 3, "a partner got another partner's stored transaction"
    assert not leaked(different.response, [HOTEL_A]) and not leaked(same.response, [HOTEL_A])


async def test_an_agency_acts_for_its_airlines_only_where_the_contract_says(world: World) -> None:
    """agency-a (authorized for air-a) may name members by air-a numbers but not link one
    (numbers are the airline's own accounts); air-a may reverse agency-a's booking for it."""
    by_number = members_pb2.LookupMemberRequest(
        program_number=common_pb2.ProgramNumber(program=f"partners/{AIR_A}", number="AIRA0001")
    )
    found = await invoke(
        world.channel, method_of("MemberService.LookupMember"), by_number, world.auth(AGENCY_A)
    )
    assert found.ok and found.response.member.name == world.member, str(found)
    link = members_pb2.LinkAccountRequest(
        request_id=world.rid(),
        member=common_pb2.MemberRef(loyalty_number=world.loyalty_number),
        linked_account=program_number(AIR_A, "AIRA0002"),
        verification_code="123456",
    )
    refused = await invoke(
        world.channel, method_of("MemberService.LinkAccount"), link, world.auth(AGENCY_A)
    )
    assert (refused.code, refused.reason) == (DENIED, "NOT_YOUR_ACCOUNT"), str(refused)
    reverse = points_pb2.ReverseTransactionRequest(
        request_id=world.rid(), transaction=await agency_booking(world), reason="CANCELLED"
    )
    by_airline = await invoke(
        world.channel, method_of("PointsService.ReverseTransaction"), reverse, world.auth(AIR_A)
    )
    assert by_airline.ok, str(by_airline)


async def test_a_key_revoked_mid_stream_earns_nothing_more(world: World) -> None:
    """RevokeApiKey "revokes an API key at once": a StreamEarnPoints opened with the key
    before the revocation must not record the items sent after it."""
    created = await _new_key(world)

    def item(reference: str) -> points_pb2.StreamEarnPointsRequest:
        earn = points_pb2.EarnPointsRequest(
            request_id=world.rid(),
            member=ref(world.member),
            purchase=usd(1_000),
            partner_reference=reference,
        )
        return points_pb2.StreamEarnPointsRequest(request=earn)

    before, after = f"HOTEL-A-BEFORE-{world.n()}", f"HOTEL-A-AFTER-{world.n()}"
    stream = world.points.StreamEarnPoints(metadata=bearer(created.secret), timeout=CALL_TIMEOUT_S)
    await stream.write(item(before))
    first = await stream.read()
    assert first.transaction.partner_reference == before, first
    await world.partners.RevokeApiKey(
        partners_pb2.RevokeApiKeyRequest(request_id=world.rid(), name=created.api_key.name),
        metadata=world.operator,
    )
    answers: list[Any] = []
    try:
        await stream.write(item(after))
        await stream.done_writing()
        while (answer := await stream.read()) is not grpc.aio.EOF:
            answers.append(answer)
    except grpc.aio.AioRpcError as err:
        assert err.code() is UNAUTHENTICATED, err
    assert not any(a.HasField("transaction") for a in answers), answers
    recorded = await invoke(
        world.channel,
        method_of("MemberService.ListTransactions"),
        members_pb2.ListTransactionsRequest(member=ref(world.member), page_size=20),
        world.auth(HOTEL_A),
    )
    references = {t.partner_reference for t in recorded.response.transactions}
    assert before in references and after not in references


# -- a foreign resource answers exactly like a missing one -----------------------------------

HIDDEN = {
    # row: the request field that names the resource
    "MemberService.UnlinkAccount": "name",
    "PartnerService.GetPartner": "name",
    "PointsService.CaptureRedemption": "transaction",
    "PointsService.VoidRedemption": "transaction",
    "PointsService.ReverseTransaction": "transaction",
    "PointsService.ReverseTransaction.agency_booking": "transaction",
    "RewardService.ValidateVoucher": "code",
    "RewardService.ConsumeVoucher": "code",
    "DonationService.GetDonationReceipt": "name",
    "DonationService.EndMatchingCampaign": "name",
}


def test_every_row_that_hides_foreign_resources_is_checked_below() -> None:
    hiding = {row for row, r in EXPECTED.items() if r.refused and r.refused[0] is NOT_FOUND}
    assert hiding == set(HIDDEN)


def _absent(field_name: str, value: str) -> str:
    """A well-formed name (or voucher code) of the same shape that names nothing."""
    if field_name == "code":
        return display_code(new_voucher_code())
    last = value[-1]
    return value[:-1] + ("0" if last != "0" else "1")


@pytest.mark.parametrize("row", sorted(HIDDEN))
async def test_a_foreign_resource_answers_exactly_like_a_missing_one(
    world: World, row: str
) -> None:
    expected = EXPECTED[row]
    # The other partner of the owner's type: the one most likely to guess the owner's names.
    kind = Kind.CHARITY if expected.owner == CHARITY_A else Kind.HOTEL
    field_name = HIDDEN[row]
    foreign = await REQUESTS[row].build(world)
    value = getattr(foreign, field_name)
    twin = type(foreign)()
    twin.CopyFrom(foreign)
    setattr(twin, field_name, _absent(field_name, value))
    answers = [await world.call(kind, expected.owner, row, m) for m in (foreign, twin)]
    assert [(a.code, a.reason) for a in answers] == [expected.refused] * 2, [
        str(a) for a in answers
    ]

    # Identical but for the name the caller sent itself (or its last part, an id).
    def masked(text: str, message: Any) -> str:
        name = getattr(message, field_name)
        return text.replace(name, "<name>").replace(name.rsplit("/", 1)[-1], "<id>")

    seen = [
        (masked(a.message, m), {k: masked(v, m) for k, v in a.metadata.items()})
        for a, m in zip(answers, (foreign, twin), strict=True)
    ]
    assert seen[0] == seen[1], f"a foreign resource is distinguishable from a missing one: {seen}"


# -- client certificates ---------------------------------------------------------------------


async def test_refused_certificates_are_refused_for_what_they_are(world: World) -> None:
    """The TLS cells are honest: the expired certificate is otherwise good (same CA, same
    partner as the owner-cert cells that pass) and the foreign one differs only in its issuer."""
    coalition_ca = x509.load_pem_x509_certificate(world.ca_pem)
    for owner, certs in world.certs.items():
        valid, expired, foreign = (
            x509.load_pem_x509_certificate(c.certificate_pem)
            for c in (certs.valid, certs.expired, certs.foreign)
        )
        assert expired.not_valid_after_utc < datetime.now(UTC) < valid.not_valid_after_utc
        assert expired.issuer == valid.issuer == coalition_ca.subject
        assert foreign.issuer != coalition_ca.subject
        for cert in (valid, expired, foreign):
            assert partner_id_from_certificate(cert.public_bytes(Encoding.PEM)) == owner


@pytest.mark.parametrize("which", ["valid", "expired", "foreign"])
async def test_a_certificate_on_the_api_key_port_is_never_trusted(world: World, which: str) -> None:
    """The TLS port that does not require client certificates does not ask for one either:
    whatever certificate a client offers there, it authenticates nobody (a port that took an
    unverified certificate would let a foreign CA name any partner)."""
    cert = getattr(world.certs[HOTEL_A], which)
    async with secure_channel(world.tls_target, world.ca_pem, cert) as channel:
        outcome = await _whoami(world, None, channel)
        assert (outcome.code, outcome.reason) == (UNAUTHENTICATED, "MISSING_CREDENTIALS"), outcome
        assert (await _whoami(world, bearer(world.keys[HOTEL_A]), channel)).ok


async def test_a_coalition_certificate_of_no_partner_is_unauthenticated(world: World) -> None:
    ghost = ca.issue_partner_certificate(
        world.authority, "ghost-partner", csr_pem=None, now=datetime.now(UTC)
    )
    async with secure_channel(world.mtls_target, world.ca_pem, ghost) as channel:
        outcome = await invoke(
            channel,
            method_of("PartnerService.GetPartner"),
            partners_pb2.GetPartnerRequest(name="partners/ghost-partner"),
            None,
        )
    assert (outcome.code, outcome.reason) == (UNAUTHENTICATED, "INVALID_CREDENTIALS"), outcome


async def test_a_bad_key_beside_a_good_certificate_is_not_ignored(world: World) -> None:
    """On the mTLS port a header is checked as on any port: no fallback to the certificate."""
    for header in (bearer(world.revoked[HOTEL_A]), [("authorization", "Basic x")]):
        outcome = await invoke(
            world.cert_channel(HOTEL_A),
            method_of("PartnerService.GetPartner"),
            partners_pb2.GetPartnerRequest(name=f"partners/{HOTEL_A}"),
            header,
        )
        assert (outcome.code, outcome.reason) == (UNAUTHENTICATED, "INVALID_CREDENTIALS"), outcome


# -- API keys: found by digest; secrets compared in constant time ----------------------------


def _compared_names(function: Any) -> set[str]:
    """Names used directly as an operand of ==, !=, <, in, is... inside a function."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {
        operand.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        for operand in (node.left, *node.comparators)
        if isinstance(operand, ast.Name)
    }


async def _new_key(world: World, partner_id: str = HOTEL_A) -> partners_pb2.CreateApiKeyResponse:
    created: partners_pb2.CreateApiKeyResponse = await world.partners.CreateApiKey(
        partners_pb2.CreateApiKeyRequest(request_id=world.rid(), parent=f"partners/{partner_id}"),
        metadata=world.operator,
    )
    return created


async def _whoami(world: World, metadata: Any, channel: Any = None) -> Outcome:
    return await invoke(
        channel or world.channel,
        method_of("PartnerService.GetPartner"),
        partners_pb2.GetPartnerRequest(name=f"partners/{HOTEL_A}"),
        metadata,
    )


def _near_miss(key: str) -> str:
    """The key with its last character changed: right prefix, right length, wrong key."""
    return key[:-1] + ("A" if key[-1] != "A" else "B")


async def test_api_keys_are_found_by_digest_and_never_compared(world: World) -> None:
    """No comparison of secrets can be a timing oracle: the secret is never compared, in
    Python or in SQL. The gateway looks up SHA-256(secret) (an index lookup on a digest of a
    256-bit random key: learning how much of a digest matched says nothing about any key), and
    its cache is keyed by that digest too."""
    for function in (partner_service.authenticate, auth.Authenticator._by_key):
        assert "secret" not in _compared_names(function), function.__qualname__
    key = (await _new_key(world)).secret
    near = _near_miss(key)
    sql: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sql.append(f"{statement} {parameters!r}")

    engine = world.ctx.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert (await _whoami(world, bearer(key))).ok
        assert (await _whoami(world, bearer(near))).code is UNAUTHENTICATED
        assert (await _whoami(world, bearer(world.revoked[HOTEL_A]))).code is UNAUTHENTICATED
    finally:
        event.remove(engine, "before_cursor_execute", record)
    sent = "\n".join(sql)
    for secret in (key, near, world.revoked[HOTEL_A]):
        assert secret not in sent, "an API key was sent to the database"
        assert hash_api_key(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert hash_api_key(key) in sent and hash_api_key(near) in sent, "not looked up by digest"

    authenticator = auth.Authenticator(world.ctx)
    caller = await authenticator._by_key(key)
    assert caller.partner_id == HOTEL_A
    assert list(authenticator.cache._entries) == [hash_api_key(key)]


async def test_secrets_compared_in_memory_go_through_compare_digest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PassKit authentication tokens, one-time link codes and webhook signatures are compared
    with hmac.compare_digest (each call made here is seen by a spy on it)."""
    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    card = await _issue_card(world)
    wrong_token = "0" * len(card.token)
    async with (
        aiohttp.ClientSession(base_url=world.web.base) as phone,
        phone.get(card.pass_path, headers=_apple(wrong_token)) as reply,
    ):
        assert reply.status == 401
    assert (wrong_token.encode(), card.token.encode()) in seen

    seen.clear()
    link = await _link_request(world)
    wrong = link.verification_code[:-1] + str((int(link.verification_code[-1]) + 1) % 10)
    link.verification_code = wrong
    refused = await invoke(
        world.channel, method_of("MemberService.LinkAccount"), link, world.auth(HOTEL_A)
    )
    assert refused.reason == "INVALID_VERIFICATION_CODE", refused
    assert seen, "the link code was not compared with compare_digest"

    seen.clear()
    secret = b"whsec_test"
    header = webhooks.sign(secret, b"{}", 1_700_000_000)
    with pytest.raises(webhooks.WebhookSignatureError):
        webhooks.verify(b"whsec_other", header, b"{}", now=1_700_000_000)
    assert seen, "webhook signatures were not compared with compare_digest"


# -- keys and tokens are never logged --------------------------------------------------------


@dataclass
class Card:
    token: str
    serial: str
    pass_type_id: str
    page_url: str

    @property
    def pass_path(self) -> str:
        return f"/passkit/v1/passes/{self.pass_type_id}/{self.serial}"


async def _issue_card(world: World) -> Card:
    issued = await world.wallet.IssueWalletCard(
        wallet_pb2.IssueWalletCardRequest(request_id=world.rid(), member=ref(world.member)),
        metadata=world.operator,
    )
    with zipfile.ZipFile(io.BytesIO(issued.pkpass)) as archive:
        pass_json = json.loads(archive.read("pass.json"))
    return Card(
        pass_json["authenticationToken"],
        pass_json["serialNumber"],
        pass_json["passTypeIdentifier"],
        issued.card_page_url,
    )


def _apple(token: str) -> dict[str, str]:
    return {"Authorization": f"ApplePass {token}"}


async def _link_request(world: World) -> members_pb2.LinkAccountRequest:
    request = await REQUESTS["MemberService.LinkAccount"].build(world)
    assert isinstance(request, members_pb2.LinkAccountRequest)
    return request


@dataclass
class Hook:
    """hotel-a's webhook endpoint: fails the first delivery, accepts the rest, checks each
    signature with the secret the partner was given."""

    secret: bytes
    now: int
    """The gateway's (fixed) clock, which signed the deliveries."""
    received: int = 0
    verified: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.received += 1
        body = await request.read()
        header = request.headers[webhooks.SIGNATURE_HEADER]
        webhooks.verify(self.secret, header, body, now=self.now)
        self.verified += 1
        return web.Response(status=500 if self.received == 1 else 204, text="try later")


@asynccontextmanager
async def _webhook_receiver(hook: Hook) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


async def test_keys_and_tokens_are_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG (SQL statements and their parameters included) while keys are
    created, used, mistyped and revoked, a private key is generated, a wallet card is issued,
    registered, fetched and pushed (APNs, Google OAuth), a link code is sent, mistyped and
    used, and webhooks are signed and delivered, one of them failing: no secret appears in any
    record (as the JSON log format writes it) nor in any answer a client got."""
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy keeps its own loggers at WARNING unless told: an operator debugging turns SQL
    # logging on, statements and parameters. (On SQLite, aiosqlite logs them at DEBUG anyway.)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    secrets: dict[str, str] = {"operator key": world.operator_key}
    secrets.update({f"key of {p}": k for p, k in world.keys.items()})
    secrets.update({f"revoked key of {p}": k for p, k in world.revoked.items()})
    told: list[str] = []

    # API keys: created, used, mistyped, sent under the wrong scheme, revoked, used again.
    created = await _new_key(world)
    key = secrets["new key"] = created.secret
    secrets["mistyped key"] = _near_miss(key)
    assert (await _whoami(world, bearer(key))).ok
    for metadata in (bearer(_near_miss(key)), [("authorization", f"Basic {key}")]):
        told.append((await _whoami(world, metadata)).raw)
    await world.partners.RevokeApiKey(
        partners_pb2.RevokeApiKeyRequest(request_id=world.rid(), name=created.api_key.name),
        metadata=world.operator,
    )
    told.append((await _whoami(world, bearer(key))).raw)
    assert (await _whoami(world, None, world.cert_channel(HOTEL_A))).ok

    # A client certificate whose key the gateway generated (returned once, never kept).
    issue = partners_pb2.IssueClientCertificateRequest(
        request_id=world.rid(), parent="partners/hotel-a"
    )
    issued = await world.partners.IssueClientCertificate(issue, metadata=world.operator)
    secrets["generated private key"] = issued.private_key_pem.splitlines()[1]
    replayed = await world.partners.IssueClientCertificate(issue, metadata=world.operator)
    assert replayed.certificate_pem == issued.certificate_pem
    assert not replayed.private_key_pem, "a replay shows the generated private key again"
    listed = await world.partners.ListApiKeys(
        partners_pb2.ListApiKeysRequest(parent="partners/hotel-a", page_size=100),
        metadata=world.operator,
    )
    assert created.api_key.prefix in str(listed) and key not in str(listed)

    # The wallet card: its pass token (also the key to the card page).
    card = await _issue_card(world)
    secrets["pass authentication token"] = card.token
    registration = f"/passkit/v1/devices/phone-1/registrations/{card.pass_type_id}/{card.serial}"
    async with aiohttp.ClientSession(base_url=world.web.base) as phone:
        for token, status in ((card.token, 201), ("0" * len(card.token), 401)):
            async with phone.post(
                registration, json={"pushToken": "a1b2c3"}, headers=_apple(token)
            ) as reply:
                assert reply.status == status
                told.append(await reply.text())
        async with phone.get(card.pass_path, headers=_apple(card.token)) as reply:
            assert reply.status == 200
        async with phone.get(card.page_url.removeprefix(world.web.base)) as reply:
            assert reply.status == 200
        wrong_page = card.page_url.replace(card.token, "0" * len(card.token))
        async with phone.get(wrong_page.removeprefix(world.web.base)) as reply:
            assert reply.status in (401, 403, 404)
            told.append(await reply.text())

    # A one-time link code: sent (by mail, through the log channel below), mistyped, used.
    link = await _link_request(world)
    code = link.verification_code
    right = link.verification_code
    link.verification_code = "999999" if code != "999999" else "999998"
    refused = await invoke(
        world.channel, method_of("MemberService.LinkAccount"), link, world.auth(HOTEL_A)
    )
    told.append(refused.raw)
    link.verification_code = right
    link.request_id = world.rid()
    linked = await invoke(
        world.channel, method_of("MemberService.LinkAccount"), link, world.auth(HOTEL_A)
    )
    assert linked.ok, linked

    # Webhooks: hotel-a gets a webhook and earns; the deliverer signs with its secret.
    secret = world.ctx.vault.webhook_secret(HOTEL_A, 1)
    secrets["webhook secret"] = secret
    hook = Hook(secret.encode(), int(world.ctx.clock.now().timestamp()))
    async with _webhook_receiver(hook) as url, aiohttp.ClientSession() as session:
        await world.partners.UpdatePartner(
            partners_pb2.UpdatePartnerRequest(
                request_id=world.rid(),
                partner=partners_pb2.Partner(name=f"partners/{HOTEL_A}", webhook_url=url),
                update_mask=field_mask_pb2.FieldMask(paths=["webhook_url"]),
            ),
            metadata=world.operator,
        )
        for _ in range(2):  # a voucher of hotel-a's reward is an event for hotel-a
            await world.redeem_voucher()
        deliverer = delivery.Deliverer(world.ctx, WebhookSender(session, timeout_s=5), LogChannel())
        for _ in range(DELIVERY_ROUNDS_MAX):
            if not await deliverer.run_once():
                break
    assert hook.received >= 2 and hook.verified == hook.received, hook
    # The card changed: push it to the registered phone and patch Google (OAuth token).
    await CardUpdater(world.ctx, world.web.rig.wallet).run_once()
    assert world.web.rig.apns.pushes and world.web.rig.google.tokens_issued
    secrets["Google access token"] = f"ya29.test-{world.web.rig.google.tokens_issued}"

    formatter = JsonFormatter()
    records = caplog.records
    assert any(r.name.startswith("sqlalchemy.engine") for r in records), "SQL was not logged"
    assert any("notification" in r.getMessage() for r in records), "no mail went out"
    for record in records:
        written = formatter.format(record) + record.getMessage()
        for what, value in secrets.items():
            assert value not in written, f"{what} logged by {record.name}: {written[:300]}"
        if not record.name.startswith(SQL_LOGGERS):  # the outbox keeps the code until mailed
            assert not re.search(rf"(?<!\d){code}(?!\d)", written), f"link code: {written[:300]}"
    for answer in told:
        for what, value in secrets.items():
            assert value not in answer, f"{what} echoed to a client: {answer[:300]}"


def test_matrix_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the matrix as observed (the last test of the module, after every cell ran)."""
    if not RESULTS:
        pytest.skip("no cell ran in this session")
    kinds = list(Kind)
    width = max(len(row) for row in EXPECTED)
    lines = [
        f"{'':{width}} " + " ".join(f"{i:>2}" for i in range(len(kinds))),
        *(
            f"{row:{width}} "
            + " ".join(f"{_short(RESULTS.get((row, kind), '?')):>2}" for kind in kinds)
            for row in EXPECTED
        ),
        "columns: " + ", ".join(f"{i} {kind}" for i, kind in enumerate(kinds)),
        "ok = allowed and succeeded, U = UNAUTHENTICATED, T = refused by TLS,"
        " D = PERMISSION_DENIED, N = NOT_FOUND",
    ]
    allowed = sum(EXPECTED[row].answer(kind)[0] is OK for row in EXPECTED for kind in kinds)
    cells = len(EXPECTED) * len(kinds)
    lines.append(
        f"{len(EXPECTED)} rows ({len(METHODS)} RPCs) x {len(kinds)} callers = {cells} cells:"
        f" {allowed} allowed, {cells - allowed} refused; {len(RESULTS)} checked in this run"
    )
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def _short(symbol: str) -> str:
    return {"ok": "ok", "unauth": "U", "tls": "T", "denied": "D", "hidden": "N"}.get(symbol, "!")
