"""Benchmark: churnflow serve against KServe's own ceiling, a bare no-op kserve.Model, side by side.

Run on purpose (not a test):
    .venv/bin/python bench/ceiling_bench.py [--seconds 10] [--rounds 2] [--starts 3] [--before SRC] [--note ...]
Needs wrk (Debian package; scripts/system-deps.sh installs it).

In one run, on loopback only, it trains one model on the default synthetic table (1,000 rows), then:
  noop-1w   bench/_noop_kserve.py: a no-op kserve.Model subclass on KServe's ModelServer, one worker
  ours-1w   `churnflow serve`, one worker, on the trained model
  (--rounds repeats this pair, alternating, to show the noise)
  ours-2w   `churnflow serve --workers 2`, each of --starts fresh starts measured on its own, once both
            workers listen and have loaded the model (ready answers as soon as the first one does)
and drives each with the same wrk client (`wrk -t1`: the machine has two cores and wrk needs one of
them) and the same bodies: v1 `{"instances": [ROW]}` at 1 and 32 connections, a one-row v2 infer at
32. Both servers log alike: no per-request access or timing lines (see _noop_kserve.py). It reports
req/s and p50/p99, ours over the no-op model per load (target ≥ 0.80), and each fresh two-worker start
over one worker at 32 connections (target ≥ 1.5), with each busy process's CPU seconds during the load
(how the load spread over the workers) and the server's CPU time per request (steadier than req/s when
other work shares the machine), and writes them through bench/_results.write_results to
bench/results/ceiling_bench.json (or --json).
With --before SRC the same loads also run against `churnflow serve` from the source tree at SRC
(as serve_bench.py --before does), interleaved: before/after in one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from _results import write_results
from _server import Server, free_port
from serve_bench import ROW, _errors, _latency, _number, before_source, v2_body

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
RATIO_TARGET = 0.80
WORKERS_TARGET = 1.5
LOADS = {  # name: (protocol, connections)
    "v1 c=1": ("v1", 1),
    "v1 c=32": ("v1", 32),
    "v2 c=32": ("v2", 32),
}
WORKER_LOADS = ("v1 c=32", "v2 c=32")


def body_of(protocol: str) -> tuple[str, dict]:
    if protocol == "v1":
        return "/v1/models/churn:predict", {"instances": [ROW]}
    return "/v2/models/churn/infer", v2_body(1)


def cpu_seconds(server: Server) -> dict[int, float]:
    """CPU seconds (user + system) used so far by the server process and each of its workers, by pid."""
    try:
        parent = psutil.Process(server.process.pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return {}
    used = {}
    for process in processes:
        try:
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
        except psutil.Error:
            continue
    return used


def wrk(server: Server, path: str, body: dict, seconds: int, connections: int) -> dict[str, Any]:
    """One wrk load; also the server's CPU time per request and each worker's share of it."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    before = cpu_seconds(server)
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            f"http://127.0.0.1:{server.port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    after = cpu_seconds(server)
    os.unlink(script.name)
    requests = _number(r"(\d+) requests in", output)
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    busy = sorted((u for u in used.values() if u > 0.05 * seconds), reverse=True)
    return {
        "rps": _number(r"Requests/sec:\s+([\d.]+)", output),
        "p50_ms": _latency("50%", output),
        "p99_ms": _latency("99%", output),
        "errors": _errors(output),
        "server_cpu_us_per_request": round(sum(used.values()) / requests * 1e6, 1) if requests else None,
        "busy_process_cpu_seconds": [round(u, 2) for u in busy],
    }


def run_loads(server: Server, names: tuple[str, ...], seconds: int) -> dict[str, dict]:
    results = {}
    for name in names:
        protocol, connections = LOADS[name]
        path, body = body_of(protocol)
        results[name] = wrk(server, path, body, seconds, connections)
    return results


