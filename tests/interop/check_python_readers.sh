#!/usr/bin/env bash
# Runs the churn example with the `lakeforge` binary and reads its products back with
# independent Delta readers (Python deltalake and Polars) installed, pinned, into a virtual
# environment cached outside the clone.
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
