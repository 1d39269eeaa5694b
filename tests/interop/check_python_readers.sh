#!/usr/bin/env bash
# Runs the churn example with the `lakeforge` binary and reads its products back with
# independent Delta readers (Python deltalake and Polars) installed, pinned, into a virtual
# environment cached outside the clone; then validates the runs' OpenLineage events against the
# official OpenLineage JSON Schemas (reference data outside the repository: see
# validate_openlineage.py for where it looks).
#
# Usage: tests/interop/check_python_readers.sh PATH/TO/lakeforge
set -euo pipefail

lakeforge=${1:?usage: check_python_readers.sh PATH/TO/lakeforge}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${LAKEFORGE_CACHE:-$HOME/.cache/lakeforge}
venv="$cache/interop-venv"

if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/churn"
cp "$repo/examples/churn/job.toml" "$repo/examples/churn/purchase_gaps.sql" "$work/churn/"
cp -r "$repo/examples/churn/models" "$work/churn/"
cd "$work"
for _ in 1 2; do
  "$lakeforge" --json example churn --dir churn --customers 2000 --events 100000 >> runs.jsonl
done
"$venv/bin/python" "$here/read_with_python.py" "$work/churn/warehouse" runs.jsonl

# The OpenLineage events of both runs against the official JSON Schemas (core 2-0-2, column
# lineage 1-2-0, ...); the validator first proves on its samples that it accepts and rejects.
validator="$here/validate_openlineage.py"
"$venv/bin/python" "$validator" "$here/openlineage_samples/valid.ndjson" > /dev/null
if "$venv/bin/python" "$validator" "$here/openlineage_samples/invalid.ndjson" 2> /dev/null; then
  echo "the OpenLineage validator accepted invalid events" >&2
  exit 1
fi
"$venv/bin/python" "$validator" "$work/churn/warehouse/_lakeforge/openlineage/events.ndjson" --expect-complete 2

# The scheduler's /metrics parsed by the Prometheus project's own client parser.
"$venv/bin/python" "$here/check_scheduler_metrics.py" "$lakeforge" "$work/scheduler"
