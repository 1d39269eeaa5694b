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
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
