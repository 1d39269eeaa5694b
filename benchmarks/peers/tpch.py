#!/usr/bin/env python3
"""TPC-H peers for `lakeforge-benchmarks tpch`: DuckDB and Polars on the same Parquet files.

    python3 benchmarks/peers/tpch.py --data DIR --queries DIR [--check DIR] [--warmup N]

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. Then, for each engine, registers the eight
tables of --data (DIR/<table>/*.parquet) as views, runs each query of --queries (qN.sql; the
harness's single-statement texts) --warmup times untimed and once timed, and prints one JSON
document on stdout:

    {"versions": {...}, "seconds": {"duckdb": {"q1": 0.12, ...}, "polars": {...}},
     "errors": {"polars": {"q2": "..."}}, "check": {"q1": "ok", "q2": "MISMATCH ...", ...}}

With --check DIR, Lakeforge's answers (DIR/qN.jsonl: `lakeforge --json sql` output, one JSON
object per row, columns in order) are compared with DuckDB's: same number of rows, and every
value equal (numbers within a relative 1e-6, dates and strings exactly); rows are compared in
order, then as sorted lists when the order differs (ties in ORDER BY keys).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from peer_venv import ensure_venv

PINS = ["duckdb==2.0.0", "polars==2.1.0", "pyarrow==26.0.1"]
TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


def queries(folder):
    found = {}
    for path in sorted(Path(folder).glob("q*.sql"), key=lambda p: int(p.stem[1:])):
        found[path.stem] = path.read_text()
    return found


def timed(run, warmup):
    for _ in range(warmup):
        run()
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def run_duckdb(data, texts, warmup):
    import duckdb

    con = duckdb.connect()
    threads = os.cpu_count() or 1
    con.execute(f"SET threads = {threads}")
    for table in TABLES:
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data}/{table}/*.parquet')"
        )
    seconds, answers, errors = {}, {}, {}
    for name, text in texts.items():
        try:
            elapsed, rows = timed(lambda: con.execute(text).fetchall(), warmup)
            seconds[name] = elapsed
            answers[name] = rows
        except Exception as error:  # an engine's refusal is reported, not fatal
            errors[name] = str(error).splitlines()[0]
    return seconds, answers, errors


def run_polars(data, texts, warmup):
    import polars as pl

    ctx = pl.SQLContext()
    for table in TABLES:
        ctx.register(table, pl.scan_parquet(f"{data}/{table}/*.parquet"))
    seconds, errors = {}, {}
    for name, text in texts.items():
        try:
            elapsed, _ = timed(lambda: ctx.execute(text, eager=True), warmup)
            seconds[name] = elapsed
        except Exception as error:
            errors[name] = str(error).splitlines()[0] if str(error) else type(error).__name__
    return seconds, errors


def normalize(value):
    """A comparable form: numbers as floats, everything else as text."""
    import datetime
    import decimal

    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return str(value)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        # abs_tol: one unit in the sixth decimal, where engines round (Spark) or truncate
        # (DataFusion) a decimal average's scale-6 result differently.
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1.5e-6)
    return a == b


def rows_equal(left, right):
    return len(left) == len(right) and all(
        len(l) == len(r) and all(same(x, y) for x, y in zip(l, r)) for l, r in zip(left, right)
    )


def check(answers, lakeforge_dir, engine="DuckDB"):
    """Each query's verdict: `answers` (an engine's rows) against Lakeforge's in `lakeforge_dir`."""
    verdicts = {}
    for name, expected in answers.items():
        path = Path(lakeforge_dir) / f"{name}.jsonl"
        if not path.exists():
            verdicts[name] = "MISSING lakeforge answer"
            continue
        ours = [
            [normalize(v) for v in json.loads(line).values()]
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        # A row of all NULLs prints as {} in JSON lines: restore its width.
        width = len(expected[0]) if expected else 0
        ours = [row if row or not width else [None] * width for row in ours]
        theirs = [[normalize(v) for v in row] for row in expected]
        if rows_equal(ours, theirs):
            verdicts[name] = "ok"
        elif rows_equal(sorted(ours, key=repr), sorted(theirs, key=repr)):
            verdicts[name] = "ok (same rows, tie order differs)"
        else:
            first = next(
                (i for i, (l, r) in enumerate(zip(ours, theirs)) if not rows_equal([l], [r])),
                min(len(ours), len(theirs)),
            )
            verdicts[name] = (
                f"MISMATCH: {len(ours)} rows vs {engine}'s {len(theirs)}; first difference at row "
                f"{first}: {ours[first] if first < len(ours) else None} vs "
                f"{theirs[first] if first < len(theirs) else None}"
            )
    return verdicts


def main():
    ensure_venv("venv-bench-tpch", PINS)
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--check")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    import duckdb
    import polars

    texts = queries(args.queries)
    duck_seconds, answers, duck_errors = run_duckdb(args.data, texts, args.warmup)
    polars_seconds, polars_errors = run_polars(args.data, texts, args.warmup)
    report = {
        "versions": {"duckdb": duckdb.__version__, "polars": polars.__version__},
        "cores": os.cpu_count(),
        "seconds": {"duckdb": duck_seconds, "polars": polars_seconds},
        "errors": {"duckdb": duck_errors, "polars": polars_errors},
    }
    if args.check:
        report["check"] = check(answers, args.check)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
