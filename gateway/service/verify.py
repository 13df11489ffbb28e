"""`coalition ledger verify`: recompute what can be recomputed and check every invariant."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from gateway.adapters import repository as repo
from gateway.adapters.migrate import SchemaState, schema_state
from gateway.domain.members import luhn_check_digit
from gateway.service.context import AppContext

VERIFY_BATCH_ROWS = 1_000
VERIFY_PROBLEMS_MAX = 100
"""Stop listing after this many; one is enough to fail, a hundred are enough to diagnose."""


@dataclass
class Report:
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < VERIFY_PROBLEMS_MAX:
            self.problems.append(text)


async def verify(ctx: AppContext) -> Report:
    report = Report()
    state, revision = await schema_state(ctx.database)
    if state is not SchemaState.CURRENT:
        report.problem(f"schema is {state.value} (revision {revision}); run `coalition db upgrade`")
        return report
    await _members(ctx, report)
    return report


async def _members(ctx: AppContext, report: Report) -> None:
    m = repo.MEMBERS
    last, count = "", 0
    while True:
        async with ctx.database.connect() as conn:
            rows = (
                await conn.execute(
                    select(m.c.id, m.c.loyalty_number, m.c.phone_hash, m.c.phone_ciphertext)
                    .where(m.c.id > last)
                    .order_by(m.c.id)
                    .limit(VERIFY_BATCH_ROWS)
                )
            ).all()
        for row in rows:
            number = row.loyalty_number
            if (
                len(number) != 12
                or not number.isdigit()
                or luhn_check_digit(number[:-1]) != number[-1]
            ):
                report.problem(f"members/{row.id}: loyalty number {number} fails its check digit")
            if (row.phone_hash is None) != (row.phone_ciphertext is None):
                report.problem(f"members/{row.id}: phone hash and encrypted phone disagree")
            elif row.phone_ciphertext is not None:
                try:
                    phone = ctx.vault.decrypt(row.phone_ciphertext)
                except Exception:  # cryptography raises InvalidTag for a wrong key or bad bytes
                    report.problem(f"members/{row.id}: phone does not decrypt (wrong secret key?)")
                    continue
                if ctx.vault.phone_hash(phone) != row.phone_hash:
                    report.problem(f"members/{row.id}: phone lookup hash is stale")
        count += len(rows)
        if len(rows) < VERIFY_BATCH_ROWS:
            break
        last = rows[-1].id
    report.checked["members"] = count
