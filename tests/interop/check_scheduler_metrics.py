"""Scrapes a real `lakeforge schedule` daemon and parses its /metrics with the Prometheus
project's own Python client parser (prometheus_client), so the exposition format is checked by
an outside implementation, not by Lakeforge's tests of itself.

Usage: check_scheduler_metrics.py PATH/TO/lakeforge WORK_DIR

Starts the daemon on a one-second job in WORK_DIR, waits for two successful runs through
/api/status, checks /health, parses /metrics, then stops the daemon with SIGTERM and expects a
clean exit. Exits non-zero with a message on any failure.
"""

import json
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

JOB = """
[job]
name = "tick"
warehouse = "wh"
schedule = "* * * * * *"
[sources.numbers]
format = "csv"
path = "numbers.csv"
[[products]]
name = "ticks"
sql = "SELECT n, '${run_ts}' AS run_ts FROM numbers"
freshness_sla = "10m"
"""

EXPECTED = {
    "lakeforge_scheduler_jobs": "gauge",
    "lakeforge_job_runs": "counter",
    "lakeforge_job_run_duration_seconds": "summary",
    "lakeforge_job_running": "gauge",
    "lakeforge_job_next_run_timestamp_seconds": "gauge",
    "lakeforge_product_rows_written": "counter",
    "lakeforge_product_staleness_seconds": "gauge",
    "lakeforge_product_freshness_sla_seconds": "gauge",
    "lakeforge_product_sla_breached": "gauge",
}


def get(address, path):
    with urllib.request.urlopen(f"http://{address}{path}", timeout=30) as response:
        return response.status, response.read().decode()


def main():
    lakeforge, work = sys.argv[1], pathlib.Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    (work / "numbers.csv").write_text("n\n1\n2\n3\n")
    (work / "tick.toml").write_text(JOB)
    daemon = subprocess.Popen(
        [lakeforge, "schedule", "tick.toml", "--http", "127.0.0.1:0", "--poll", "200ms"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = daemon.stdout.readline()
        if "http://" not in first:
            sys.exit(f"the daemon did not report its endpoint: {first!r}")
        address = first.split("http://", 1)[1].strip()
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(get(address, "/api/status")[1])
            runs = status["jobs"][0]["runs"].get("succeeded", 0)
            if runs >= 2:
                break
            if time.monotonic() > deadline:
                sys.exit(f"no two successful runs within a minute: {status}")
            time.sleep(0.2)
        code, health = get(address, "/health")
        if code != 200 or json.loads(health)["status"] != "ok":
            sys.exit(f"/health answered {code}: {health}")
        code, text = get(address, "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name, kind in EXPECTED.items():
            if name not in families:
                sys.exit(f"/metrics lacks {name}; has {sorted(families)}")
            if families[name].type != kind:
                sys.exit(f"{name} is a {families[name].type}, expected a {kind}")
        runs = {
            s.labels["status"]: s.value
            for s in families["lakeforge_job_runs"].samples
            if s.labels.get("job") == "tick"
        }
        if runs.get("succeeded", 0) < 2:
            sys.exit(f"lakeforge_job_runs_total says {runs}")
        breached = [s.value for s in families["lakeforge_product_sla_breached"].samples]
        if breached != [0.0]:
            sys.exit(f"a fresh product is reported in breach: {breached}")
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        if code != 0:
            sys.exit(f"the daemon exited with {code} after SIGTERM")
        print(f"scheduler metrics: {len(families)} families parsed by prometheus_client")
    finally:
        if daemon.poll() is None:
            daemon.kill()


if __name__ == "__main__":
    main()
