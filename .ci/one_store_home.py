#!/usr/bin/env python3
"""Fails when code outside `engine/src/storage.rs` builds an object store.

ARCHITECTURE.md: the engine's `storage` module is the one place a URL becomes a store (with the
bucket's options, bounded retries and redacted values). A store built anywhere else would skip
that configuration, so this names every constructor of `object_store`'s stores found elsewhere.
Tests (files under `tests/`, `#[cfg(test)]` modules are not distinguished) may not either: they
go through the engine as users do.
"""
import pathlib
import re
import sys

HOME = pathlib.Path("engine/src/storage.rs")
ROOTS = ["engine", "planner", "udfs", "worker", "benchmarks"]
CONSTRUCTORS = re.compile(
    r"\b(AmazonS3Builder|MicrosoftAzureBuilder|GoogleCloudStorageBuilder|LocalFileSystem::new"
    r"|parse_url_opts|parse_url)\b"
)

violations = []
for root in ROOTS:
    for path in sorted(pathlib.Path(root).rglob("*.rs")):
        if path == HOME or "target" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.lstrip().startswith("//"):
                continue
            if CONSTRUCTORS.search(line):
                violations.append(f"{path}:{number}: {line.strip()}")

if violations:
    print("object stores are built only in engine/src/storage.rs (ARCHITECTURE.md):")
    print("\n".join(violations))
    sys.exit(1)
print("object stores: built only in engine/src/storage.rs")
