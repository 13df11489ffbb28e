"""Matching a partner's own transaction file against the ledger, by partner reference.

The file is UTF-8 CSV with a header: partner_reference and points (signed from the member's
side, like the ledger) are required; type and occur_time are optional and other columns are
ignored. Rows with the same reference add up, as ledger transactions with the same reference do
(an earn and its partial refund). Each reference is then matched, matched with other points
(AMOUNT_MISMATCH), missing in the ledger, or missing in the file.

The matcher is a merge of two streams ordered by reference: the file (bounded by the request
size) and the ledger's per-reference sums (read in batches), so memory does not grow with the
number of the partner's transactions.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain import ledger as dl
from gateway.domain.errors import FieldViolation, InvalidArgument

FILE_ROWS_MAX = 200_000
FILE_ERRORS_REPORTED_MAX = 20
"""An INVALID_FILE error names at most this many bad lines."""
DISCREPANCIES_KEPT_MAX = 10_000
"""Discrepancies a response (and the stored result) carries; the CSV has them all."""
TRANSACTIONS_PER_DISCREPANCY_MAX = 100
REQUIRED_COLUMNS = ("partner_reference", "points")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
"""ASCII digits only: int() would also take "1_000" and other scripts' digits."""


class Kind(enum.StrEnum):
    MISSING_IN_LEDGER = "MISSING_IN_LEDGER"
    MISSING_IN_FILE = "MISSING_IN_FILE"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"


@dataclass
class FileEntry:
    points: int = 0
    lines: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LedgerEntry:
    reference: str
    points: int
    transactions: tuple[str, ...]
    """Transaction names, at most TRANSACTIONS_PER_DISCREPANCY_MAX."""


@dataclass(frozen=True)
class Discrepancy:
    kind: Kind
    partner_reference: str
    ledger_points: int
    file_points: int
    transactions: tuple[str, ...]
    file_lines: tuple[int, ...]


@dataclass
class Result:
    file_reference_count: int = 0
    ledger_reference_count: int = 0
    matched_count: int = 0
    file_points_total: int = 0
    ledger_points_total: int = 0
    discrepancy_count: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)
    """The first DISCREPANCIES_KEPT_MAX, by reference."""
    create_time: datetime | None = None


def _bad(violations: list[FieldViolation], line: int, message: str) -> None:
    if len(violations) < FILE_ERRORS_REPORTED_MAX:
        violations.append(FieldViolation(f"file_content[line {line}]", message))


def parse_file(content: bytes) -> dict[str, FileEntry]:
    """reference -> summed points and line numbers (1-based; the header is line 1)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument.on_field(
            "file_content", "INVALID_FILE", "the file is not UTF-8 text"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidArgument.on_field("file_content", "INVALID_FILE", f"line 1: {exc}") from None
    columns = [c.strip().lower() for c in header or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InvalidArgument.on_field(
            "file_content",
            "INVALID_FILE",
            f"the header (line 1) lacks {', '.join(missing)}: a CSV with columns "
            "partner_reference,points[,type,occur_time]",
        )
    ref_at, points_at = columns.index("partner_reference"), columns.index("points")
    entries: dict[str, FileEntry] = {}
    violations: list[FieldViolation] = []
    try:
        consumed = reader.line_num  # physical lines read so far (a quoted cell may span lines)
        rows = 0
        for row in reader:
            number, consumed = consumed + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines (a trailing newline, spreadsheet exports)
            rows += 1
            if rows > FILE_ROWS_MAX:
                raise InvalidArgument.on_field(
                    "file_content", "INVALID_FILE", f"at most {FILE_ROWS_MAX:,} rows per file"
                )
            if len(row) <= max(ref_at, points_at):
                _bad(violations, number, f"{len(row)} columns, the header has {len(columns)}")
                continue
            # Surrounding spaces are trimmed here and on the ledger side alike.
            reference, raw_points = row[ref_at].strip(), row[points_at].strip()
            if not reference or len(reference) > dl.PARTNER_REFERENCE_CHARS_MAX:
                _bad(violations, number, "partner_reference: 1 to 128 characters")
                continue
            if not reference.isprintable():
                _bad(violations, number, "partner_reference: printable characters only")
                continue
            if not _INTEGER.fullmatch(raw_points):
                _bad(violations, number, f"points: {raw_points[:40]!r} is not a whole number")
                continue
            points = int(raw_points)
            if abs(points) > dl.POINTS_PER_TRANSACTION_MAX:
                _bad(violations, number, "points: too large")
                continue
            entry = entries.setdefault(reference, FileEntry())
            entry.points += points
            entry.lines.append(number)
    except csv.Error as exc:
        _bad(violations, reader.line_num, str(exc))
    if violations:
        raise InvalidArgument(
            "INVALID_FILE",
            f"bad lines in the file, the first of them: {violations[0].field}: "
            f"{violations[0].description}",
            {"field": "file_content", "bad_lines_listed": str(len(violations))},
            tuple(violations),
        )
    return entries


async def match(
    file: dict[str, FileEntry],
    ledger: AsyncIterator[LedgerEntry],
    keep: int | None = DISCREPANCIES_KEPT_MAX,
) -> Result:
    """Merge the file with the ledger's per-reference sums (which come ordered by reference).

    keep: how many discrepancies to keep (None: all); all are counted.
    """
    result = Result(file_reference_count=len(file))
    result.file_points_total = sum(e.points for e in file.values())
    references = sorted(file)
    i = 0

    def report(d: Discrepancy) -> None:
        result.discrepancy_count += 1
        if keep is None or len(result.discrepancies) < keep:
            result.discrepancies.append(d)

    def only_in_file(reference: str) -> None:
        entry = file[reference]
        report(
            Discrepancy(Kind.MISSING_IN_LEDGER, reference, 0, entry.points, (), tuple(entry.lines))
        )

    async for theirs in _ordered(ledger):
        result.ledger_reference_count += 1
        result.ledger_points_total += theirs.points
        while i < len(references) and references[i] < theirs.reference:
            only_in_file(references[i])
            i += 1
        if i < len(references) and references[i] == theirs.reference:
            entry = file[references[i]]
            i += 1
            if entry.points == theirs.points:
                result.matched_count += 1
            else:
                report(
                    Discrepancy(
                        Kind.AMOUNT_MISMATCH,
                        theirs.reference,
                        theirs.points,
                        entry.points,
                        theirs.transactions,
                        tuple(entry.lines),
                    )
                )
        else:
            report(
                Discrepancy(
                    Kind.MISSING_IN_FILE,
                    theirs.reference,
                    theirs.points,
                    0,
                    theirs.transactions,
                    (),
                )
            )
    for reference in references[i:]:
        only_in_file(reference)
    return result


async def _ordered(ledger: AsyncIterator[LedgerEntry]) -> AsyncIterator[LedgerEntry]:
    """The ledger stream, checked to be strictly ordered (the merge depends on it)."""
    last: str | None = None
    async for entry in ledger:
        assert last is None or entry.reference > last, "ledger references out of order"
        last = entry.reference
        yield entry


def csv_rows(discrepancies: Iterable[Discrepancy]) -> Iterable[list[str]]:
    yield [
        "kind",
        "partner_reference",
        "ledger_points",
        "file_points",
        "difference",
        "transactions",
        "file_lines",
    ]
    for d in discrepancies:
        yield [
            d.kind.value,
            d.partner_reference,
            str(d.ledger_points),
            str(d.file_points),
            str(d.file_points - d.ledger_points),
            " ".join(d.transactions),
            " ".join(map(str, d.file_lines)),
        ]
