"""Reads tables written by `lakeforge run` with independent Delta readers.

Called by check_python_readers.sh with a warehouse produced by the churn example run twice.
Checks, with the Python `deltalake` package (delta-rs's Python binding, a different code path
from the Rust crate's writer) and with Polars:
  * the latest version and every row count match what Lakeforge reported;
  * time travel to version 0 works;
  * Lakeforge's commit metadata (run id, job) is visible in the history;
  * partitioned products read back with their partition column.
"""

import json
import sys

import polars as pl
from deltalake import DeltaTable


def main(warehouse: str, report_path: str) -> None:
    with open(report_path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    last_run = runs[-1]
    for product in last_run["products"]:
        name = product["product"]
        uri = f"{warehouse}/{name}"
        table = DeltaTable(uri)
        assert table.version() == product["version"], (name, table.version(), product)
        rows = table.to_pyarrow_table().num_rows
        assert rows == product["rows"], (name, rows, product)

        history = table.history()
        latest = history[0]
        meta = latest.get("lakeforge")
        assert meta is not None, f"{name}: no lakeforge metadata in {latest}"
        assert meta["run_id"] == last_run["run_id"], (meta, last_run["run_id"])
        assert meta["job"] == last_run["job"], meta
        if name == "customer_churn_risk":
            models = [m["name"] for m in meta.get("models", [])]
            assert models == ["churn_risk"], (name, meta)

        old = DeltaTable(uri, version=0).to_pyarrow_table().num_rows
        assert old == runs[0]["products"][[p["product"] for p in runs[0]["products"]].index(name)]["rows"]

        frame = pl.read_delta(uri)
        assert frame.height == product["rows"], (name, frame.height)
        print(f"{name}: version {table.version()}, {rows} rows, read by deltalake and polars")

    revenue = pl.read_delta(f"{warehouse}/country_daily_revenue")
    assert "country" in revenue.columns and revenue["country"].n_unique() == 10
    features = pl.read_delta(f"{warehouse}/customer_features")
    assert features["customer_id"].n_unique() == features.height
    risk = pl.read_delta(f"{warehouse}/customer_churn_risk")
    assert risk.height == features.height
    assert risk["churn_probability"].is_between(0.0, 1.0).all()
    print("independent readers agree with lakeforge")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
