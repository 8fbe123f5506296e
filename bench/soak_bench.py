"""Benchmark: soak at ~80% of peak and overload at ~3x peak, on loopback, bounded in time.

Run on purpose (not a test):
    .venv/bin/python bench/soak_bench.py [--minutes 10] [--workers 1,2] [--store sqlite:///tmp/p.db]
                                         [--event-loop asyncio|uvloop] [--overload 3]

For each worker count it
1. measures peak throughput with a closed-loop wrk run (mixed single rows and batches of 10, v1 and v2);
2. soaks at ~80% of that rate for --minutes (wrk paced per connection with a Lua delay), reporting
   req/s, p50/p99/p99.9, errors (must be 0) and the server's RSS at start and end (must stay flat);
3. overloads it: offers --overload times the measured peak in requests/s for 30 s (many connections,
   each paced), counting 200s and 503s (the server sheds with 503 + Retry-After rather than timing
   out) while probing the InferenceService's readiness path twice a second with Kubernetes' default
   1 s timeout (a busy pod must stay ready), then measures how long until a plain request is answered
   in under 50 ms again. The offered load reported is what reached the server (every answer counted).
Results go to bench/results/soak_bench-<event loop>[-store].json (or --json) with commit, date and machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _results import write_results
from _server import Server, free_port

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ROW = {"tenure": 12, "usage": 50.0, "age": 30, "monthly_charges": 70.0, "contract_type": "Month-to-month"}
TYPES = {"tenure": "INT64", "age": "INT64", "usage": "FP64", "monthly_charges": "FP64", "contract_type": "BYTES"}

LUA = r"""
local bodies = {
  {"/v1/models/churn:predict", '%(v1_single)s'},
  {"/v2/models/churn/infer", '%(v2_single)s'},
  {"/v1/models/churn:predict", '%(v1_batch)s'},
  {"/v2/models/churn/infer", '%(v2_batch)s'},
}
local counter = 0
statuses = {}
local delay_ms = %(delay_ms)s
request = function()
  counter = counter + 1
  local b = bodies[(counter %% 4) + 1]
  return wrk.format("POST", b[1], {["Content-Type"] = "application/json"}, b[2])
end
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
delay = function()
  return delay_ms
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) statuses = {} end
done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, '"' .. k .. '":' .. v) end
  io.write("STATUSES {" .. table.concat(parts, ",") .. "}\n")
  io.write(string.format("P999 %%.3f\n", latency:percentile(99.9) / 1000.0))
end
"""


def bodies() -> dict[str, str]:
    def v2(rows: int) -> str:
        inputs = [{"name": n, "shape": [rows], "datatype": TYPES[n], "data": [ROW[n]] * rows} for n in ROW]
        return json.dumps({"inputs": inputs})

    return {
        "v1_single": json.dumps({"instances": [ROW]}),
        "v2_single": v2(1),
        "v1_batch": json.dumps({"instances": [ROW] * 10}),
        "v2_batch": v2(10),
    }


def wrk(port: int, seconds: int, connections: int, delay_ms: float) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(LUA % {**bodies(), "delay_ms": f"{delay_ms:.3f}"})
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    ).stdout
    script.unlink()
    statuses = json.loads(re.search(r"STATUSES (\{.*\})", out).group(1))

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)] if match else float("nan")

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
        "p999_ms": float(re.search(r"P999 ([\d.]+)", out).group(1)),
        "statuses": statuses,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def prediction_log(port: int) -> dict[str, float]:
    """The server's prediction-log counters (summed over workers): written, pending, dropped rows."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {"written": 0.0, "pending": 0.0, "dropped": 0.0}
    names = {f"churnflow_prediction_log_{k}{'' if k == 'pending' else '_total'}": k for k in totals}
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                totals[names[sample.name]] += sample.value
    return totals


