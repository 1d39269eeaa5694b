#!/usr/bin/env python3
"""TPC-H peers for `lakeforge-benchmarks tpch`: DataFusion, DuckDB and Polars on the same Parquet
files, each under two process models.

    python3 benchmarks/peers/tpch.py --data DIR --queries DIR [--check DIR] [--warmup N]

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. Then, for each engine:

- warm: one session; the eight tables of --data (DIR/<table>/*.parquet) registered once; each
  query of --queries (qN.sql, the harness's single-statement texts) run --warmup times untimed,
  then once timed, in that session;
- fresh: per query, a new session (connection, context) is created, the eight tables are
  registered, and the query is planned, run and its rows fetched, all inside the timing: what
  one `lakeforge sql` process does (Lakeforge's process start is subtracted by its harness).

It prints one JSON document on stdout, engines named `ENGINE` (warm) and `ENGINE_fresh`:

    {"versions": {...}, "seconds": {"duckdb": {"q1": 0.12, ...}, "duckdb_fresh": {...}, ...},
     "errors": {"polars": {"q2": "..."}}, "check": {"q1": "ok", "q2": "MISMATCH ...", ...}}

With --check DIR, Lakeforge's answers (DIR/qN.jsonl: `lakeforge --json sql` output, one JSON
object per row, columns in order) are compared with DuckDB's: same number of rows, and every
value equal (numbers within a relative 1e-6, dates and strings exactly); rows are compared in
order, then as sorted lists when the order differs (ties in ORDER BY keys). DataFusion's row
counts are compared with DuckDB's too (`row_counts`).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from peer_venv import ensure_venv

# datafusion: the Python bindings of the DataFusion major version Lakeforge is built on.
PINS = ["datafusion==55.0.0", "duckdb==2.0.0", "polars==2.1.0", "pyarrow==26.0.1"]
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


def first_line(error):
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def measure(open_session, texts, warmup, fresh):
    """Seconds, results and errors per query. `open_session()` returns a function that runs
    one query text and returns its rows; `fresh` opens a session per query inside the timing."""
    seconds, answers, errors = {}, {}, {}
    session = None if fresh else open_session()
    for name, text in texts.items():
        try:
            if fresh:
                run = lambda: open_session()(text)
                elapsed, rows = timed(run, 0)
            else:
                elapsed, rows = timed(lambda: session(text), warmup)
            seconds[name] = elapsed
            answers[name] = rows
        except Exception as error:  # an engine's refusal is reported, not fatal
            errors[name] = first_line(error)
    return seconds, answers, errors


def duckdb_session(data):
    import duckdb

    def open_session():
        con = duckdb.connect()
        con.execute(f"SET threads = {os.cpu_count() or 1}")
        for table in TABLES:
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data}/{table}/*.parquet')"
            )
        return lambda text: con.execute(text).fetchall()

    return open_session


def datafusion_session(data):
    import datafusion

    def open_session():
        config = datafusion.SessionConfig().with_target_partitions(os.cpu_count() or 1)
        ctx = datafusion.SessionContext(config)
        for table in TABLES:
            ctx.register_parquet(table, f"{data}/{table}/")
        # Rows fetched into Arrow (what the engine returns); their count is checked.
        return lambda text: sum(batch.num_rows for batch in ctx.sql(text).collect())

    return open_session


def polars_session(data):
    import polars as pl

    def open_session():
        ctx = pl.SQLContext()
        for table in TABLES:
            ctx.register(table, pl.scan_parquet(f"{data}/{table}/*.parquet"))
        return lambda text: ctx.execute(text, eager=True).height

    return open_session


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
    import datafusion
    import duckdb
    import polars

    texts = queries(args.queries)
    report = {
        "versions": {
            "datafusion": datafusion.__version__,
            "duckdb": duckdb.__version__,
            "polars": polars.__version__,
        },
        "cores": os.cpu_count(),
        "seconds": {},
        "errors": {},
    }
    engines = {
        "datafusion": datafusion_session(args.data),
        "duckdb": duckdb_session(args.data),
        "polars": polars_session(args.data),
    }
    duckdb_answers = {}
    row_counts = {}
    for engine, open_session in engines.items():
        for fresh in (False, True):
            key = f"{engine}_fresh" if fresh else engine
            seconds, answers, errors = measure(open_session, texts, args.warmup, fresh)
            report["seconds"][key] = seconds
            report["errors"][key] = errors
            if engine == "duckdb" and not fresh:
                duckdb_answers = answers
            if engine == "datafusion" and not fresh:
                row_counts = answers
    if args.check:
        report["check"] = check(duckdb_answers, args.check)
        report["row_counts"] = {
            name: "ok" if row_counts.get(name) == len(rows) else
            f"MISMATCH: DataFusion {row_counts.get(name)} rows, DuckDB {len(rows)}"
            for name, rows in duckdb_answers.items()
        }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
