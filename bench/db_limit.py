"""The database limit: the smallest transaction an earn needs (insert a posting, update a
balance, commit durably), driven as fast as the database takes it.

    python bench/db_limit.py [--database-url URL] [--seconds 10] [--concurrency 32] [--json FILE]

PostgreSQL: pgbench (-M prepared, N clients, 2 threads) runs this script against two tables of
its own, with the server's durable-commit settings:

    BEGIN; INSERT INTO bench_postings ...; UPDATE bench_balances ... WHERE member = :m; END;

SQLite: a tight loop over the stdlib sqlite3 driver with the gateway's settings (WAL,
synchronous=NORMAL, BEGIN IMMEDIATE): one writer, as the gateway has.

It prints transactions/s: what no gateway on this database can exceed for one-row earns. The
gateway's own figure is in bench/earn.py; bench/run.py shows the two side by side.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import harness
from harness import Figure

MEMBERS = 200

SCRIPT = """\\set m random(1, {members})
BEGIN;
INSERT INTO bench_postings (member, amount, create_time) VALUES (:m, 10, now());
UPDATE bench_balances SET available = available + 10 WHERE member = :m;
END;
"""


def postgres(url: str, seconds: float, concurrency: int) -> float:
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench is not installed (Debian: postgresql-client)")
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://"))
    conninfo = [
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        parts.path.lstrip("/") or "postgres",
    ]
    setup = (
        "DROP TABLE IF EXISTS bench_postings, bench_balances;"
        "CREATE TABLE bench_balances (member int PRIMARY KEY, available bigint NOT NULL);"
        "CREATE TABLE bench_postings (id bigserial PRIMARY KEY, member int NOT NULL,"
        " amount bigint NOT NULL, create_time timestamptz NOT NULL);"
        f"INSERT INTO bench_balances SELECT g, 0 FROM generate_series(1, {MEMBERS}) g;"
    )
    psql = ["psql", "-q", "-v", "ON_ERROR_STOP=1", *conninfo]
    subprocess.run([*psql, "-c", setup], check=True, capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(SCRIPT.format(members=MEMBERS))
        script.flush()
        out = subprocess.run(
            [
                "pgbench",
                "-n",
                "-M",
                "prepared",
                "-c",
                str(concurrency),
                "-j",
                "2",
                "-T",
                str(max(1, round(seconds))),
                "-f",
                script.name,
                *conninfo,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    subprocess.run(
        [*psql, "-c", "DROP TABLE bench_postings, bench_balances"], check=True, capture_output=True
    )
    found = re.search(r"tps = ([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"unexpected pgbench output:\n{out}")
    return float(found.group(1))


def sqlite(seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "limit.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE balances (member INTEGER PRIMARY KEY, available INTEGER)")
        db.execute(
            "CREATE TABLE postings (id INTEGER PRIMARY KEY, member INTEGER, amount INTEGER,"
            " create_time TEXT)"
        )
        db.executemany("INSERT INTO balances VALUES (?, 0)", [(m,) for m in range(MEMBERS)])
        done = 0
        stop = time.perf_counter() + seconds
        began = time.perf_counter()
        while time.perf_counter() < stop:
            m = done % MEMBERS
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO postings (member, amount, create_time) VALUES (?, 10, ?)",
                (m, "2026-01-01T00:00:00Z"),
            )
            db.execute("UPDATE balances SET available = available + 10 WHERE member = ?", (m,))
            db.execute("COMMIT")
            done += 1
        rate = done / (time.perf_counter() - began)
        db.close()
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL URL")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = [
        Figure("db_limit", "sqlite: minimal earn transaction/s", sqlite(args.seconds), "txn/s")
    ]
    if args.database_url:
        rate = postgres(args.database_url, args.seconds, args.concurrency)
        figures.append(
            Figure(
                "db_limit",
                f"postgresql: minimal earn transaction/s (pgbench, n={args.concurrency})",
                rate,
                "txn/s",
            )
        )
    harness.print_table("The database limit", figures)
    harness.write_json(args.json, "db_limit", figures)


if __name__ == "__main__":
    main()
