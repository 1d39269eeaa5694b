#!/usr/bin/env python3
"""Apache Spark (local mode, pyspark) as a peer for `lakeforge-benchmarks tpch` and `scoring`.

    python3 benchmarks/peers/spark.py tpch --data DIR --queries DIR [--check DIR] [--warmup N]
    python3 benchmarks/peers/spark.py scoring --data DIR --xgboost FILE --lightgbm FILE
                                              [--runs N] [--warmup N]

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. Spark runs in local mode with one task slot
per core (`local[N]`), inside one driver JVM started once per invocation (its start is not
timed). It needs a Java runtime (17 or newer): without one, the script prints
`{"skipped": "..."}` and the harness reports Spark as not run.

Settings a user tuning Spark for one machine would make: the driver gets 8 GiB of heap (local
mode runs everything in it), shuffles use 2 partitions per core instead of 200 (adaptive query
execution, on by default, coalesces them further), and the UI is off.

`tpch`: registers the eight tables of --data (DIR/<table>/*.parquet) as temporary views, runs
each query of --queries (qN.sql) --warmup times untimed and once timed with `collect()`, and
prints {"versions": {"spark": ...}, "seconds": {"spark": {...}}, "errors": {"spark": {...}},
"check": {...}}. With --check DIR, Spark's answers are compared with Lakeforge's answers
(DIR/qN.jsonl, the ones already checked against DuckDB's) by the same rules as tpch.py.

`scoring`: the batch-scoring job a Spark user writes: a pandas UDF (Arrow batches) that loads
the model once per Python worker and calls the library's predict on each batch, single-threaded
(Spark runs one task per core), summed like Lakeforge's scoring job. Prints {"seconds":
{"spark pandas_udf xgboost, N cores": [...], ...}, "check": {"xgboost": [...], ...}} where the
check lists the predictions of the 1,000 smallest customer ids, in customer id order.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

from peer_venv import ensure_venv
# The features the models read, and how many predictions are checked (stdlib-only import).
from scoring import CHECK_ROWS, FEATURES

PINS = [
    "pyspark==4.0.1",
    "pandas==2.3.3",
    "numpy==2.4.6",
    "pyarrow==22.0.0",
    "xgboost-cpu==3.2.0",
    "lightgbm==4.7.0",
]
TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


def java_missing():
    """Why Spark cannot start here, or None."""
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        return None
    if shutil.which("java"):
        return None
    return "no Java runtime (java on PATH or JAVA_HOME) for Spark"


def session():
    from pyspark.sql import SparkSession

    cores = os.cpu_count() or 1
    # Python workers (pandas UDFs) run this environment's interpreter, not the first on PATH.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("lakeforge-benchmarks-peer")
        .config("spark.driver.memory", "8g")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run_tpch(args):
    # tpch.py's query loading and answer comparison (stdlib-only at import time).
    from tpch import check, queries

    spark = session()
    for table in TABLES:
        spark.read.parquet(f"{args.data}/{table}").createOrReplaceTempView(table)
    texts = queries(args.queries)
    seconds, answers, errors = {}, {}, {}
    for name, text in texts.items():
        try:
            for _ in range(args.warmup):
                spark.sql(text).collect()
            started = time.perf_counter()
            rows = spark.sql(text).collect()
            seconds[name] = time.perf_counter() - started
            answers[name] = [tuple(row) for row in rows]
            print(f"  {name:<4} spark {seconds[name]:>7.3f} s", file=sys.stderr)
        except Exception as error:  # an engine's refusal is reported, not fatal
            errors[name] = str(error).strip().splitlines()[0] if str(error) else type(error).__name__
    report = {
        "versions": {"spark": spark.version},
        "cores": os.cpu_count(),
        "seconds": {"spark": seconds},
        "errors": {"spark": errors},
    }
    if args.check:
        report["check"] = check(answers, args.check, engine="Spark")
    spark.stop()
    return report


def run_scoring(args):
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    xgb_path, lgb_path = args.xgboost, args.lightgbm

    def udf_for(library):
        # The iterator form of a pandas UDF: the model is loaded once per task, not per batch
        # (Spark's documented idiom for UDFs with expensive state such as a model).
        @pandas_udf("double")
        def predict(batches: Iterator[Tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
            if library == "xgboost":
                import xgboost as xgb

                booster = xgb.Booster()
                booster.load_model(xgb_path)
                booster.set_param({"nthread": 1})
                score = lambda x: booster.inplace_predict(x, missing=np.nan)  # noqa: E731
            else:
                import lightgbm as lgb

                booster = lgb.Booster(model_file=lgb_path)
                score = lambda x: booster.predict(x, num_threads=1)  # noqa: E731
            for columns in batches:
                x = np.column_stack(
                    [c.to_numpy(dtype=np.float64, na_value=np.nan) for c in columns]
                )
                yield pd.Series(score(x))

        return predict

    spark = session()
    features = spark.read.parquet(args.data)
    columns = [F.col(name).cast("double") for name in FEATURES]
    cores = os.cpu_count() or 1
    report = {"versions": {"spark": spark.version}, "cores": cores, "seconds": {}, "check": {}}
    for library in ["xgboost", "lightgbm"]:
        predict = udf_for(library)
        first = (
            features.orderBy("customer_id")
            .limit(CHECK_ROWS)
            .select("customer_id", predict(*columns).alias("p"))
            .orderBy("customer_id")
            .collect()
        )
        report["check"][library] = [float(row["p"]) for row in first]

        def job():
            # A new DataFrame each time: re-running one DataFrame would reuse the shuffle files
            # of its first run and skip reading and scoring altogether.
            total = spark.read.parquet(args.data).select(
                F.sum(predict(*columns)).alias("total")
            )
            return total.collect()[0]["total"]

        for _ in range(args.warmup):
            job()
        seconds = []
        for _ in range(args.runs):
            started = time.perf_counter()
            job()
            seconds.append(time.perf_counter() - started)
        report["seconds"][f"spark pandas_udf {library}, {cores} cores"] = seconds
        print(
            f"  spark pandas_udf {library}: median {statistics.median(seconds):.3f} s",
            file=sys.stderr,
        )
    spark.stop()
    return report


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    tpch = commands.add_parser("tpch")
    tpch.add_argument("--data", required=True)
    tpch.add_argument("--queries", required=True)
    tpch.add_argument("--check")
    tpch.add_argument("--warmup", type=int, default=1)
    scoring = commands.add_parser("scoring")
    scoring.add_argument("--data", required=True)
    scoring.add_argument("--xgboost", required=True)
    scoring.add_argument("--lightgbm", required=True)
    scoring.add_argument("--runs", type=int, default=3)
    scoring.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    missing = java_missing()
    if missing:
        json.dump({"skipped": missing}, sys.stdout)
        return
    ensure_venv("venv-bench-spark", PINS)
    report = run_tpch(args) if args.command == "tpch" else run_scoring(args)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
