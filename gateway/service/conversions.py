"""Conversions: a member's coalition points become miles in an airline's program.

The points leave the member at once (first in, first out); the miles are a separate asset the
airline owes the member's program account. The airline hears of it through the outbox (a
signed "PointsConverted" webhook) and credits the number in its own system; if it cannot, it
reverses the CONVERSION (PointsService.ReverseTransaction) and the member gets the points back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain import ledger as dl
from gateway.domain import members as dm
from gateway.domain import programs
from gateway.domain.errors import FailedPrecondition, InvalidArgument
from gateway.service import ledger, links, outbox, partners
from gateway.service.context import AppContext

POINTS_CONVERTED = "PointsConverted"


@dataclass(frozen=True)
class Conversion:
    transaction: dl.Transaction
    units: int
    unit: str
    program_number: str


async def convert(
    conn: AsyncConnection, ctx: AppContext, airline_id: str, member: dm.Member, points: int
) -> Conversion:
    """The CONVERSION, and what it credited to which of the member's numbers."""
    airline = await partners.get(conn, airline_id)
    program = airline.settings.program
    if program is None:
        raise InvalidArgument.on_field(
            "program", "NOT_AN_AIRLINE", f"{airline.name} runs no loyalty program"
        )
    units = programs.convert(program, airline.name, points)
    if not airline.settings.webhook_url:
        raise FailedPrecondition(
            "CONVERSION_NOT_OFFERED",
            f"{airline.name} has no webhook to be told of conversions; the operator sets one",
            {"program": airline.name},
        )
    number = await links.program_number_of(conn, ctx, member.id, airline.id)
    if number is None:
        raise FailedPrecondition(
            "PROGRAM_NOT_LINKED",
            f"the member has no {airline.name} number linked; link one first (LinkAccount)",
            {"program": airline.name},
        )
    description = (
        f"{points:,} points to {units:,} {program.unit} at {program.conversion_rate} per point"
    )
    txn = await ledger.convert(
        conn, ctx, airline.id, member.id, points, units, program.unit, description
    )
    await outbox.emit(
        conn,
        ctx,
        POINTS_CONVERTED,
        txn.name,
        {
            "transaction": txn.name,
            "program": airline.name,
            "program_number": number,
            "points": points,
            "units": units,
            "unit": program.unit,
            "create_time": txn.create_time.isoformat(),
        },
        partner_ids=(airline.id,),
    )
    return Conversion(txn, units, program.unit, number)
