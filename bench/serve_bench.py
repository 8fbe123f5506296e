"""Benchmark: serving throughput, latency and memory, ours against the original Flask app.

Run on purpose (not a test):
    .venv/bin/python bench/serve_bench.py [--seconds 10] [--connections 4] [--event-loop asyncio|uvloop]
Needs wrk (Debian package; scripts/system-deps.sh installs it) and the bench extra (flask, gunicorn).

In one run, on loopback only, it trains one model on the default synthetic table (1,000 rows, the
seed's 100 trees), then starts in turn:
  baseline-dev       the Flask baseline (bench/baseline_app.py) on Flask's dev server
  baseline-gunicorn  the same app under gunicorn with 2 workers
  ours-1w / ours-2w  `churnflow serve` (KServe ModelServer) with 1 and 2 workers
and drives each with the same bounded wrk load: single rows and batches of 100, v1 and v2 (the baseline
only has single-row /predict). It prints req/s, p50/p99 latency and the server's peak RSS (all its
processes), with ratios against baseline-dev measured in the same run, and writes them with the
commit, date and machine to bench/results/serve_bench-<event loop>.json (or --json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from _results import write_results
from _server import Server, free_port

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
ROW = {"tenure": 12, "usage": 50.0, "age": 30, "monthly_charges": 70.0, "contract_type": "Month-to-month"}


def v2_body(rows: int) -> dict:
    columns = {name: [ROW[name]] * rows for name in ROW}
    types = {"tenure": "INT64", "age": "INT64", "usage": "FP64", "monthly_charges": "FP64", "contract_type": "BYTES"}
    return {"inputs": [{"name": n, "shape": [rows], "datatype": types[n], "data": v} for n, v in columns.items()]}


def workloads(model_name: str) -> dict[str, tuple[str, dict]]:
    return {
        "v1 single": (f"/v1/models/{model_name}:predict", {"instances": [ROW]}),
        "v2 single": (f"/v2/models/{model_name}/infer", v2_body(1)),
        "v1 batch100": (f"/v1/models/{model_name}:predict", {"instances": [ROW] * 100}),
        "v2 batch100": (f"/v2/models/{model_name}/infer", v2_body(100)),
    }


def wrk(url: str, body: dict, seconds: int, connections: int, server: Server) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    peak = [server.rss_mib()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak.append(server.rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    done.set()
    sampler.join()
    os.unlink(script.name)
    return {
        "rps": _number(r"Requests/sec:\s+([\d.]+)", output),
        "p50_ms": _latency("50%", output),
        "p99_ms": _latency("99%", output),
        "errors": _errors(output),
        "peak_rss_mib": max(peak),
    }


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")


def _latency(label: str, text: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not match:
        return float("nan")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]


def _errors(text: str) -> int:
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)


def before_source(source: Path, target: Path) -> Path:
    """A directory that, first on PYTHONPATH, makes `churnflow` (with its predictor, components and
    pipelines subpackages, laid out as setuptools installs them) import from the source tree at `source`."""
    package = target / "churnflow"
    package.mkdir(parents=True)
    for entry in (source / "churnflow").iterdir():
        (package / entry.name).symlink_to(entry.resolve())
    for name in ("predictor", "components", "pipelines"):
        (package / name).symlink_to((source / name).resolve())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio", help="churnflow serve's loop")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other work on the machine)")
    parser.add_argument("--json", help="write the results here (default bench/results/serve_bench-<loop>.json)")
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also serve with the churnflow source tree at SRC (e.g. `git archive main | tar -x -C SRC`), "
        "as before-1w / before-2w, interleaved with ours: a before/after comparison in one run",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk, or bash scripts/system-deps.sh)")
    if importlib.util.find_spec("flask") is None or not (BIN / "gunicorn").exists():
        raise SystemExit("the Flask baseline needs the bench extra: pip install -c constraints.txt -e '.[bench]'")
    work = Path(tempfile.mkdtemp(prefix="churnflow-bench-"))
    subprocess.run(
        [str(BIN / "churnflow"), "run", "--output", str(work / "run")], check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [PYTHON, str(HERE / "baseline_train.py"), "1000", str(work / "churn_model.pkl")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    model_dir = str(work / "run" / "model")
    env = {"CHURN_MODEL": str(work / "churn_model.pkl")}
    loop = ["--event-loop", args.event_loop]
    setups = {
        "baseline-dev": lambda p: Server([PYTHON, str(HERE / "baseline_app.py"), str(p)], p, "/metrics", env, cwd=HERE),
        "baseline-gunicorn": lambda p: Server(
            [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{p}", "baseline_app:app"], p, "/metrics", env, cwd=HERE
        ),
        "ours-1w": lambda p: Server(
            [str(BIN / "churnflow"), "serve", "--model-dir", model_dir, "--port", str(p), *loop],
            p,
            "/v2/models/churn/ready",
        ),
        "ours-2w": lambda p: Server(
            [str(BIN / "churnflow"), "serve", "--model-dir", model_dir, "--port", str(p), "--workers", "2", *loop],
            p,
            "/v2/models/churn/ready",
        ),
    }
    if args.before:
        shim = before_source(Path(args.before), work / "before")
        before_env = {"PYTHONPATH": str(shim)}
        before_cli = [PYTHON, "-m", "churnflow.cli", "serve", "--model-dir", model_dir]
        ours_1w, ours_2w = setups.pop("ours-1w"), setups.pop("ours-2w")
        setups["ours-1w"] = ours_1w
        setups["before-1w"] = lambda p: Server([*before_cli, "--port", str(p)], p, "/v2/models/churn/ready", before_env)
        setups["ours-2w"] = ours_2w
        setups["before-2w"] = lambda p: Server(
            [*before_cli, "--port", str(p), "--workers", "2"], p, "/v2/models/churn/ready", before_env
        )
    results: dict[str, dict] = {}
    for name, start in setups.items():
        port = free_port()
        server = start(port)
        try:
            loads = {"v1 single": ("/predict", ROW)} if name.startswith("baseline") else workloads("churn")
            for load, (path, body) in loads.items():
                results[f"{name} | {load}"] = wrk(
                    f"http://127.0.0.1:{port}{path}", body, args.seconds, args.connections, server
                )
        finally:
            server.stop()
    base = results["baseline-dev | v1 single"]
    print(f"{'server | load':<32} {'req/s':>9} {'x base':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS MiB':>8}")
    for key, r in results.items():
        ratio = r["rps"] / base["rps"] if "single" in key else float("nan")
        print(
            f"{key:<32} {r['rps']:>9.0f} {ratio:>7.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6} "
            f"{r['peak_rss_mib']:>8.0f}"
        )
    print("(x base: single-row req/s over the original Flask dev server's; batch rows/s = req/s x 100)")
    for key, r in results.items():
        r["x_baseline_dev"] = r["rps"] / base["rps"] if "single" in key else None
    figures = {
        "event_loop": args.event_loop,
        "seconds_per_load": args.seconds,
        "connections": args.connections,
        "results": results,
    }
    write_results("serve_bench", figures, args.note, args.json or f"{HERE}/results/serve_bench-{args.event_loop}.json")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
