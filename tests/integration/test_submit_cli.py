"""`coalition partners submit`: a partner's CSV streamed through StreamEarnPoints by the CLI,
against a real gateway; results CSV, idempotent resubmission, unreadable and refused rows."""

from __future__ import annotations

import asyncio
import csv
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from coalition.v1 import members_pb2, members_pb2_grpc
from gateway.adapters.models import LedgerTransactionRow, table_of
from gateway.entrypoints.cli import main

TXNS = table_of(LedgerTransactionRow)
ROWS = 600  # more than the server's read-ahead window and several batches


async def enroll(gateway: Any, count: int) -> list[str]:
    stub = members_pb2_grpc.MemberServiceStub(gateway.channel)
    numbers = []
    for i in range(count):
        reply = await stub.EnrollMember(
            members_pb2.EnrollMemberRequest(
                request_id=uuid.uuid4().hex, member=members_pb2.Member(display_name=f"M{i}")
            ),
            metadata=gateway.as_operator,
        )
        numbers.append(reply.member.loyalty_number)
    return numbers


async def submit(*argv: str) -> int:
    # main() runs its own event loop; the gateway serves from this test's loop meanwhile.
    return await asyncio.to_thread(main, ["partners", "submit", *argv, "--quiet"])


async def count_txns(gateway: Any) -> int:
    async with gateway.ctx.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(TXNS)) or 0)


def results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as source:
        return list(csv.DictReader(source))


async def test_a_folio_file_is_credited_once_however_often_it_is_submitted(
    gateway: Any, tmp_path: Path, capsys: Any
) -> None:
    _, key = await gateway.create_partner("grand-hotel", base_earn_rate="10")
    numbers = await enroll(gateway, 7)
    folios = tmp_path / "folios.csv"
    with folios.open("w", newline="") as sink:
        out = csv.writer(sink)
        out.writerow(["Partner_Reference", "Loyalty_Number", "Amount", "Currency", "ignored"])
        for i in range(ROWS):
            out.writerow([f"F-{i:05d}", numbers[i % 7], "10.00", "USD", "x"])
        out.writerow(["F-bad-amount", numbers[0], "10.001", "USD", ""])
        out.writerow(["F-no-member", "000000000000", "10.00", "USD", ""])
    out_path = tmp_path / "out.csv"
    target = gateway.target

    code = await submit(str(folios), "--target", target, "--api-key", key, "--out", str(out_path))

    assert code == 1  # some rows failed: scripts notice
    assert f"{ROWS + 2} rows: {ROWS} credited, 0 parked, 1 refused, 1 unreadable" in (
        capsys.readouterr().out
    )
    rows = results(out_path)
    assert len(rows) == ROWS + 2
    by_line = {int(r["line"]): r for r in rows}
    assert sorted(by_line) == list(range(2, ROWS + 4))  # one result per CSV line
    assert {r["status"] for r in rows if r["request_id"].startswith("F-0")} == {"OK"}
    # 10 points a dollar; members who reach Silver on the way get its bonus on later folios.
    assert all(int(r["points"]) >= 100 for r in rows if r["status"] == "OK")
    assert by_line[ROWS + 2]["status"] == "INVALID"
    assert "decimals" in by_line[ROWS + 2]["message"]
    assert (by_line[ROWS + 3]["status"], by_line[ROWS + 3]["reason"]) == (
        "FAILED",
        "MEMBER_NOT_FOUND",
    )
    written = await count_txns(gateway)
    assert written == ROWS

    again = tmp_path / "again.csv"
    assert await submit(str(folios), "--target", target, "--api-key", key, "--out", str(again)) == 1
    assert await count_txns(gateway) == written  # nothing new
    first = {r["line"]: r["transaction"] for r in rows}
    assert {r["line"]: r["transaction"] for r in results(again)} == first


async def test_a_missing_key_or_file_is_a_plain_error(tmp_path: Path, capsys: Any) -> None:
    assert await submit(str(tmp_path / "none.csv"), "--api-key", "k") == 2
    assert "no such file" in capsys.readouterr().err
    folios = tmp_path / "f.csv"
    folios.write_text("request_id,member,amount,currency\n")
    assert await submit(str(folios), "--target", "127.0.0.1:1") == 2
    assert "API key" in capsys.readouterr().err
