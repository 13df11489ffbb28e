"""Every benchmark, one command: runs each program in bench/, prints one table of every figure
beside its baseline and its target, and writes them all to a JSON file.

    python bench/run.py --database-url postgresql://postgres@127.0.0.1:5432/bench
    python bench/run.py                       # SQLite only: the PostgreSQL figures are skipped
    python bench/run.py --quick ...           # small sizes and short runs: minutes, not an hour

The PostgreSQL database's schema is dropped and recreated: give it a database of its own.
Without --database-url, COALITION_BENCH_DATABASE_URL is used if set. Each program also runs on
its own; see its docstring. This machine-independent part is the ratio to the baseline measured
in the same run; absolute figures depend on the machine (docs/benchmarks.md describes ours).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import Figure

BENCH = Path(__file__).resolve().parent
RESULTS_DEFAULT = BENCH / "results" / "latest.json"

FULL = {
    "db_limit": ["--seconds", "10"],
    "earn": [
        "--seconds",
        "10",
        "--stream-items",
        "100000",
        "--memory-earns",
        "1000000",
        "--memory-seconds-max",
        "300",
    ],
    "growth": ["--seconds", "10", "--members", "10000,1000000", "--partners", "10,200"],
    "settlement": ["--transactions", "250000", "--growth", "4", "--partners", "50"],
    "wallet": ["--passes", "600", "--requests", "4000"],
}
QUICK = {
    "db_limit": ["--seconds", "3"],
    "earn": ["--seconds", "3", "--stream-items", "3000", "--memory-earns", "20000"],
    "growth": ["--seconds", "3", "--members", "1000,50000", "--partners", "5,50"],
    "settlement": ["--transactions", "10000", "--growth", "4", "--partners", "50"],
    "wallet": ["--passes", "200", "--requests", "1000"],
}


def machine() -> dict[str, str]:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("COALITION_BENCH_DATABASE_URL"),
        help="PostgreSQL for the production figures (its schema is dropped and recreated)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--only", help="comma-separated benchmarks (" + ", ".join(FULL) + ")")
    parser.add_argument("--json", type=Path, default=RESULTS_DEFAULT)
    args = parser.parse_args()

    sizes = QUICK if args.quick else FULL
    chosen = args.only.split(",") if args.only else list(sizes)
    unknown = set(chosen) - set(sizes)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.unlink(missing_ok=True)
    url = ["--database-url", args.database_url] if args.database_url else []
    if not args.database_url:
        print("no --database-url: measuring SQLite only; the targets are PostgreSQL figures")

    began = time.monotonic()
    failed = []
    for name in chosen:
        print(f"\n=== {name}", flush=True)
        extra = ["--sqlite"] if name == "growth" else []
        argv = [sys.executable, str(BENCH / f"{name}.py"), *url, *extra, *sizes[name]]
        code = subprocess.call([*argv, "--json", str(args.json)])
        if code:
            failed.append(name)
            print(f"{name} failed with exit code {code}", file=sys.stderr)

    data = json.loads(args.json.read_text()) if args.json.exists() else {}
    figures = [
        Figure(**{k: v for k, v in f.items() if k != "ratio"})
        for b in data.values()
        for f in b["figures"]
    ]
    figures += derived(figures)
    data["machine"] = machine()
    data["mode"] = "quick" if args.quick else "full"
    data["seconds"] = round(time.monotonic() - began)
    args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    harness.print_table("All figures", figures)
    missed = [f for f in figures if f.met is False]
    print(
        f"\n{len(figures)} figures, {sum(f.met is True for f in figures)} targets met, "
        f"{len(missed)} missed; written to {args.json} in {data['seconds']} s"
    )
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def derived(figures: list[Figure]) -> list[Figure]:
    """How close the gateway comes to the database limit, per backend."""
    by_name = {f.name: f for f in figures}
    out = []
    for label in ("sqlite", "postgresql"):
        limit = next((f for n, f in by_name.items() if n.startswith(f"{label}: minimal")), None)
        earn = next(
            (f for n, f in by_name.items() if n.startswith(f"{label}: unary EarnPoints req/s")),
            None,
        )
        stream = by_name.get(f"{label}: StreamEarnPoints items/s")
        if limit is None:
            continue
        for f, what in ((earn, "unary EarnPoints"), (stream, "StreamEarnPoints items")):
            if f is not None:
                out.append(
                    Figure(
                        "db_limit",
                        f"{label}: {what} vs the database limit",
                        f.value,
                        f.unit,
                        limit.value,
                        "minimal earn transaction/s",
                    )
                )
    return out


if __name__ == "__main__":
    sys.exit(main())
