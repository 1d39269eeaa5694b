#!/usr/bin/env bash
# Installs the object-store servers the storage tests run on loopback, pinned, into a cache
# outside the clone: moto's S3 server (PyPI `moto[server]`) and Azurite's Blob service (npm
# `azurite`). Prints nothing when both are already installed at the pinned versions.
#
# The tests find them under $LAKEFORGE_CACHE/servers (default ~/.cache/lakeforge/servers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${LAKEFORGE_CACHE:-$HOME/.cache/lakeforge}
servers="$cache/servers"
mkdir -p "$servers"

venv="$servers/venv"
if [ ! -x "$venv/bin/moto_server" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

azurite="$servers/azurite"
if [ ! -x "$azurite/node_modules/.bin/azurite-blob" ] || ! cmp -s "$here/package.json" "$azurite/package.json"; then
  rm -rf "$azurite"
  mkdir -p "$azurite"
  cp "$here/package.json" "$here/package-lock.json" "$azurite/" 2>/dev/null || cp "$here/package.json" "$azurite/"
  (cd "$azurite" && npm ci --silent --no-audit --no-fund 2>/dev/null || npm install --silent --no-audit --no-fund)
fi
