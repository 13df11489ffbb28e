"""DonationService over real gRPC: donating, who reads what, matching, receipts, pledges.

The ctx fixture runs `coalition ledger verify` after every test: the charity accounts must hold
exactly what the donations say, and every matching budget counter must equal its matches.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from typing import Any

import grpc
import pytest
from donation_api import EXPIRING, MONTHLY, Donations, profile
from earn_api import Api, Meta, rid
from errors import expect_error
from pypdf import PdfReader
from sqlalchemy import select

from coalition.v1 import common_pb2, donations_pb2
from gateway.domain.donations import parse_receipt_number
from gateway.service import outbox
from gateway.service.outbox import DELIVERIES, EVENTS

OCEANS = "charities/oceans"
BOOKS = "charities/books"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
MISSING = grpc.StatusCode.NOT_FOUND
REFUSED = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def api(gateway: Any) -> Api:
    return Api(gateway)


@pytest.fixture
def gifts(gateway: Any) -> Donations:
    return Donations(gateway)


@pytest.fixture
async def hotel(gateway: Any) -> Meta:
    _, key = await gateway.create_partner("grand-hotel")
    return list(gateway.auth(key))


@pytest.fixture
async def oceans(gateway: Any, gifts: Donations) -> Meta:
    key = await gifts.charity(
        "oceans", "Clean Oceans", charity=profile(causes=["ENVIRONMENT", "OCEANS"])
    )
    return list(gateway.auth(key))


@pytest.fixture
async def books(gateway: Any, gifts: Donations) -> Meta:
    key = await gifts.charity(
        "books", "Open Books", settlement_currency_code="GBP", charity=profile(250, 8_00)
    )
    return list(gateway.auth(key))


@pytest.fixture
async def ada(api: Api, hotel: Meta) -> str:
    """A member with 5,000 points (USD 500 at 10 points per dollar)."""
    member = await api.enroll("Ada Lovelace")
    await api.buy(hotel, member, 500_00)
    return member


async def available(api: Api, member: str) -> int:
    return (await api.balance(member)).available_points


# -- donating --------------------------------------------------------------------------------


async def test_a_donation_moves_points_to_the_charity_once(
    api: Api, gifts: Donations, oceans: Meta, ada: str
) -> None:
    request_id = rid()
    first = await gifts.donate_call(gifts.operator, ada, OCEANS, 1_234, request_id)
    again = await gifts.donate_call(gifts.operator, ada, OCEANS, 1_234, request_id)

    assert again == first
    donation = first.donation
    assert donation.member == ada
    assert donation.charity == OCEANS
    assert donation.points == 1_234
    assert donation.kind == donations_pb2.DONATION_KIND_ONE_OFF
    # 1,234 points at USD 10.00 per thousand: USD 12.34, rounded down to the cent.
    assert donation.value == common_pb2.Money(amount_minor=12_34, currency_code="USD")
    assert parse_receipt_number(donation.receipt_number) is not None
    assert first.transaction.type == common_pb2.TRANSACTION_TYPE_DONATION
    assert first.transaction.points == -1_234
    assert first.transaction.name == donation.transaction
    assert await available(api, ada) == 5_000 - 1_234
    history = await api.history(ada)
    assert [t.type for t in history].count(common_pb2.TRANSACTION_TYPE_DONATION) == 1
    assert [d.name for d in await gifts.listing(oceans, OCEANS)] == [donation.name]


async def test_a_request_id_reused_for_another_donation_is_refused(
    gifts: Donations, oceans: Meta, ada: str
) -> None:
    request_id = rid()
    await gifts.donate_call(gifts.operator, ada, OCEANS, 500, request_id)
    await expect_error(
        gifts.donate_call(gifts.operator, ada, OCEANS, 600, request_id),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )


async def test_a_member_cannot_give_more_than_is_available(
    api: Api, gifts: Donations, oceans: Meta, ada: str
) -> None:
    await expect_error(
        gifts.donate_call(gifts.operator, ada, OCEANS, 5_001), REFUSED, "INSUFFICIENT_POINTS"
    )
    assert await available(api, ada) == 5_000
    assert await gifts.listing(oceans, OCEANS) == []


@pytest.mark.parametrize(
    ("charity", "points", "code", "reason"),
    [
        pytest.param(OCEANS, 99, REFUSED, "BELOW_MINIMUM_DONATION", id="below-minimum"),
        pytest.param(OCEANS, 0, INVALID, "INVALID_POINTS", id="zero"),
        pytest.param(OCEANS, -5, INVALID, "INVALID_POINTS", id="negative"),
        pytest.param("charities/nobody", 500, MISSING, "CHARITY_NOT_FOUND", id="unknown"),
        pytest.param("charities/grand-hotel", 500, MISSING, "CHARITY_NOT_FOUND", id="a-hotel"),
        pytest.param("partners/oceans", 500, INVALID, "INVALID_CHARITY_NAME", id="bad-name"),
    ],
)
async def test_a_donation_that_cannot_be_made_says_why(
    gifts: Donations,
    oceans: Meta,
    ada: str,
    charity: str,
    points: int,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    await expect_error(gifts.donate_call(gifts.operator, ada, charity, points), code, reason)


async def test_a_paused_charity_takes_nothing_and_is_not_listed(
    api: Api, gifts: Donations, oceans: Meta, books: Meta, ada: str
) -> None:
    await api.update_partner_call("partners/oceans", ["charity"], charity=profile(paused=True))
    await expect_error(
        gifts.donate_call(gifts.operator, ada, OCEANS, 500), REFUSED, "CHARITY_NOT_ACCEPTING"
    )
    assert [c.name for c in await gifts.charities(gifts.operator)] == [BOOKS]


async def test_a_partner_donates_for_a_member_and_a_charity_cannot(
    gifts: Donations, hotel: Meta, oceans: Meta, ada: str
) -> None:
    made = await gifts.donate(hotel, ada, OCEANS, 500)
    assert made.donation.points == 500
    await expect_error(
        gifts.donate_call(oceans, ada, OCEANS, 500), DENIED, "PARTNER_NOT_AUTHORIZED"
    )


# -- who reads what --------------------------------------------------------------------------


async def test_a_charity_reads_only_its_own_donations(
    gifts: Donations, hotel: Meta, oceans: Meta, books: Meta, ada: str
) -> None:
    to_oceans = (await gifts.donate(gifts.operator, ada, OCEANS, 500)).donation
    to_books = (await gifts.donate(gifts.operator, ada, BOOKS, 300)).donation

    assert [d.name for d in await gifts.listing(oceans, OCEANS)] == [to_oceans.name]
    assert [d.name for d in await gifts.listing(books, BOOKS)] == [to_books.name]
    for meta, parent in ((oceans, BOOKS), (books, OCEANS), (hotel, OCEANS), (oceans, ada)):
        await expect_error(gifts.list_call(meta, parent), DENIED, "PARTNER_NOT_AUTHORIZED")
    # Another charity's receipt does not exist for a charity; the operator sees every one.
    await expect_error(gifts.receipt_call(oceans, to_books.name), MISSING, "DONATION_NOT_FOUND")
    await expect_error(gifts.receipt_call(hotel, to_books.name), MISSING, "DONATION_NOT_FOUND")
    mine = await gifts.receipt_call(books, to_books.name)
    assert mine.receipt.receipt_number == to_books.receipt_number
    member_view = await gifts.listing(gifts.operator, ada)
    assert [d.name for d in member_view] == [to_books.name, to_oceans.name]  # newest first


async def test_donations_page_newest_first(gifts: Donations, oceans: Meta, ada: str) -> None:
    made = [(await gifts.donate(gifts.operator, ada, OCEANS, 100 + i)).donation for i in range(5)]
    pages = []
    token = ""
    while True:
        reply = await gifts.list_call(oceans, OCEANS, 2, token)
        pages.append([d.points for d in reply.donations])
        token = reply.next_page_token
        if not token:
            break
    assert pages == [[104, 103], [102, 101], [100]]
    assert len({d.receipt_number for d in made}) == 5
    await expect_error(gifts.list_call(oceans, OCEANS, 2, "garbage"), INVALID, "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    "parent", ["", "members", "charities/", "charities/a/b", "partners/oceans"]
)
async def test_a_malformed_parent_is_refused(gifts: Donations, parent: str) -> None:
    await expect_error(gifts.list_call(gifts.operator, parent), INVALID, "INVALID_PARENT")


async def test_charities_are_listed_by_name_with_their_terms(
    gifts: Donations, hotel: Meta, oceans: Meta, books: Meta
) -> None:
    listed = await gifts.charities(hotel)
    assert [c.display_name for c in listed] == ["Clean Oceans", "Open Books"]
    ocean = listed[0]
    assert list(ocean.causes) == ["ENVIRONMENT", "OCEANS"]
    assert ocean.minimum_donation_points == 100
    assert ocean.value_per_thousand_points == common_pb2.Money(
        amount_minor=10_00, currency_code="USD"
    )
    assert listed[1].value_per_thousand_points.currency_code == "GBP"
    assert [c.name for c in await gifts.charities(hotel, cause="OCEANS")] == [OCEANS]
    assert [c.name for c in await gifts.charities(hotel, page_size=1)] == [OCEANS, BOOKS]


# -- matching --------------------------------------------------------------------------------


async def test_a_sponsor_matches_until_its_budget_is_spent(
    api: Api, gateway: Any, gifts: Donations, hotel: Meta, oceans: Meta, ada: str
) -> None:
    end = gateway.ctx.clock.now() + timedelta(days=30)
    campaign = await gifts.matching(hotel, OCEANS, 1_500, end)
    assert campaign.sponsor == "partners/grand-hotel"

    first = (await gifts.donate(gifts.operator, ada, OCEANS, 1_000)).donation
    matching = (await gifts.charities(hotel))[0]
    second = (await gifts.donate(gifts.operator, ada, OCEANS, 1_000)).donation
    third = (await gifts.donate(gifts.operator, ada, OCEANS, 1_000)).donation

    assert [d.matched_points for d in (first, second, third)] == [1_000, 500, 0]
    assert second.matching_sponsor == "partners/grand-hotel"
    assert second.matched_value == common_pb2.Money(amount_minor=5_00, currency_code="USD")
    assert third.matching_sponsor == ""
    assert await available(api, ada) == 2_000  # the sponsor's points are not the member's
    listed = await gifts.stub.ListMatchingCampaigns(
        donations_pb2.ListMatchingCampaignsRequest(parent=OCEANS), metadata=oceans
    )
    assert [c.spent_points for c in listed.matching_campaigns] == [1_500]
    receipt = (await gifts.receipt_call(gifts.operator, second.name)).receipt
    assert receipt.matched_points == 500
    assert receipt.matching_sponsor_display_name == "Grand-Hotel"
    assert (matching.matching_sponsor, matching.matching_percent) == ("partners/grand-hotel", 100)
    spent = (await gifts.charities(hotel))[0]  # a spent budget matches nothing: not advertised
    assert (spent.matching_sponsor, spent.matching_percent) == ("", 0)


async def test_matching_campaigns_follow_their_rules(
    gateway: Any, gifts: Donations, hotel: Meta, oceans: Meta
) -> None:
    now = gateway.ctx.clock.now()
    end = now + timedelta(days=30)
    await gifts.matching(hotel, OCEANS, 1_000, end)
    await expect_error(
        gifts.matching_call(gifts.operator, OCEANS, 1_000, end, sponsor="partners/grand-hotel"),
        REFUSED,
        "MATCHING_OVERLAP",
    )
    later = await gifts.matching(
        gifts.operator,
        OCEANS,
        1_000,
        end + timedelta(days=30),
        sponsor="partners/grand-hotel",
        start=end,
    )
    assert later.start_time.ToSeconds() == int(end.timestamp())
    await expect_error(
        gifts.matching_call(oceans, OCEANS, 1_000, end), DENIED, "PARTNER_NOT_AUTHORIZED"
    )
    await expect_error(
        gifts.matching_call(hotel, OCEANS, 1_000, end, sponsor="partners/other"),
        DENIED,
        "PARTNER_NOT_AUTHORIZED",
    )
    await expect_error(
        gifts.matching_call(hotel, OCEANS, 1_000, now - timedelta(days=1)),
        INVALID,
        "INVALID_TIME_RANGE",
    )
    await expect_error(
        gifts.matching_call(hotel, OCEANS, 1_000, end, percent=0), INVALID, "OUT_OF_RANGE"
    )
    await expect_error(
        gifts.matching_call(gifts.operator, OCEANS, 1_000, end), INVALID, "MISSING_SPONSOR"
    )


async def test_an_ended_campaign_matches_nothing_more(
    gateway: Any, gifts: Donations, hotel: Meta, oceans: Meta, ada: str
) -> None:
    end = gateway.ctx.clock.now() + timedelta(days=30)
    campaign = await gifts.matching(hotel, OCEANS, 10_000, end)
    request = donations_pb2.EndMatchingCampaignRequest(request_id=rid(), name=campaign.name)
    await expect_error(
        gifts.stub.EndMatchingCampaign(request, metadata=oceans),
        MISSING,
        "MATCHING_CAMPAIGN_NOT_FOUND",
    )
    ended = (await gifts.stub.EndMatchingCampaign(request, metadata=hotel)).matching_campaign
    assert ended.HasField("stop_time")
    gift = (await gifts.donate(gifts.operator, ada, OCEANS, 1_000)).donation
    assert gift.matched_points == 0
    again = donations_pb2.EndMatchingCampaignRequest(request_id=rid(), name=campaign.name)
    await expect_error(
        gifts.stub.EndMatchingCampaign(again, metadata=hotel), REFUSED, "CAMPAIGN_ENDED"
    )


# -- receipts --------------------------------------------------------------------------------


async def test_a_receipt_comes_as_data_html_and_pdf(
    gateway: Any, gifts: Donations, hotel: Meta, oceans: Meta, ada: str
) -> None:
    await gifts.matching(hotel, OCEANS, 10_000, gateway.ctx.clock.now() + timedelta(days=1))
    gift = (await gifts.donate(gifts.operator, ada, OCEANS, 2_500)).donation

    data = await gifts.receipt_call(oceans, gift.name)
    receipt = data.receipt
    assert (receipt.donor_name, receipt.charity_display_name) == ("Ada Lovelace", "Clean Oceans")
    assert (receipt.points, receipt.matched_points) == (2_500, 2_500)
    assert receipt.value == common_pb2.Money(amount_minor=25_00, currency_code="USD")
    assert receipt.donate_time == gift.create_time
    assert (data.document, data.content_type) == (b"", "")

    html = await gifts.receipt_call(oceans, gift.name, donations_pb2.RECEIPT_FORMAT_HTML)
    assert html.content_type == "text/html; charset=utf-8"
    page = html.document.decode()
    for text in (gift.receipt_number, "Ada Lovelace", "Clean Oceans", "2,500", "USD 25.00"):
        assert text in page, text

    pdf = await gifts.receipt_call(oceans, gift.name, donations_pb2.RECEIPT_FORMAT_PDF)
    assert pdf.content_type == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.document)).pages)
    for expected in (gift.receipt_number, "Ada Lovelace", "Clean Oceans", "USD 25.00"):
        assert expected in text, expected

    await expect_error(gifts.receipt_call(oceans, gift.name, 9), INVALID, "INVALID_RECEIPT_FORMAT")
    await expect_error(
        gifts.receipt_call(oceans, "charities/oceans/donations/nope"), MISSING, "DONATION_NOT_FOUND"
    )


# -- pledges and events ----------------------------------------------------------------------


async def test_pledges_are_taken_listed_and_cancelled(
    gifts: Donations, hotel: Meta, oceans: Meta, ada: str
) -> None:
    monthly = (await gifts.pledge_call(hotel, ada, OCEANS, MONTHLY, 300)).pledge
    expiring = (await gifts.pledge_call(gifts.operator, ada, OCEANS, EXPIRING)).pledge
    assert monthly.partner == "partners/grand-hotel" and expiring.partner == ""
    assert monthly.HasField("next_donate_time") and not expiring.HasField("next_donate_time")
    await expect_error(
        gifts.pledge_call(gifts.operator, ada, OCEANS, EXPIRING), REFUSED, "PLEDGE_EXISTS"
    )
    await expect_error(
        gifts.pledge_call(gifts.operator, ada, OCEANS, EXPIRING, 100),
        INVALID,
        "POINTS_NOT_ALLOWED",
    )
    await expect_error(
        gifts.pledge_call(gifts.operator, ada, OCEANS, 0, 100), INVALID, "INVALID_PLEDGE_KIND"
    )
    await expect_error(
        gifts.pledge_call(oceans, ada, OCEANS, MONTHLY, 300), DENIED, "PARTNER_NOT_AUTHORIZED"
    )

    cancel = donations_pb2.CancelPledgeRequest(request_id=rid(), name=expiring.name)
    await expect_error(
        gifts.stub.CancelPledge(cancel, metadata=hotel), DENIED, "PARTNER_NOT_AUTHORIZED"
    )
    cancelled = (await gifts.stub.CancelPledge(cancel, metadata=gifts.operator)).pledge
    assert cancelled.HasField("cancel_time")

    listing = donations_pb2.ListPledgesRequest(member=common_pb2.MemberRef(member=ada))
    live = await gifts.stub.ListPledges(listing, metadata=hotel)
    assert [p.name for p in live.pledges] == [monthly.name]
    listing.show_cancelled = True
    both = await gifts.stub.ListPledges(listing, metadata=hotel)
    assert {p.name for p in both.pledges} == {monthly.name, expiring.name}


async def test_the_member_and_the_charity_are_told(
    gateway: Any, gifts: Donations, oceans: Meta, ada: str
) -> None:
    gift = (await gifts.donate(gifts.operator, ada, OCEANS, 700)).donation
    async with gateway.ctx.database.connect() as conn:
        events = await outbox.events(conn, subject=ada, type_="DonationMade")
    assert len(events) == 1
    payload = events[0].payload
    assert payload["donation"] == gift.name
    assert payload["receipt_number"] == gift.receipt_number
    assert payload["points"] == 700


async def test_the_sponsor_hears_what_it_funds_but_not_who_gave(
    api: Api, gateway: Any, gifts: Donations, hotel: Meta, oceans: Meta, ada: str
) -> None:
    for partner in ("partners/grand-hotel", "partners/oceans"):
        await api.update_partner_call(
            partner, ["webhook_url"], webhook_url="http://localhost:9/hook"
        )
    campaign = await gifts.matching(hotel, OCEANS, 10_000, gateway.ctx.clock.now() + timedelta(1))
    gift = (await gifts.donate(gifts.operator, ada, OCEANS, 800)).donation
    async with gateway.ctx.database.connect() as conn:
        (matched,) = await outbox.events(conn, subject=campaign.name, type_="DonationMatched")
        deliveries = (
            await conn.execute(
                select(DELIVERIES.c.destination, EVENTS.c.type)
                .join(EVENTS, EVENTS.c.seq == DELIVERIES.c.event_seq)
                .where(EVENTS.c.type.in_(["DonationMade", "DonationMatched"]))
            )
        ).all()
    assert matched.payload["donation"] == gift.name
    assert matched.payload["matched_points"] == 800
    assert not {"member", "receipt_number", "transaction"} & set(matched.payload)
    sent = {(destination, kind) for destination, kind in deliveries if "partner:" in destination}
    assert sent == {("partner:oceans", "DonationMade"), ("partner:grand-hotel", "DonationMatched")}


# A NUL anywhere in a string field is refused at the edge (INVALID_CHARACTERS), before any
# name is parsed; a NUL inside a page token's encoded content is the token's own error.
@pytest.mark.parametrize(
    ("call", "reason"),
    [
        pytest.param(
            lambda g, m: g.donate_call(g.operator, m, "charities/oc\x00eans", 500),
            "INVALID_CHARACTERS",
            id="donate",
        ),
        pytest.param(
            lambda g, m: g.receipt_call(g.operator, "charities/oceans/donations/a\x00b"),
            "INVALID_CHARACTERS",
            id="receipt",
        ),
        pytest.param(
            lambda g, m: g.list_call(g.operator, "charities/oc\x00eans"),
            "INVALID_CHARACTERS",
            id="list",
        ),
        pytest.param(
            lambda g, m: g.list_call(g.operator, m, 1, page_token({"seq": 2**70})),
            "INVALID_PAGE_TOKEN",
            id="huge-seq",
        ),
        pytest.param(
            lambda g, m: g.stub.ListPledges(
                donations_pb2.ListPledgesRequest(
                    member=common_pb2.MemberRef(member=m),
                    page_token=page_token({"t": "0001-01-01T00:00:00+05:00", "id": "x"}),
                ),
                metadata=g.operator,
            ),
            "INVALID_PAGE_TOKEN",
            id="time-before-utc-began",
        ),
        pytest.param(
            lambda g, m: g.stub.ListCharities(
                donations_pb2.ListCharitiesRequest(
                    page_token=page_token({"n": "a\x00", "id": "x"})
                ),
                metadata=g.operator,
            ),
            "INVALID_PAGE_TOKEN",
            id="nul-in-token",
        ),
    ],
)
async def test_hostile_names_and_tokens_are_refused_not_crashed_on(
    gifts: Donations, oceans: Meta, ada: str, call: Any, reason: str
) -> None:
    await expect_error(call(gifts, ada), INVALID, reason)


def page_token(position: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()
