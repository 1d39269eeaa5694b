#!/usr/bin/env python3
"""The S3 server of `lakeforge-benchmarks storage`: moto's S3 API server on loopback, and the
uploads that put the benchmark's data on it with boto3 (an independent client, not Lakeforge).

    python3 benchmarks/peers/s3_server.py serve PORT
        runs the server on 127.0.0.1:PORT until killed; one line per request on stderr
        (werkzeug's access log: `"GET /bucket/key?... HTTP/1.1" 200 -`), which the suite counts
    python3 benchmarks/peers/s3_server.py versions
        prints {"moto": VERSION} (and installs the environment, outside any timing)
    python3 benchmarks/peers/s3_server.py upload ENDPOINT BUCKET PREFIX DIR
        creates BUCKET if needed and uploads every file under DIR to PREFIX/<relative path>;
        prints {"files": N, "bytes": B}
    python3 benchmarks/peers/s3_server.py floor ENDPOINT DIR
        the server's own cost, with boto3: uploads the .parquet files under DIR to a bucket
        `floor`, then times whole-object GETs, 1 MiB ranged GETs and HEADs of them; prints
        {"mb": ..., "whole_mb_per_s": ..., "ranged_get_ms": ..., "head_ms": ...}

Creates (once) a virtual environment under $LAKEFORGE_CACHE (default ~/.cache/lakeforge) with
the pinned versions below and re-runs itself there. moto is the same server the storage tests
use (PyPI `moto[server]`): it speaks the S3 REST API over HTTP, with conditional writes.
"""
import json
import os
import sys
from pathlib import Path

from peer_venv import ensure_venv

PINS = ["moto[server]==5.2.5"]


def client(endpoint):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        region_name="us-east-1",
    )


def main():
    ensure_venv("venv-bench-s3", PINS)
    command = sys.argv[1]
    if command == "versions":
        import moto

        print(json.dumps({"moto": moto.__version__}))
    elif command == "serve":
        port = sys.argv[2]
        server = Path(sys.prefix) / "bin" / "moto_server"
        os.execv(str(server), [str(server), "-H", "127.0.0.1", "-p", port])
    elif command == "upload":
        endpoint, bucket, prefix, folder = sys.argv[2:6]
        s3 = client(endpoint)
        existing = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        files, size = 0, 0
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            s3.upload_file(str(path), bucket, key)
            files += 1
            size += path.stat().st_size
        print(json.dumps({"files": files, "bytes": size}))
    elif command == "floor":
        import time

        endpoint, folder = sys.argv[2:4]
        s3 = client(endpoint)
        s3.create_bucket(Bucket="floor")
        files = sorted(Path(folder).rglob("*.parquet"))
        for path in files:
            s3.upload_file(str(path), "floor", path.name)
        total = sum(p.stat().st_size for p in files)
        start = time.time()
        for path in files:
            s3.get_object(Bucket="floor", Key=path.name)["Body"].read()
        whole = time.time() - start
        start, ranged = time.time(), 0
        for path in files:
            size = path.stat().st_size
            for offset in range(0, size, 1 << 20):
                last = min(size, offset + (1 << 20)) - 1
                s3.get_object(Bucket="floor", Key=path.name, Range=f"bytes={offset}-{last}")[
                    "Body"
                ].read()
                ranged += 1
        ranged_seconds = time.time() - start
        start = time.time()
        for _ in range(200):
            s3.head_object(Bucket="floor", Key=files[0].name)
        head = (time.time() - start) / 200
        print(
            json.dumps(
                {
                    "mb": round(total / 1e6),
                    "whole_mb_per_s": round(total / 1e6 / whole),
                    "ranged_gets": ranged,
                    "ranged_get_ms": round(ranged_seconds / ranged * 1000, 1),
                    "head_ms": round(head * 1000, 1),
                }
            )
        )
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
