"""Benchmark: scoring the whole base, against the original design's approach and the model format's limit.

Run on purpose (not a test):  .venv/bin/python bench/score_bench.py [--sizes 1000000,10000000]

All in one run, on the same tables from `churnflow generate` (CSV, and the same rows as two Parquet
files), with one 100-tree forest trained here:
  (a) baseline     the original design in one process: pandas read_csv, get_dummies, scikit-learn
                   predict_proba of the same forest, CSV write
  (b) onnx_only    ONNX Runtime alone on the already-encoded matrix (one thread): our format's limit;
      sklearn_only scikit-learn's predict_proba of the same forest on the same batches, for comparison;
      evaluators_all_cores  the same on every core (--threads): rows split across one-thread evaluators
                   (what `churnflow score` runs), ONNX Runtime intra-op threads, scikit-learn n_jobs;
                   fastest_all_cores is the fastest of them, the limit of scoring on this machine
  (c) score_csv / score_parquet   `churnflow score` end to end, one process;
      score_parquet_2_shards      two `churnflow score` processes at once, one Parquet file each
  (d) http_v1      100,000 of the rows through `churnflow serve` (v1, batches of 1,000)
  (e) families     per model family (the forest above, and gradient boosting trained on the same rows):
                   every evaluator on one thread and on all cores, which is fastest, and which one
                   `churnflow score` uses (FASTEST_EXACT and SKLEARN_MIN_ROWS in churnflow/scoring/bulk.py)
Each figure has wall-clock rows/s and rows per CPU-second (the per-core rate; the machine may be
shared, which slows wall time more than CPU time). Peak RSS is the largest single process. Ratios are
against (a) and (b) of the same run. The load average at the start is recorded: on a shared machine,
compare CPU-seconds and the ratios within one run. Results: bench/results/score_bench.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
CHURNFLOW = str(Path(PYTHON).with_name("churnflow"))
ALL_CORES = ("onnx_rows_split", "sklearn_rows_split", "onnx_intra_op", "sklearn_n_jobs")
"""The evaluators on every core (bench/_onnx_only.py); `churnflow score` is compared with the fastest."""
CONFIG = """\
id: customer_id
target: churn
numeric: [tenure, usage, age, monthly_charges]
categorical: [contract_type]
value: {column: monthly_charges, horizon_months: 12}
"""


def measure(command: list[str]) -> dict:
    output = subprocess.run(
        [PYTHON, str(HERE / "_measure.py"), *command], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(output)
    if result["returncode"] != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result['stderr']}")
    return result


def rates(rows: int, seconds: float, cpu_seconds: float, peak: float | None = None) -> dict:
    out = {
        "rows": rows,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "rows_per_second": round(rows / seconds),
        "rows_per_cpu_second": round(rows / cpu_seconds),
    }
    if peak is not None:
        out["peak_rss_mib"] = round(peak, 1)
    return out


def train_model(directory: Path, trees: int, rows: int) -> Path:
    from churnflow.components.preprocess.logic import preprocess
    from churnflow.components.train.logic import train
    from churnflow.core.config import load_config
    from churnflow.core.hyperparameters import ForestParams

    config = load_config(None)
    preprocess("", config, directory / "train", directory / "test", directory / "contract", synthetic_rows=rows)
    train(directory / "train", directory / "contract", directory / "model", ForestParams(n_estimators=trees))
    return directory / "model"


def train_boosting(directory: Path) -> Path:
    """Gradient boosting (scikit-learn's defaults: 100 iterations of 31 leaves) on the forest's training rows."""
    from churnflow.components.train.logic import train
    from churnflow.core.hyperparameters import BoostingParams

    train(directory / "train", directory / "contract", directory / "boosting", BoostingParams())
    return directory / "boosting"


def evaluators(model: Path, parquet: Path, rows: int, threads: int) -> dict:
    """Every evaluator of one model on the same encoded rows (bench/_onnx_only.py): one thread and all cores."""
    result = json.loads(
        subprocess.run(
            [PYTHON, str(HERE / "_onnx_only.py"), str(model), str(parquet), str(rows), "200000", str(threads)],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    return result


def family_figures(model: Path, parquet: Path, rows: int, threads: int, sizes: list[int]) -> dict:
    """(e): for one model, each evaluator's rates, the fastest, and the one `churnflow score` runs."""
    from churnflow.scoring.bulk import bulk_evaluator

    result = evaluators(model, parquet, rows, threads)
    names = ["onnx", "sklearn", *(n for n in ALL_CORES if f"{n}_seconds" in result)]
    figures = {name: rates(result["rows"], result[f"{name}_seconds"], result[f"{name}_cpu_seconds"]) for name in names}
    one_thread = max(("onnx", "sklearn"), key=lambda name: figures[name]["rows_per_cpu_second"])
    all_cores = [n for n in ALL_CORES if n in figures] or [one_thread]
    fastest = max(all_cores, key=lambda name: figures[name]["rows_per_second"])
    family = json.loads((model / "metadata.json").read_text())["family"]
    uses = "; ".join(f"{size:,} rows (Parquet): {bulk_evaluator(family, size)}" for size in sizes)
    return {
        "family": family,
        "evaluators": figures,
        "fastest_one_thread_per_cpu_second": one_thread,
        "fastest_all_cores": fastest,
        "churnflow_score_uses": f"{uses}; CSV (no row count up front): onnxruntime; rows split across {threads} "
        "one-thread evaluators",
        "note": "sklearn_rows_split is scikit-learn's OpenMP threads for gradient boosting (already split by rows)",
    }


def make_tables(directory: Path, rows: int) -> tuple[Path, Path]:
    """base.csv from `churnflow generate`, and the same rows as two Parquet files (streamed, bounded)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv = directory / "base.csv"
    subprocess.run(
        [CHURNFLOW, "generate", "--rows", str(rows), "--output", str(csv)], check=True, stdout=subprocess.DEVNULL
    )
    parquet = directory / "parquet"
    parquet.mkdir()
    half = rows // 2
    reader = pacsv.open_csv(csv, convert_options=pacsv.ConvertOptions(column_types={"customer_id": pa.string()}))
    writers: list = [None, None]
    written = 0
    for batch in reader:
        for part in (0, 1):
            lo, hi = (0, half) if part == 0 else (half, rows)
            start, stop = max(lo - written, 0), min(hi - written, batch.num_rows)
            if stop > start:
                piece = batch.slice(start, stop - start)
                if writers[part] is None:
                    writers[part] = pq.ParquetWriter(parquet / f"part-{part}.parquet", piece.schema)
                writers[part].write_table(pa.Table.from_batches([piece]), row_group_size=200_000)
        written += batch.num_rows
    for writer in writers:
        writer.close()
    return csv, parquet


def score_cmd(model: Path, data: Path, output: Path, config: Path, threads: int | None = None) -> list[str]:
    return [CHURNFLOW, "score", "--model-dir", str(model), "--data", str(data), "--output", str(output),
            "--config", str(config), *(["--threads", str(threads)] if threads else [])]  # fmt: skip


def two_shards(model: Path, parquet: Path, work: Path, config: Path, rows: int) -> dict:
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                PYTHON,
                str(HERE / "_measure.py"),
                *score_cmd(model, parquet / f"part-{i}.parquet", work / f"shard-{i}.parquet", config, 1),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in (0, 1)
    ]
    results = [json.loads(p.communicate()[0]) for p in processes]
    wall = time.perf_counter() - started
    if any(r["returncode"] for r in results):
        raise SystemExit(f"shard failed: {results}")
    out = rates(rows, wall, sum(r["cpu_seconds"] for r in results), max(r["peak_rss_mib"] for r in results))
    out["processes"] = 2
    return out


def http_v1(model: Path, csv: Path, rows: int = 100_000, batch: int = 1000) -> dict:
    import httpx
    import orjson
    import pandas as pd

    sys.path.insert(0, str(HERE))
    from _server import Server, free_port

    frame = pd.read_csv(csv, nrows=rows)
    columns = ["tenure", "usage", "age", "monthly_charges", "contract_type"]
    bodies = [
        orjson.dumps({"instances": frame.iloc[i : i + batch][columns].to_dict("records")})
        for i in range(0, len(frame), batch)
    ]
    port = free_port()
    server = Server([CHURNFLOW, "serve", "--model-dir", str(model), "--port", str(port)], port, "/v2/health/ready")
    try:
        url = f"http://127.0.0.1:{port}/v1/models/churn:predict"
        with httpx.Client(timeout=60) as client:
            client.post(url, content=bodies[0], headers={"content-type": "application/json"})
            started = time.perf_counter()
            for body in bodies:
                answer = client.post(url, content=body, headers={"content-type": "application/json"})
                answer.raise_for_status()
            wall = time.perf_counter() - started
    finally:
        server.stop()
    return {
        "rows": len(frame),
        "batch": batch,
        "seconds": round(wall, 3),
        "rows_per_second": round(len(frame) / wall),
        "note": "wall clock; the server and this client share the machine",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated table sizes (default 1000000)")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument(
        "--train-rows", type=int, default=5000, help="synthetic rows the forest is trained on (deeper trees with more)"
    )
    parser.add_argument("--skip-baseline-over", type=int, default=10_000_000, help="largest size for (a)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "score_bench.json"))
    parser.add_argument("--no-shards", action="store_true", help="skip the two-process shard run")
    parser.add_argument("--no-http", action="store_true", help="skip the serving run")
    parser.add_argument("--shared", default="", help="say what else ran on the machine (recorded in the JSON)")
    parser.add_argument(
        "--threads", type=int, default=0, help="threads of `churnflow score` and the evaluators (default: every core)"
    )
    args = parser.parse_args()
    import joblib

    from churnflow.scoring.bulk import default_threads

    threads = args.threads or default_threads()
    import numpy as np

    sizes = [int(s) for s in args.sizes.split(",")]
    import os

    load = [round(x, 2) for x in os.getloadavg()]
    results: dict = {"shared_machine": args.shared, "load_average_at_start": load, "threads": threads, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="score-bench-") as temporary:
        work = Path(temporary)
        model = train_model(work / "model-build", args.trees, args.train_rows)
        forest = joblib.load(model / "model.joblib")
        results["model"] = {
            "trees": len(forest.estimators_),
            "train_rows": args.train_rows,
            "mean_depth": round(float(np.mean([e.tree_.max_depth for e in forest.estimators_])), 1),
            "mean_nodes": round(float(np.mean([e.tree_.node_count for e in forest.estimators_])), 1),
        }
        boosting = train_boosting(work / "model-build")
        config = work / "dataset.yaml"
        config.write_text(CONFIG)
        for rows in sizes:
            print(f"score_bench: {rows:,} rows", file=sys.stderr)
            directory = work / f"rows-{rows}"
            directory.mkdir()
            csv, parquet = make_tables(directory, rows)
            entry: dict = {"rows": rows}
            sample = str(min(rows, 2_000_000))
            onnx = evaluators(model, parquet, int(sample), threads)
            entry["onnx_only"] = rates(onnx["rows"], onnx["seconds"], onnx["cpu_seconds"])
            entry["sklearn_only"] = rates(onnx["rows"], onnx["sklearn_seconds"], onnx["sklearn_cpu_seconds"])
            all_cores = {
                name: rates(onnx["rows"], onnx[f"{name}_seconds"], onnx[f"{name}_cpu_seconds"])
                for name in ALL_CORES
                if f"{name}_seconds" in onnx
            }
            entry["evaluators_all_cores"] = all_cores
            fastest = max(all_cores, key=lambda name: all_cores[name]["rows_per_second"], default="onnx_only")
            entry["fastest_all_cores"] = {"evaluator": fastest, **all_cores.get(fastest, entry["onnx_only"])}
            if rows == sizes[0]:
                sample_rows = min(rows, 1_000_000)
                results["families"] = {
                    "rows": sample_rows,
                    "random_forest": family_figures(model, parquet, sample_rows, threads, sizes),
                    "hist_gradient_boosting": family_figures(boosting, parquet, sample_rows, threads, sizes),
                }
            if rows <= args.skip_baseline_over:
                m = measure([PYTHON, str(HERE / "_score_baseline.py"), str(model), str(csv), str(directory / "a.csv")])
                entry["baseline"] = rates(rows, m["seconds"], m["cpu_seconds"], m["peak_rss_mib"])
            m = measure(score_cmd(model, csv, directory / "c.parquet", config, threads))
            entry["score_csv"] = rates(rows, m["seconds"], m["cpu_seconds"], m["peak_rss_mib"])
            m = measure(score_cmd(model, parquet, directory / "p.parquet", config, threads))
            entry["score_parquet"] = rates(rows, m["seconds"], m["cpu_seconds"], m["peak_rss_mib"])
            if not args.no_shards:
                entry["score_parquet_2_shards"] = two_shards(model, parquet, directory, config, rows)
            if rows == sizes[0] and not args.no_http:
                entry["http_v1"] = http_v1(model, csv)
            limit = entry["onnx_only"]["rows_per_cpu_second"]
            fastest_rate = entry["fastest_all_cores"]["rows_per_second"]
            entry["ratios"] = {
                "score_csv_wall_vs_fastest_all_cores": round(entry["score_csv"]["rows_per_second"] / fastest_rate, 3),
                "score_parquet_wall_vs_fastest_all_cores": round(
                    entry["score_parquet"]["rows_per_second"] / fastest_rate, 3
                ),
                "score_parquet_per_cpu_vs_onnx_only": round(entry["score_parquet"]["rows_per_cpu_second"] / limit, 3),
                "onnx_only_per_cpu_vs_sklearn_only": round(limit / entry["sklearn_only"]["rows_per_cpu_second"], 3),
                # the same comparisons in CPU time, steadier when other jobs share the machine
                "score_parquet_per_cpu_vs_fastest_all_cores": round(
                    entry["score_parquet"]["rows_per_cpu_second"] / entry["fastest_all_cores"]["rows_per_cpu_second"], 3
                ),
                "score_csv_per_cpu_vs_fastest_all_cores": round(
                    entry["score_csv"]["rows_per_cpu_second"] / entry["fastest_all_cores"]["rows_per_cpu_second"], 3
                ),
            }
            if "baseline" in entry:
                for name in ("score_csv", "score_parquet", "score_parquet_2_shards"):
                    if name not in entry:
                        continue
                    entry["ratios"][f"{name}_wall_vs_baseline"] = round(
                        entry[name]["rows_per_second"] / entry["baseline"]["rows_per_second"], 2
                    )
                    entry["ratios"][f"{name}_per_cpu_vs_baseline"] = round(
                        entry[name]["rows_per_cpu_second"] / entry["baseline"]["rows_per_cpu_second"], 2
                    )
            results["sizes"].append(entry)
            print(json.dumps(entry, indent=2), file=sys.stderr)
            for path in directory.iterdir():  # free the disk before the next size
                if path.is_file():
                    path.unlink()
    output = write_results("score_bench", results, note=args.shared, path=args.json)
    print(f"score_bench: wrote {output}")


if __name__ == "__main__":
    main()
