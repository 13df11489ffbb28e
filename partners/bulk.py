"""Bulk submission of a partner's CSV (hotel folios, agency bookings) through StreamEarnPoints.

The file is read row by row and streamed; results are written as they arrive, so memory stays
flat however long the file is. Each row is idempotent on its request_id (or, without one, its
partner_reference), so submitting the same file again creates nothing new.

Columns (a header row names them; order and case do not matter, unknown columns are ignored):

    request_id          idempotency key (default: partner_reference)
    member | loyalty_number | phone_number | account_id | program_number
                        exactly one: who earns (account_id is the partner's own id for the
                        member; program_number an airline number, with on_behalf_of)
    amount, currency    a purchase: "123.45" in major units, ISO 4217 code
    category            optional purchase category
    action, points      instead of a purchase: an action code and the points it earns
    partner_reference   receipt, folio or booking id
    occur_time          when it happened, ISO 8601 with a zone (default: now)
    vest_time           optional: pending until then
    on_behalf_of        "partners/{airline}" (travel agencies; --on-behalf-of sets a default)

A row that cannot be read is reported in the results with status INVALID and not sent.
"""

from __future__ import annotations

import asyncio
import csv
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from babel.numbers import get_currency_precision, is_currency

from coalition.v1 import common_pb2, points_pb2

MEMBER_COLUMNS = ("member", "loyalty_number", "phone_number", "account_id", "program_number")
RESULT_COLUMNS = ("line", "request_id", "status", "points", "transaction", "reason", "message")
IN_FLIGHT_MAX = 1024
"""Rows sent and not yet answered; a few server batches' worth keeps the stream busy."""
FIELD_CHARS_MAX = 1024
"""A cell longer than this is not data from a partner system; the server would refuse it too."""


class RowError(ValueError):
    """A row that cannot become a request; its message says which column and why."""


@dataclass(frozen=True)
class Row:
    line: int
    request: points_pb2.EarnPointsRequest


@dataclass
class Summary:
    ok: int = 0
    parked: int = 0
    failed: int = 0
    invalid: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.parked + self.failed + self.invalid


def _timestamp(raw: str, column: str) -> datetime:
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise RowError(f"{column}: {raw!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise RowError(f"{column}: {raw!r} needs a zone (Z or +01:00)")
    return when


def minor_units(amount: str, currency: str) -> int:
    """'123.45' USD -> 12345; refuses more decimals than the currency has."""
    if not is_currency(currency):
        raise RowError(f"currency: {currency!r} is not an ISO 4217 code")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise RowError(f"amount: {amount!r} is not a number") from None
    exponent = int(get_currency_precision(currency))
    scaled = value.scaleb(exponent)
    if not value.is_finite() or scaled != scaled.to_integral_value():
        raise RowError(f"amount: {amount!r} has more than {exponent} decimals for {currency}")
    return int(scaled)


def to_request(row: dict[str, str], on_behalf_of: str = "") -> points_pb2.EarnPointsRequest:
    """The EarnPoints request a CSV row describes (keys lower-case, values stripped)."""
    cell = {k: v for k, v in row.items() if v}
    too_long = [k for k, v in cell.items() if len(v) > FIELD_CHARS_MAX]
    if too_long:
        raise RowError(f"{too_long[0]}: longer than {FIELD_CHARS_MAX} characters")
    named = [c for c in MEMBER_COLUMNS if c in cell]
    if len(named) != 1:
        raise RowError("name the member in exactly one of " + ", ".join(MEMBER_COLUMNS))
    column, value = named[0], cell[named[0]]
    request = points_pb2.EarnPointsRequest(
        request_id=cell.get("request_id") or cell.get("partner_reference", ""),
        partner_reference=cell.get("partner_reference", ""),
        on_behalf_of=cell.get("on_behalf_of", on_behalf_of),
    )
    if not request.request_id:
        raise RowError("request_id: empty, and no partner_reference to use instead")
    if column == "account_id":
        request.member.partner_account.external_id = value
    elif column == "program_number":
        request.member.program_number.CopyFrom(
            common_pb2.ProgramNumber(program=request.on_behalf_of, number=value)
        )
    else:
        setattr(request.member, column, value)
    if "amount" in cell:
        currency = cell.get("currency", "").upper()
        request.purchase.CopyFrom(
            common_pb2.Purchase(
                amount_minor=minor_units(cell["amount"], currency),
                currency_code=currency,
                category=cell.get("category", ""),
            )
        )
    elif "action" in cell:
        request.action = cell["action"]
        try:
            request.points = int(cell.get("points", "0"))
        except ValueError:
            raise RowError(f"points: {cell['points']!r} is not a whole number") from None
    else:
        raise RowError("give amount and currency (a purchase) or action (with points)")
    for name in ("occur_time", "vest_time"):
        if name in cell:
            getattr(request, name).FromDatetime(_timestamp(cell[name], name))
    return request


def read_rows(source: TextIO, on_behalf_of: str = "") -> Iterator[Row | tuple[int, RowError]]:
    """Rows of the file, lazily: a request per readable row, else (line, the error)."""
    reader = csv.DictReader(source)
    if reader.fieldnames is None:
        return
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
    for record in reader:
        line = reader.line_num
        clean = {k: (v or "").strip() for k, v in record.items() if k is not None}
        try:
            yield Row(line, to_request(clean, on_behalf_of))
        except RowError as err:
            yield line, err


async def submit(
    rows: Iterator[Row | tuple[int, RowError]],
    stream: Callable[[AsyncIterator[points_pb2.StreamEarnPointsRequest]], Any],
    results: Any,
    on_result: Callable[[], None] = lambda: None,
) -> Summary:
    """Stream the rows, write one result row per CSV row (csv.writer `results`).

    `stream` opens StreamEarnPoints with a request iterator and returns the response iterator.
    At most IN_FLIGHT_MAX rows are sent and not yet answered: HTTP/2 windows grow large
    enough to swallow a whole file, so the bound is kept here, not left to the transport.
    """
    summary = Summary()
    in_flight: deque[Row] = deque()
    room = asyncio.Semaphore(IN_FLIGHT_MAX)
    results.writerow(RESULT_COLUMNS)

    async def requests() -> AsyncIterator[points_pb2.StreamEarnPointsRequest]:
        for item in rows:
            if isinstance(item, Row):
                await room.acquire()  # released by its answer
                in_flight.append(item)
                yield points_pb2.StreamEarnPointsRequest(request=item.request)
            else:
                line, err = item
                summary.invalid += 1
                results.writerow((line, "", "INVALID", "", "", "INVALID_ROW", str(err)))
                on_result()

    async for response in stream(requests()):
        row = in_flight.popleft()
        room.release()
        if response.WhichOneof("result") == "transaction":
            txn = response.transaction
            parked = txn.state == common_pb2.TRANSACTION_STATE_PARKED
            summary.parked += parked
            summary.ok += not parked
            status = "PARKED" if parked else "OK"
            results.writerow((row.line, response.request_id, status, txn.points, txn.name, "", ""))
        else:
            error = response.error
            summary.failed += 1
            results.writerow(
                (row.line, response.request_id, "FAILED", "", "", error.reason, error.message)
            )
        on_result()
    return summary
