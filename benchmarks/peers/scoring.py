#!/usr/bin/env python3
"""Scoring peers for `lakeforge-benchmarks scoring`: xgboost's and lightgbm's own predict.

    python3 benchmarks/peers/scoring.py --data DIR --models DIR --runs N --warmup N

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. Then:
  1. reads the feature dataset's numeric columns (the Parquet files under --data) into a float64
     matrix (NaN for NULL), in file order;
  2. trains, unless --models already holds them, a 500-tree depth-6 XGBoost model and a
     500-tree LightGBM model with at most 64 leaves (depth 6) on a 200,000-row sample, and saves
     them as xgb_500.json and lgb_500.txt with the feature names;
  3. times each library's predict over all rows, single-threaded and with every core: warm-up
     runs, then --runs timed runs, reporting the median;
  4. prints one JSON document: timings, and the predictions of the first 1,000 rows so the
     harness can check Lakeforge's against them.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from peer_venv import ensure_venv

PINS = [
    "numpy==2.4.6",
    "pyarrow==22.0.0",
    "xgboost-cpu==3.2.0",
    "lightgbm==4.7.0",
]
FEATURES = [
    "spend_30d", "spend_90d", "avg_order_value", "sessions_30d", "avg_session_minutes",
    "days_since_last_login", "days_since_last_purchase", "pages_per_session", "discount_rate",
    "refund_rate", "email_open_rate", "push_click_rate", "nps_score", "satisfaction",
    "cart_abandon_rate", "latency_ms_p95", "credit_score", "income_estimate",
    "age", "tenure_days", "orders_90d", "devices", "support_tickets_90d",
]
CHECK_ROWS = 1000


def load(data):
    import numpy as np
    import pyarrow.parquet as pq

    files = sorted(Path(data).glob("part-*.parquet"))
    columns = {name: [] for name in FEATURES + ["churned"]}
    for file in files:
        table = pq.read_table(file, columns=FEATURES + ["churned"])
        for name in columns:
            columns[name].append(
                table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            )
    # float64, as Lakeforge reads the Parquet doubles: LightGBM compares in f64, and xgboost
    # rounds to f32 itself.
    x = np.column_stack([np.concatenate(columns[name]) for name in FEATURES])
    y = np.concatenate(columns["churned"])
    return x, y


def timed(function, runs, warmup):
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    ensure_venv("venv-bench-peers", PINS)
    import lightgbm as lgb
    import numpy as np
    import xgboost as xgb

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    x, y = load(args.data)
    models = Path(args.models)
    models.mkdir(parents=True, exist_ok=True)
    xgb_path, lgb_path = models / "xgb_500.json", models / "lgb_500.txt"
    rng = np.random.default_rng(7)
    sample = rng.choice(len(x), size=min(200_000, len(x)), replace=False)
    if not xgb_path.exists():
        train = xgb.DMatrix(x[sample], label=y[sample], feature_names=FEATURES, missing=np.nan)
        booster = xgb.train(
            {"objective": "binary:logistic", "max_depth": 6, "eta": 0.05, "nthread": os.cpu_count(),
             "tree_method": "hist", "seed": 0},
            train, num_boost_round=500,
        )
        booster.save_model(str(xgb_path))
    if not lgb_path.exists():
        train = lgb.Dataset(x[sample], label=y[sample], feature_name=FEATURES, free_raw_data=False)
        booster = lgb.train(
            {"objective": "binary", "num_leaves": 64, "max_depth": 6, "learning_rate": 0.05,
             "num_threads": os.cpu_count(), "seed": 0, "deterministic": True, "verbose": -1},
            train, num_boost_round=500,
        )
        booster.save_model(str(lgb_path))

    cores = os.cpu_count()
    xgb_model = xgb.Booster()
    xgb_model.load_model(str(xgb_path))
    lgb_model = lgb.Booster(model_file=str(lgb_path))
    # xgboost's predict over an in-memory matrix: inplace_predict avoids a DMatrix copy.
    def xgb_predict(threads):
        xgb_model.set_param({"nthread": threads})
        return xgb_model.inplace_predict(x, missing=np.nan)

    def lgb_predict(threads):
        return lgb_model.predict(x, num_threads=threads)

    results = {
        "rows": int(len(x)),
        "cores": cores,
        "versions": {"xgboost": xgb.__version__, "lightgbm": lgb.__version__},
        "models": {"xgboost": str(xgb_path), "lightgbm": str(lgb_path)},
        "seconds": {},
        "check": {
            "xgboost": [float(v) for v in xgb_predict(1)[:CHECK_ROWS]],
            "lightgbm": [float(v) for v in lgb_predict(1)[:CHECK_ROWS]],
        },
    }
    for library, predict in [("xgboost", xgb_predict), ("lightgbm", lgb_predict)]:
        for threads, label in [(1, "1 thread"), (cores, f"{cores} threads")]:
            seconds = timed(lambda: predict(threads), args.runs, args.warmup)
            results["seconds"][f"{library} predict, {label}"] = seconds
            print(f"  {library} {label}: median {statistics.median(seconds):.3f} s", file=sys.stderr)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
