#!/usr/bin/env python3
"""Great Expectations (pandas) as the peer of `lakeforge-benchmarks dq`.

    python3 benchmarks/peers/gx_checks.py --job JOB.toml --dataset NAME --data DIR
                                          --lakeforge RESULTS.json [--runs N] [--warmup N]

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. Then:
  1. translates the `[[checks]]` of --job that are `on` --dataset into the Great Expectations
     expectation a GX user would write for each, where GX has one (see `expectation_for`); the
     others are listed with the reason (freshness, drift and anomaly kinds, SQL predicates other
     than one comparison);
  2. validates them over the dataset's Parquet files (--data) the way GX's pandas data source
     does: the files read into one pandas DataFrame, then `batch.validate(suite)`;
  3. compares every result with Lakeforge's result of the same check (--lakeforge: the `checks`
     array of `lakeforge --json run`): row-level kinds by their failing and NULL counts, the
     statistics by their observed value (within 1e-9 relative; quantiles, which Lakeforge
     estimates with a t-digest and GX computes exactly, within 1%), and both by pass/fail;
  4. times --warmup untimed and --runs timed rounds of reading the files and validating (the
     first round's results are the ones compared);
  5. prints one JSON document: {"versions", "expectations", "unmapped": {check: reason},
     "verdicts": {check: "ok" | "MISMATCH ..."}, "seconds": {case: [...]}}.
"""
import argparse
import json
import math
import os
import re
import statistics
import sys
import time
import tomllib
from pathlib import Path

from peer_venv import ensure_venv

PINS = [
    "great_expectations==1.24.1",
    "pandas==2.3.3",
    "numpy==2.2.6",
    "pyarrow==22.0.0",
]
NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?)"
COLUMN = r"([A-Za-z_][A-Za-z0-9_]*)"
# The single-comparison SQL predicates GX expresses as a range or set expectation.
COMPARISON = re.compile(rf"^\s*{COLUMN}\s*(>=|>|<=|<)\s*{NUMBER}\s*$")
BETWEEN = re.compile(rf"^\s*{COLUMN}\s+BETWEEN\s+{NUMBER}\s+AND\s+{NUMBER}\s*$", re.IGNORECASE)
IN_LIST = re.compile(rf"^\s*{COLUMN}\s+IN\s*\(([^)]*)\)\s*$", re.IGNORECASE)


def number(text):
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def check_name(check):
    """The check's name as Lakeforge derives it when the spec gives none: the kind, the anomaly
    metric, the column and the columns, joined by `_` (planner's `CheckSpec::effective_name`)."""
    if "name" in check:
        return check["name"]
    parts = [check.get("kind", "expect"), check.get("metric"), check.get("column")]
    return "_".join([p for p in parts if p] + check.get("columns", []))


def expectation_for(check):
    """(GX expectation class name, its arguments) for a Lakeforge check, or (None, reason)."""
    kind = check.get("kind", "expect")
    column = check.get("column")
    mostly = {"mostly": check["mostly"]} if "mostly" in check else {}
    bounds = {}
    if "min" in check:
        bounds["min_value"] = check["min"]
    if "max" in check:
        bounds["max_value"] = check["max"]
    if kind == "not_null":
        return "ExpectColumnValuesToNotBeNull", {"column": column, **mostly}
    if kind == "unique":
        columns = check.get("columns") or [column]
        if len(columns) == 1:
            return "ExpectColumnValuesToBeUnique", {"column": columns[0], **mostly}
        return "ExpectCompoundColumnsToBeUnique", {"column_list": columns, **mostly}
    if kind == "between":
        return "ExpectColumnValuesToBeBetween", {"column": column, **bounds, **mostly}
    if kind == "in_set":
        return "ExpectColumnValuesToBeInSet", {
            "column": column, "value_set": check["values"], **mostly
        }
    if kind == "regex":
        return "ExpectColumnValuesToMatchRegex", {
            "column": column, "regex": check["pattern"], **mostly
        }
    if kind == "row_count":
        return "ExpectTableRowCountToBeBetween", bounds
    if kind in ("mean", "stddev", "min", "max"):
        name = {"mean": "Mean", "stddev": "Stdev", "min": "Min", "max": "Max"}[kind]
        return f"ExpectColumn{name}ToBeBetween", {"column": column, **bounds}
    if kind == "quantile":
        return "ExpectColumnQuantileValuesToBeBetween", {
            "column": column,
            "quantile_ranges": {
                "quantiles": [check["quantile"]],
                "value_ranges": [[check.get("min"), check.get("max")]],
            },
        }
    if kind == "schema":
        return "ExpectTableColumnsToMatchSet", {
            "column_set": check["columns"], "exact_match": False
        }
    if kind == "expect":
        predicate = check["expect"]
        if match := COMPARISON.match(predicate):
            column, operator, value = match.group(1), match.group(2), number(match.group(3))
            side = "min_value" if operator.startswith(">") else "max_value"
            strict = {"strict_min" if side == "min_value" else "strict_max": len(operator) == 1}
            return "ExpectColumnValuesToBeBetween", {
                "column": column, side: value, **strict, **mostly
            }
        if match := BETWEEN.match(predicate):
            return "ExpectColumnValuesToBeBetween", {
                "column": match.group(1),
                "min_value": number(match.group(2)),
                "max_value": number(match.group(3)),
                **mostly,
            }
        if match := IN_LIST.match(predicate):
            values = [
                number(v.strip()) if re.fullmatch(NUMBER, v.strip()) else v.strip().strip("'")
                for v in match.group(2).split(",")
            ]
            return "ExpectColumnValuesToBeInSet", {
                "column": match.group(1), "value_set": values, **mostly
            }
        return None, f"the SQL predicate `{predicate}` is not one comparison GX has an expectation for"
    reasons = {
        "freshness": "GX has no expectation relative to the run time",
        "drift": "GX has no PSI/KS/JS/Wasserstein/chi-squared drift expectation against a reference dataset",
        "anomaly": "GX Core has no expectation comparing with a metric's history",
    }
    return None, reasons.get(kind, f"no GX expectation for kind {kind}")


