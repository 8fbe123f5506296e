"""Benchmark: where one single-row request's time goes, KServe's own ceiling, and garbage-collection pauses.

Run on purpose (not a test):
    .venv/bin/python bench/request_bench.py [--seconds 10] [--event-loop asyncio|uvloop] [--note TEXT]

In one run, on a model trained by `churnflow run --set tune=false` (1,000 synthetic rows, 100 trees):
1. steps: each step of one single-row request through ChurnModel, timed in a loop in this process (no
   server): v1 decoding with alignment, v2 decoding with alignment, the compiled forest, calibration,
   metrics, the prediction-log hand-off, postprocess, and the whole v1 path; median of 5 rounds, µs/call;
2. ceiling: `churnflow serve` with the model's steps doing no work at all (bench/_noop_server.py:
   the same server, hooks and event loop) against `churnflow serve`, one worker each, the same wrk
   load (v1 single row, 4 connections): req/s of both and ours as a fraction of the ceiling;
3. gc: in a process that has imported the server's libraries and loaded the model, the objects the
   collector tracks and the time of a full collection (median of 7), before and after gc.freeze(),
   which the server does once it has its model (predictor/server.py, freeze_startup_objects).
Writes bench/results/request_bench-<event loop>.json (or --json) with the commit, date and machine.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results
from _server import Server, free_port
from serve_bench import wrk

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ROW = {"tenure": 12, "usage": 50.0, "age": 30, "monthly_charges": 70.0, "contract_type": "Month-to-month"}
TYPES = {"tenure": "INT64", "age": "INT64", "usage": "FP64", "monthly_charges": "FP64", "contract_type": "BYTES"}


def per_call_us(function, calls: int = 5000, rounds: int = 5) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    function()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - started) / calls * 1e6)
    return round(statistics.median(times), 2)


def steps(model_dir: Path, store: str) -> dict[str, float]:
    from kserve.protocol.infer_type import InferInput, InferRequest

    from churnflow.predictor.model import ChurnModel
    from churnflow.store.logger import PredictionLogger

    model = ChurnModel("churn", str(model_dir))
    assert model.load()
    loaded = model.loaded
    body = {"instances": [ROW]}
    v2 = InferRequest(
        model_name="churn",
        infer_inputs=[InferInput(name=n, shape=[1], datatype=TYPES[n], data=[ROW[n]]) for n in ROW],
    )
    batch = model.predict(model.preprocess(body))
    aligned, probability = batch.aligned, batch.probability
    raw = loaded.released.scorer.probability(aligned.features)
    figures = {
        "v1 decoding and alignment": per_call_us(lambda: model.preprocess(body)),
        "v2 decoding and alignment": per_call_us(lambda: model.preprocess(v2)),
        "alignment alone": per_call_us(lambda: loaded.aligner.encode_records([ROW])),
        "forest (compiled)": per_call_us(lambda: loaded.released.scorer.probability(aligned.features)),
        "calibration": per_call_us(lambda: loaded.released.calibrator.apply(raw)),
        "metrics": per_call_us(lambda: model.metrics.observe(probability, batch.churn, aligned)),
        "postprocess (v1)": per_call_us(lambda: model.postprocess(batch)),
        "whole v1 path, no prediction log": per_call_us(
            lambda: model.postprocess(model.predict(model.preprocess(body)))
        ),
    }
    logger = PredictionLogger(store, "churn")
    version = loaded.released.metadata.get("model_version", "")
    figures["prediction-log hand-off"] = per_call_us(
        lambda: logger.submit("r", version, loaded.released.contract, aligned, probability, batch.churn, body),
        calls=2000,
    )
    logger.close()
    figures["backend"] = loaded.released.scorer.backend
    return figures


def gc_pauses(model_dir: Path) -> dict[str, float]:
    """Full-collection time with everything the server holds at start, before and after gc.freeze()."""
    import kserve  # noqa: F401 - what the server imports

    from churnflow.predictor.model import ChurnModel
    from churnflow.predictor.server import install_http_hooks  # noqa: F401

    model = ChurnModel("churn", str(model_dir))
    assert model.load()

    def collect_ms() -> float:
        times = []
        for _ in range(7):
            started = time.perf_counter()
            gc.collect()
            times.append((time.perf_counter() - started) * 1e3)
        return round(statistics.median(times), 2)

    before = {"tracked_objects": len(gc.get_objects()), "full_collection_ms": collect_ms()}
    gc.freeze()
    after = {
        "tracked_objects": len(gc.get_objects()),
        "frozen_objects": gc.get_freeze_count(),
        "full_collection_ms": collect_ms(),
    }
    gc.unfreeze()
    return {"before_freeze": before, "after_freeze": after}


def ceiling(model_dir: Path, seconds: int, event_loop: str) -> dict[str, dict]:
    results = {}
    flags = ["--model-dir", str(model_dir), "--event-loop", event_loop]
    programs = {
        "no-op model": [sys.executable, str(HERE / "_noop_server.py")],
        "churnflow serve": [str(BIN / "churnflow"), "serve"],
    }
    for name, program in programs.items():
        port = free_port()
        server = Server([*program, *flags, "--port", str(port)], port, "/v2/models/churn/ready")
        try:
            url = f"http://127.0.0.1:{port}/v1/models/churn:predict"
            results[name] = {**wrk(url, {"instances": [ROW]}, seconds, 4, server), "event_loop": event_loop}
        finally:
            server.stop()
    results["ours_fraction_of_ceiling"] = results["churnflow serve"]["rps"] / results["no-op model"]["rps"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other work on the machine)")
    parser.add_argument("--json", help="write the results here (default bench/results/request_bench-<loop>.json)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (bash scripts/system-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="churnflow-request-bench-"))
    subprocess.run(
        [str(BIN / "churnflow"), "run", "--output", str(work / "run"), "--set", "tune=false"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    model_dir = work / "run" / "model"
    figures = {
        "event_loop": args.event_loop,
        "steps_us": steps(model_dir, f"sqlite:///{work / 'predictions.db'}"),
        "ceiling": ceiling(model_dir, args.seconds, args.event_loop),
    }
    figures["gc"] = subprocess.run(
        [sys.executable, __file__, "--gc-only", str(model_dir)], check=True, capture_output=True, text=True
    ).stdout
    import json

    figures["gc"] = json.loads(figures["gc"])
    for name, value in figures["steps_us"].items():
        print(f"{name:<36} {value}")
    c = figures["ceiling"]
    print(
        f"ceiling: no-op model {c['no-op model']['rps']:.0f} req/s, churnflow serve "
        f"{c['churnflow serve']['rps']:.0f} req/s ({c['ours_fraction_of_ceiling']:.0%} of it)"
    )
    before, after = figures["gc"]["before_freeze"], figures["gc"]["after_freeze"]
    print(
        f"gc: {before['tracked_objects']} objects, full collection {before['full_collection_ms']} ms; "
        f"after freeze {after['tracked_objects']} objects, {after['full_collection_ms']} ms"
    )
    write_results(
        "request_bench", figures, args.note, args.json or f"{HERE}/results/request_bench-{args.event_loop}.json"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--gc-only":  # a fresh process, so earlier steps leave nothing behind
        import json

        print(json.dumps(gc_pauses(Path(sys.argv[2]))))
    else:
        main()
