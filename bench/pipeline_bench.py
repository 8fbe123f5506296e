"""Benchmark: the local pipeline end to end, both modes, against the original training script.

Run on purpose (not a test):  .venv/bin/python bench/pipeline_bench.py [--sizes 100000,1000000,10000000]

Each measurement is a fresh process on the same synthetic rows:
- "tuned" is the default `churnflow run`: kfp.local preprocess → tune (both model families; successive
  halving on large tables) → train on every row → evaluate → deploy;
- "seed-exact" is `churnflow run --set tune=false`: the baseline script's 100-tree forest, fully grown;
- "original" is the baseline training script (bench/baseline_train.py).
Ratios are ours over the original script's, measured in the same run. `--task-floor N` also runs a
pipeline of N churnflow components that do nothing through kfp.local (bench/_noop_pipeline.py): the
cost of the tasks themselves, before any work, which no change to what they do can go below.
Peak RSS is that of the largest single process (kfp.local runs every task as its own process). Above
--max-forest-rows the seed-exact run and the original script are not run: a fully grown forest grows
with the rows it is fitted on (the results at the largest size that was run say by how much). Results
go to bench/results/pipeline_bench.json (or --json) with the commit, date and machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_results

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
CHURNFLOW = str(Path(PYTHON).with_name("churnflow"))
QUALITY = ("roc_auc", "f1", "brier")
# What a task that reads the split and fits or scores a model imports at the least.
FIT_STACK = "pandas,pyarrow.parquet,sklearn.ensemble,sklearn.metrics"


def measure(command: list[str]) -> dict:
    output = subprocess.run(
        [PYTHON, str(HERE / "_measure.py"), *command], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(output)
    if result["returncode"] != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result['stderr']}")
    result.pop("stderr", None)
    return result


def pipeline(rows: int, directory: Path, *settings: str) -> dict:
    """One `churnflow run` and what it reported: quality, the chosen model and the tuning path."""
    result = measure([CHURNFLOW, "run", "--rows", str(rows), "--output", str(directory), *settings])
    metrics = json.loads((directory / "metrics.json").read_text())
    metadata = json.loads((directory / "model" / "metadata.json").read_text())
    search = (metadata.get("tuning") or {}).get("halving") or {}
    result.update(
        {name: metrics[name] for name in QUALITY},
        family=metadata["family"],
        hyperparameters=metadata["hyperparameters"],
        tuning_rungs=[[r["rows"], len(r["candidates"])] for r in search.get("rungs", [])],
        fit_seconds=metadata["fit_seconds"],
        compiled=metrics["compiled"],
    )
    return result


def original(rows: int, directory: Path) -> dict:
    model = directory / "churn_model.pkl"
    result = measure([PYTHON, str(HERE / "baseline_train.py"), str(rows), str(model)])
    result.update(json.loads(model.with_suffix(".metrics.json").read_text()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--max-forest-rows", type=int, default=1_000_000)
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other work on the machine)")
    parser.add_argument("--json", help="write the results here (default bench/results/pipeline_bench.json)")
    parser.add_argument("--task-floor", type=int, default=0, help="also time N do-nothing kfp.local tasks")
    args = parser.parse_args()
    results = []
    print(f"{'rows':>10} {'run':<11} {'seconds':>8} {'× orig':>7} {'peak MiB':>9} {'× orig':>7} {'ROC-AUC':>8}  model")
    for rows in (int(s) for s in args.sizes.split(",")):
        entry: dict = {"rows": rows}
        with tempfile.TemporaryDirectory() as tmp:
            if rows <= args.max_forest_rows:
                entry["original"] = original(rows, Path(tmp))
                entry["seed_exact"] = pipeline(rows, Path(tmp) / "seed-exact", "--set", "tune=false")
            entry["tuned"] = pipeline(rows, Path(tmp) / "tuned")
        base = entry.get("original")
        for run in ("original", "seed_exact", "tuned"):
            if run not in entry:
                print(f"{rows:>10} {run:<11} not run (a fully grown forest above --max-forest-rows)")
                continue
            r = entry[run]
            if base and run != "original":
                r["seconds_ratio"] = r["seconds"] / base["seconds"]
                r["peak_rss_ratio"] = r["peak_rss_mib"] / base["peak_rss_mib"]
            model = f"{r['family']} {r['tuning_rungs']}" if "family" in r else "forest, 100 trees"
            ratios = [f"{r[k]:>7.2f}" if k in r else f"{'—':>7}" for k in ("seconds_ratio", "peak_rss_ratio")]
            print(
                f"{rows:>10} {run:<11} {r['seconds']:>8.1f} {ratios[0]} "
                f"{r['peak_rss_mib']:>9.0f} {ratios[1]} {r['roc_auc']:>8.4f}  {model}",
                flush=True,
            )
        results.append(entry)
    figures = {"sizes": results, "max_forest_rows": args.max_forest_rows}
    for name, imports in (("task_floor", ""), ("task_floor_with_stack", FIT_STACK)):
        if args.task_floor <= 0:
            break
        floor = measure([PYTHON, str(HERE / "_noop_pipeline.py"), str(args.task_floor), imports])
        floor.update(tasks=args.task_floor, imports=imports, seconds_per_task=floor["seconds"] / args.task_floor)
        floor["cpu_seconds_per_task"] = floor["cpu_seconds"] / args.task_floor
        print(
            f"{args.task_floor} do-nothing kfp.local tasks{' importing ' + imports if imports else ''}: "
            f"{floor['seconds']:.1f} s, {floor['cpu_seconds']:.1f} CPU-s (whole run, its own start included)"
        )
        figures[name] = floor
    write_results("pipeline_bench", figures, args.note, args.json)


if __name__ == "__main__":
    main()