class ReadinessProbe(threading.Thread):
    """Polls the readiness path as the kubelet would (1 s timeout, every 0.5 s) until stopped."""

    def __init__(self, port: int, path: str = "/v1/models/churn") -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}{path}"
        self.results: list[int | str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                self.results.append(httpx.get(self.url, timeout=1.0).status_code)
            except httpx.TimeoutException:
                self.results.append("timeout")
            except httpx.HTTPError as error:
                self.results.append(type(error).__name__)

    def stop(self) -> str:
        self.stopping.set()
        self.join()
        return f"{self.results.count(200)} of {len(self.results)} readiness probes answered 200"


def recovery_seconds(port: int, limit: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        t = time.monotonic()
        try:
            ok = httpx.post(f"http://127.0.0.1:{port}/v1/models/churn:predict", json={"instances": [ROW]}, timeout=5)
            if ok.status_code == 200 and time.monotonic() - t < 0.05:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--store", help="prediction store URL for the server (prediction logging on)")
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--overload", type=float, default=3.0, help="offered load in multiples of the peak")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other work on the machine)")
    parser.add_argument("--json", help="write the results here (default bench/results/soak_bench-<loop>.json)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (bash scripts/system-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="churnflow-soak-"))
    subprocess.run(
        [str(BIN / "churnflow"), "run", "--output", str(work / "run")], check=True, stdout=subprocess.DEVNULL
    )
    results = {}
    for workers in (int(w) for w in args.workers.split(",")):
        port = free_port()
        command = [
            str(BIN / "churnflow"),
            "serve",
            "--model-dir",
            str(work / "run" / "model"),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--event-loop",
            args.event_loop,
        ]
        if args.store:
            command += ["--store", args.store]
        server = Server(command, port, "/v2/models/churn/ready")
        try:
            connections = 8
            peak = wrk(port, 15, connections, 0)
            target = 0.8 * peak["rps"]
            rss_start = server.rss_mib()
            # per-connection pacing: each connection waits so that all together send ~target req/s;
            # a short calibration run learns the latency at that rate, then the delay is corrected
            first = connections / target * 1000
            trial = wrk(port, 10, connections, first)
            latency_ms = max(0.0, connections / trial["rps"] * 1000 - first)
            delay_ms = max(0.0, connections / target * 1000 - latency_ms)
            soak = wrk(port, int(args.minutes * 60), connections, delay_ms)
            rss_end = server.rss_mib()
            logged = prediction_log(port) if args.store else {}
            probe = ReadinessProbe(port)
            probe.start()
            overload_connections = connections * 24
            offered = args.overload * peak["rps"]
            overload = wrk(port, 30, overload_connections, overload_connections / offered * 1000)
            overload["offered_target_rps"] = offered
            overload["offered_rps"] = sum(overload["statuses"].values()) / 30
            overload["offered_x_peak"] = overload["offered_rps"] / peak["rps"]
            readiness = probe.stop()
            recovered = recovery_seconds(port)
            results[f"{workers} worker(s)"] = {
                "peak": peak,
                "soak": soak,
                "soak_target_rps": target,
                "rss_start_mib": rss_start,
                "rss_end_mib": rss_end,
                "overload": overload,
                "recovery_seconds": recovered,
                "readiness_during_overload": readiness,
                "readiness_probes": {"answered_200": probe.results.count(200), "sent": len(probe.results)},
                "prediction_log": logged,
            }
            print(f"--- {workers} worker(s): peak {peak['rps']:.0f} req/s")
            print(
                f"soak {args.minutes:g} min at {soak['rps']:.0f} req/s (target {target:.0f}): p50 {soak['p50_ms']:.2f} "
                f"p99 {soak['p99_ms']:.2f} p99.9 {soak['p999_ms']:.2f} ms; statuses {soak['statuses']}, socket "
                f"errors {soak['socket_errors']}; RSS {rss_start:.0f} → {rss_end:.0f} MiB"
            )
            if logged:
                print(
                    f"prediction log after the soak: {logged['written']:.0f} rows written, "
                    f"{logged['pending']:.0f} pending, {logged['dropped']:.0f} dropped"
                )
            print(
                f"overload: offered {overload['offered_rps']:.0f} req/s ({overload['offered_x_peak']:.1f}x the peak of "
                f"{peak['rps']:.0f}), statuses {overload['statuses']}, p99 {overload['p99_ms']:.1f} ms; {readiness}; "
                f"recovered in {recovered:.2f} s"
            )
        finally:
            server.stop()
    figures = {
        "event_loop": args.event_loop,
        "minutes": args.minutes,
        "prediction_store": "sqlite" if args.store and args.store.startswith("sqlite") else (args.store and "other"),
        "overload_factor_asked": args.overload,
        "results": results,
    }
    default = f"{HERE}/results/soak_bench-{args.event_loop}{'-store' if args.store else ''}.json"
    write_results("soak_bench", figures, args.note, args.json or default)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
