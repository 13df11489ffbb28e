"""`coalition partners submit FILE.csv`: a partner streams a CSV through StreamEarnPoints.

It is a gRPC client like any partner's: it needs the gateway's address and the partner's API
key, not the database. See partners.bulk for the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from pathlib import Path
from typing import Any

import grpc
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from coalition.v1 import points_pb2_grpc
from gateway.config import GRPC_PORT_DEFAULT, env
from partners import bulk

SUBMIT_RPC_TIMEOUT_S = 24 * 3600
"""A whole file is one stream: a day is longer than any file should take."""


class SubmitError(Exception):
    pass


def _count_rows(path: Path) -> int:
    with path.open("rb") as source:
        return max(sum(1 for _ in source) - 1, 0)


def submit(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise SubmitError(f"{path}: no such file")
    api_key = args.api_key or env("API_KEY")
    if not api_key:
        raise SubmitError("give the partner's API key: --api-key or COALITION_API_KEY")
    port = env("GRPC_PORT", str(GRPC_PORT_DEFAULT))
    target = args.target or env("TARGET", f"127.0.0.1:{port}")
    out = Path(args.out) if args.out else path.with_suffix(".results.csv")
    root_ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with (
        path.open(newline="", encoding="utf-8-sig") as source,
        out.open("w", newline="", encoding="utf-8") as sink,
        Progress(*columns, disable=args.quiet or not sys.stderr.isatty()) as progress,
    ):
        task = progress.add_task(path.name, total=_count_rows(path))
        rows = bulk.read_rows(source, args.on_behalf_of)
        try:
            summary = asyncio.run(
                _stream(target, api_key, root_ca, rows, csv.writer(sink), progress, task)
            )
        except grpc.aio.AioRpcError as exc:
            raise SubmitError(
                f"{target}: {exc.code().name} {exc.details()}; the rows answered so far are "
                f"in {out}, and submitting the file again is safe (each row is idempotent)"
            ) from None
    print(
        f"{summary.total} rows: {summary.ok} credited, {summary.parked} parked, "
        f"{summary.failed} refused, {summary.invalid} unreadable; results in {out}"
    )
    return 0 if summary.failed + summary.invalid == 0 else 1


async def _stream(
    target: str,
    api_key: str,
    root_ca: bytes | None,
    rows: Any,
    results: Any,
    progress: Progress,
    task: TaskID,
) -> bulk.Summary:
    metadata = (("authorization", f"Bearer {api_key}"),)
    channel = (
        grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_ca))
        if root_ca
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = points_pb2_grpc.PointsServiceStub(channel)

        def stream(requests: Any) -> Any:
            return stub.StreamEarnPoints(requests, metadata=metadata, timeout=SUBMIT_RPC_TIMEOUT_S)

        return await bulk.submit(rows, stream, results, lambda: progress.advance(task))


def add_command(partners: Any) -> None:
    """Register `partners submit` under the existing `partners` group."""
    command = partners.add_parser(
        "submit", help="stream a CSV of earns (folios, bookings) as a partner"
    )
    command.add_argument("file", help="the CSV; see `coalition partners submit --help`")
    command.add_argument("--target", help="gateway address (default: $COALITION_TARGET)")
    command.add_argument("--api-key", help="the partner's key (default: $COALITION_API_KEY)")
    command.add_argument("--tls-ca", help="CA certificate to verify a TLS gateway")
    command.add_argument("--out", help="results CSV (default: FILE.results.csv)")
    command.add_argument(
        "--on-behalf-of", default="", help='travel agencies: "partners/{airline}" for every row'
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(run=submit)
    command.description = (bulk.__doc__ or "").split("\n\n", 1)[1] if bulk.__doc__ else None
    command.formatter_class = argparse.RawDescriptionHelpFormatter