def wait_for_workers(server: Server, workers: int, timeout: float = 240.0) -> None:
    """Waits until `workers` worker processes hold a listening socket on the server's port and have each
    reported their model on /metrics, then 3 s more for their event loops: the server answers ready as soon
    as its first worker does, and a load started then measures one worker (or a shared socket's first taker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = 0
        try:
            for child in psutil.Process(server.process.pid).children():
                connections = child.connections(kind="tcp")  # psutil 5.9 (pinned)
                listening += any(c.laddr.port == server.port and c.status == psutil.CONN_LISTEN for c in connections)
            metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        except (psutil.Error, httpx.HTTPError):
            time.sleep(0.5)
            continue
        reported = {
            line.split('pid="', 1)[1].split('"', 1)[0]
            for line in metrics.splitlines()
            if line.startswith("churnflow_model_info{") and 'pid="' in line
        }
        if listening >= workers and len(reported) >= workers:
            time.sleep(3)
            return
        time.sleep(0.5)
    raise SystemExit(f"{workers} workers did not all start within {timeout:.0f} s")


def cpu_us_per_call(function: Callable[[], Any], calls: int = 2000, rounds: int = 5) -> float:
    """Median over rounds of the CPU time per call (process time: steadier than wall time on a shared machine)."""
    function()
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            function()
        times.append((time.process_time() - started) / calls * 1e6)
    return round(statistics.median(times), 1)


def step_costs(model_dir: str) -> dict[str, float]:
    """Where one single-row request's model work goes, in this process (no server): KServe's Model.__call__
    with the no-op model and with ChurnModel on both protocols, and each of ChurnModel's steps."""
    import asyncio

    from _noop_kserve import NoopModel
    from kserve.protocol.infer_type import InferInput, InferRequest

    from churnflow.predictor.model import ChurnModel

    model = ChurnModel("churn", model_dir)
    assert model.load()
    noop = NoopModel("churn")
    noop.load()
    gc.collect()
    gc.freeze()  # as the server does once it has its model (predictor/gc_freeze.py)
    v1 = {"instances": [ROW]}
    v2 = InferRequest(
        model_name="churn",
        infer_inputs=[InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in v2_body(1)["inputs"]],
    )
    loop = asyncio.new_event_loop()
    batch = model.predict(model.preprocess(v1))
    batch_v2 = model.predict(model.preprocess(v2))
    released, features = batch.loaded.released, batch.aligned.features
    raw = released.raw_probability(features)
    costs = {
        "no-op model, whole call (v1)": cpu_us_per_call(lambda: loop.run_until_complete(noop(v1, {}))),
        "no-op model, whole call (v2)": cpu_us_per_call(lambda: loop.run_until_complete(noop(v2, {}))),
        "churnflow, whole call (v1)": cpu_us_per_call(lambda: loop.run_until_complete(model(v1, {}))),
        "churnflow, whole call (v2)": cpu_us_per_call(lambda: loop.run_until_complete(model(v2, {}))),
        "v1 decode and validation": cpu_us_per_call(lambda: model.preprocess(v1)),
        "v2 decode and validation": cpu_us_per_call(lambda: model.preprocess(v2)),
        "forest (scorer)": cpu_us_per_call(lambda: released.raw_probability(features)),
        "calibration": cpu_us_per_call(lambda: released.calibrator.apply(raw)),
        "threshold": cpu_us_per_call(lambda: released.churn(batch.probability)),
        "metrics (rows, classes, probability, drift bins)": cpu_us_per_call(
            lambda: model.metrics.observe(batch.probability, batch.churn, batch.aligned)
        ),
        "v1 answer": cpu_us_per_call(lambda: model.postprocess(batch)),
        "v2 answer": cpu_us_per_call(lambda: model.postprocess(batch_v2)),
    }
    loop.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="how often the no-op/ours one-worker pair runs")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts of the two-worker server")
    parser.add_argument("--before", metavar="SRC", help="also measure churnflow from the source tree at SRC")
    parser.add_argument("--note", default="", help="conditions worth recording (other work on the machine)")
    parser.add_argument("--json", help="write the results here (default bench/results/ceiling_bench.json)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk, or bash scripts/system-deps.sh)")
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="churnflow-ceiling-"))
    subprocess.run(
        [str(BIN / "churnflow"), "run", "--output", str(work / "run")], check=True, stdout=subprocess.DEVNULL
    )
    model_dir = str(work / "run" / "model")
    ready = "/v2/models/churn/ready"
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "ours": ([str(BIN / "churnflow"), "serve", "--model-dir", model_dir], {})
    }
    if args.before:
        shim = before_source(Path(args.before), work / "before")
        variants["before"] = (
            [PYTHON, "-m", "churnflow.cli", "serve", "--model-dir", model_dir],
            {"PYTHONPATH": str(shim)},
        )

    def start(command: list[str], env: dict[str, str], workers: int = 1) -> Server:
        port = free_port()
        extra = ["--workers", str(workers)] if workers > 1 else []
        return Server([*command, "--port", str(port), *extra], port, ready, env)

    rounds: list[dict[str, dict]] = []
    for _ in range(args.rounds):
        one_round: dict[str, dict] = {}
        port = free_port()
        server = Server([PYTHON, str(HERE / "_noop_kserve.py"), str(port)], port, ready)
        try:
            one_round["noop-1w"] = run_loads(server, tuple(LOADS), args.seconds)
        finally:
            server.stop()
        for variant, (command, env) in variants.items():
            server = start(command, env)
            try:
                one_round[f"{variant}-1w"] = run_loads(server, tuple(LOADS), args.seconds)
            finally:
                server.stop()
        rounds.append(one_round)
    starts: dict[str, list[dict]] = {variant: [] for variant in variants}
    for _ in range(args.starts):
        for variant, (command, env) in variants.items():
            server = start(command, env, workers=2)
            try:
                wait_for_workers(server, 2)
                starts[variant].append(run_loads(server, WORKER_LOADS, args.seconds))
            finally:
                server.stop()

    def median(server: str, load: str) -> float:
        return statistics.median(r[server][load]["rps"] for r in rounds)

    summary: dict[str, Any] = {}
    for variant in variants:
        ours_vs_noop = {
            load: {
                "noop_rps": median("noop-1w", load),
                "ours_rps": median(f"{variant}-1w", load),
                "ratio": median(f"{variant}-1w", load) / median("noop-1w", load),
                "per_round": [r[f"{variant}-1w"][load]["rps"] / r["noop-1w"][load]["rps"] for r in rounds],
            }
            for load in LOADS
        }
        workers = [
            {load: s[load]["rps"] / median(f"{variant}-1w", load) for load in WORKER_LOADS} for s in starts[variant]
        ]
        summary[variant] = {
            "ours_vs_noop": ours_vs_noop,
            "workers2_vs_1": workers,
            "targets_met": {
                **{
                    f"{load} ≥ {RATIO_TARGET:.0%} of no-op": v["ratio"] >= RATIO_TARGET
                    for load, v in ours_vs_noop.items()
                },
                f"2 workers ≥ {WORKERS_TARGET}× on every start": all(
                    ratio >= WORKERS_TARGET for start_ratios in workers for ratio in start_ratios.values()
                ),
            },
        }
    for variant, s in summary.items():
        print(f"== {variant}")
        for load, v in s["ours_vs_noop"].items():
            rounds_text = ", ".join(f"{x:.2f}" for x in v["per_round"])
            print(
                f"  {load:<8} no-op {v['noop_rps']:>7.0f}  ours {v['ours_rps']:>7.0f}  {v['ratio']:.2f} ({rounds_text})"
            )
        for i, w in enumerate(s["workers2_vs_1"]):
            cpu = {load: starts[variant][i][load]["busy_process_cpu_seconds"] for load in WORKER_LOADS}
            print(f"  2 workers, start {i + 1}: " + ", ".join(f"{k} {x:.2f}×" for k, x in w.items()) + f" CPU s {cpu}")
        print("  targets:", s["targets_met"])
    steps = step_costs(model_dir)
    for step, cost in steps.items():
        print(f"  {step:<50} {cost:7.1f} µs CPU")
    figures = {
        "seconds_per_load": args.seconds,
        "steps_cpu_us": steps,
        "wrk_threads": 1,
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "rounds": rounds,
        "two_workers": starts,
        "summary": summary,
    }
    note = f"load average at start {load_at_start[0]:.2f}, {load_at_start[1]:.2f}, {load_at_start[2]:.2f}"
    if args.note:
        note += f"; {args.note}"
    write_results("ceiling_bench", figures, note, args.json or f"{HERE}/results/ceiling_bench.json")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
