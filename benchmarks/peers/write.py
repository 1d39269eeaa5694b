#!/usr/bin/env python3
"""Write peers for `lakeforge-benchmarks write`: the same Parquet dataset rewritten by other tools.

    python3 benchmarks/peers/write.py --data DIR --out DIR

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. Then, once each, timing the whole write:
  - deltalake: the Python delta-rs bindings' write_deltalake, streaming a pyarrow dataset
    scanner into a new Delta table (the same writer family Lakeforge uses, through Python);
  - duckdb: COPY (SELECT * FROM read_parquet(...)) TO a folder of Parquet files (no Delta log:
    a lower bound for writing the same bytes);
  - polars: scan_parquet(...).sink_parquet(file) (no Delta log either).
Prints one JSON document: {"versions": {...}, "seconds": {...}, "bytes": {...}, "rows": N}.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from peer_venv import ensure_venv

PINS = ["deltalake==1.6.6", "duckdb==2.0.0", "polars==2.1.0", "pyarrow==26.0.1"]


def folder_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*.parquet"))


def main():
    ensure_venv("venv-bench-write", PINS)
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import deltalake
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pattern = f"{args.data}/*.parquet"
    seconds, sizes = {}, {}

    target = out / "deltalake"
    started = time.perf_counter()
    reader = ds.dataset(args.data, format="parquet").scanner().to_reader()
    deltalake.write_deltalake(str(target), reader, mode="overwrite")
    seconds["deltalake"] = time.perf_counter() - started
    sizes["deltalake"] = folder_bytes(target)
    rows = deltalake.DeltaTable(str(target)).to_pyarrow_dataset().count_rows()

    target = out / "duckdb"
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    started = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{pattern}')) TO '{target}' "
        "(FORMAT parquet, COMPRESSION snappy, PER_THREAD_OUTPUT true)"
    )
    seconds["duckdb"] = time.perf_counter() - started
    sizes["duckdb"] = folder_bytes(target)

    target = out / "polars.parquet"
    started = time.perf_counter()
    pl.scan_parquet(pattern).sink_parquet(str(target), compression="snappy")
    seconds["polars"] = time.perf_counter() - started
    sizes["polars"] = target.stat().st_size

    json.dump(
        {
            "versions": {
                "deltalake": deltalake.__version__,
                "duckdb": duckdb.__version__,
                "polars": pl.__version__,
            },
            "seconds": seconds,
            "bytes": sizes,
            "rows": rows,
        },
        sys.stdout,
    )
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