def read(data):
    """The dataset's Parquet files as one DataFrame, as a pandas user reads a folder."""
    import pandas as pd

    return pd.read_parquet(data)


def validate(context, suite, frame):
    asset = context.data_sources.get("pandas").get_asset("dataset")
    batch = asset.get_batch_definition("all").get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(suite, result_format="SUMMARY")


def close(a, b, rel):
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def compare(ours, theirs):
    """'ok' or what differs between Lakeforge's result `ours` and GX's result `theirs`."""
    result = theirs.result
    problems = []
    if bool(ours["passed"]) != bool(theirs.success):
        problems.append(f"passed {ours['passed']} vs GX's {theirs.success}")
    if "unexpected_count" in result:
        if ours["failed"] != result["unexpected_count"]:
            problems.append(f"failed {ours['failed']} vs GX's unexpected {result['unexpected_count']}")
        missing = result.get("missing_count")
        if missing is not None and ours.get("null_skipped", 0) != missing:
            problems.append(f"null_skipped {ours.get('null_skipped')} vs GX's missing {missing}")
    elif ours["kind"] in ("mean", "stddev", "min", "max", "row_count", "quantile"):
        observed = result.get("observed_value")
        if isinstance(observed, dict):  # quantiles: {"quantiles": [...], "values": [...]}
            observed = observed["values"][0]
        observed = float(observed) if observed is not None else None
        rel = 0.01 if ours["kind"] == "quantile" else 1e-9
        if not close(ours.get("observed"), observed, rel):
            problems.append(f"observed {ours.get('observed')} vs GX's {observed}")
    return "ok" if not problems else "MISMATCH: " + "; ".join(problems)


def main():
    ensure_venv("venv-bench-gx", PINS)
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--lakeforge", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    # GX draws a progress bar per validation on stderr; the harness log needs none.
    os.environ.setdefault("TQDM_DISABLE", "1")
    import great_expectations as gx
    import pandas as pd

    spec = tomllib.loads(Path(args.job).read_text())
    checks = [c for c in spec.get("checks", []) if c.get("on") == args.dataset]
    lakeforge = {r["check"]: r for r in json.loads(Path(args.lakeforge).read_text())}

    context = gx.get_context(mode="ephemeral")
    context.data_sources.add_pandas("pandas").add_dataframe_asset(
        "dataset"
    ).add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="lakeforge_checks"))
    unmapped, mapped = {}, []
    for check in checks:
        name = check_name(check)
        expectation, arguments = expectation_for(check)
        if expectation is None:
            unmapped[name] = arguments
            continue
        if name not in lakeforge:
            sys.exit(f"gx_checks.py: Lakeforge reported no result for check {name}")
        suite.add_expectation(
            getattr(gx.expectations, expectation)(**arguments, meta={"check": name})
        )
        mapped.append(name)

    # Every round reads the files and validates, as a scheduled GX validation would; the first
    # round's results are also compared with Lakeforge's.
    verdicts = {}
    load_seconds, validate_seconds, total_seconds = [], [], []
    for round_number in range(args.warmup + args.runs):
        started = time.perf_counter()
        frame = read(args.data)
        loaded = time.perf_counter()
        results = validate(context, suite, frame)
        finished = time.perf_counter()
        del frame
        if round_number == 0:
            for result in results.results:
                name = result.expectation_config.meta["check"]
                verdicts[name] = compare(lakeforge[name], result)
        if round_number >= args.warmup:
            load_seconds.append(loaded - started)
            validate_seconds.append(finished - loaded)
            total_seconds.append(finished - started)
    print(
        f"  great_expectations: {len(mapped)} expectations, median "
        f"{statistics.median(total_seconds):.3f} s (read {statistics.median(load_seconds):.3f} s)",
        file=sys.stderr,
    )
    json.dump(
        {
            "versions": {"great_expectations": gx.__version__, "pandas": pd.__version__},
            "expectations": len(mapped),
            "unmapped": unmapped,
            "verdicts": verdicts,
            "seconds": {
                "great_expectations": total_seconds,
                "great_expectations read": load_seconds,
                "great_expectations validate": validate_seconds,
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
