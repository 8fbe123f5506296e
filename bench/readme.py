"""Renders the benchmark figures of docs/benchmarks.md from bench/results/*.json, so every figure quoted
there is one a bench wrote, next to the command that wrote it.

    .venv/bin/python bench/readme.py           # exit 1 and show the difference when the page is stale
    .venv/bin/python bench/readme.py --write   # rewrite the generated blocks in docs/benchmarks.md

(The name is historical: the blocks lived in the README until the manual moved to docs/.)

A block sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, NAME being a results file's
stem (e.g. serve_bench-asyncio); tests/test_readme_figures.py runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- bench:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _provenance(document: dict[str, Any]) -> str:
    machine = document["machine"]
    commit = document["commit"][:10] + (" + uncommitted changes" if document.get("uncommitted_changes") else "")
    note = f" {document['note'].rstrip('.')}." if document.get("note") else ""
    command = document["command"].split(" --note ")[0]  # the note is quoted below
    return (
        f"`{command}` → `bench/results/{document['_stem']}.json` (commit {commit}, "
        f"{document['date'][:10]}, {machine['cpus']} × {machine['cpu']}, {machine['memory_gib']} GiB).{note}\n"
    )


def serve(document: dict[str, Any]) -> str:
    figures = document["figures"]
    lines = [
        _provenance(document),
        f"wrk, {figures['connections']} connections, {figures['seconds_per_load']} s per load; churnflow on "
        f"{figures['event_loop']}; baseline: the original Flask app.\n",
        "| server | load | req/s | × Flask dev server | p50 ms | p99 ms | errors | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in figures["results"].items():
        server, load = (part.strip() for part in key.split("|"))
        ratio = _n(r["x_baseline_dev"], 1) if r.get("x_baseline_dev") is not None else "—"
        rps = _n(r["rps"])
        if "batch100" in load:
            rps += f" ({_n(r['rps'] * 100)} rows/s)"
        lines.append(
            f"| {server} | {load} | {rps} | {ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
            f"{_n(r['peak_rss_mib'])} |"
        )
    return "\n".join(lines) + "\n"


def request(document: dict[str, Any]) -> str:
    figures = document["figures"]
    steps = {k: v for k, v in figures["steps_us"].items() if k != "backend"}
    ceiling = figures["ceiling"]
    noop, ours = ceiling["no-op model"], ceiling["churnflow serve"]
    before, after = figures["gc"]["before_freeze"], figures["gc"]["after_freeze"]
    lines = [
        _provenance(document),
        f"One single-row request's steps, timed in a loop in one process (forest: {figures['steps_us']['backend']}):\n",
        "| step | µs per call |",
        "|---|---|",
        *(f"| {name} | {value:.1f} |" for name, value in steps.items()),
        "",
        f"The ceiling: the same server with the model's steps doing no work at all (KServe's stack and "
        f"churnflow's hooks alone, on {noop['event_loop']}) answers {_n(noop['rps'])} single-row v1 "
        f"requests/s (p99 {noop['p99_ms']:.2f} ms); with the real model, same load, same run: "
        f"{_n(ours['rps'])} req/s (p99 {ours['p99_ms']:.2f} ms), {ceiling['ours_fraction_of_ceiling']:.0%} "
        "of the ceiling.",
        "",
        f"Garbage collection with the server's libraries and model loaded: {_n(before['tracked_objects'])} "
        f"tracked objects, a full collection {before['full_collection_ms']:.1f} ms (median of 7); after "
        f"`gc.freeze()`, as the server does at start, {_n(after['frozen_objects'])} objects frozen, "
        f"{_n(after['tracked_objects'])} left in reach and a full collection {after['full_collection_ms']:.1f} ms "
        "(objects made while serving add to that).",
    ]
    return "\n".join(lines) + "\n"


def soak(document: dict[str, Any]) -> str:
    figures = document["figures"]
    store = "on (SQLite)" if figures.get("prediction_store") else "off"
    lines = [
        _provenance(document),
        f"Mixed v1/v2 single rows and batches of 10 on {figures['event_loop']}; prediction logging {store}; "
        f"soak {figures['minutes']:g} min at 80% of the measured peak; overload 30 s asking for "
        f"{figures['overload_factor_asked']:g}× the peak (the offered column is what reached the server).\n",
        "| workers | peak req/s | soak req/s | soak statuses | soak p50 / p99 / p99.9 ms | RSS start → end MiB "
        "| prediction log written / pending / dropped | overload offered req/s (× peak) | overload 200 / 503 "
        "| overload p99 ms | readiness probes answered | recovered in s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workers, r in figures["results"].items():
        soak_run, overload = r["soak"], r["overload"]
        log = r.get("prediction_log") or {}
        logged = f"{_n(log['written'])} / {_n(log['pending'])} / {_n(log['dropped'])}" if log else "—"
        statuses = ", ".join(f"{k}: {_n(v)}" for k, v in sorted(soak_run["statuses"].items()))
        probes = r.get("readiness_probes") or {}
        lines.append(
            f"| {workers.split()[0]} | {_n(r['peak']['rps'])} | {_n(soak_run['rps'])} | {statuses} | "
            f"{soak_run['p50_ms']:.1f} / {soak_run['p99_ms']:.1f} / {soak_run['p999_ms']:.1f} | "
            f"{_n(r['rss_start_mib'])} → {_n(r['rss_end_mib'])} | {logged} | "
            f"{_n(overload['offered_rps'])} ({overload['offered_x_peak']:.1f}×) | "
            f"{_n(overload['statuses'].get('200', 0))} / {_n(overload['statuses'].get('503', 0))} | "
            f"{overload['p99_ms']:.0f} | {probes.get('answered_200', '?')} of {probes.get('sent', '?')} | "
            f"{_recovery(r['recovery_seconds'])} |"
        )
    return "\n".join(lines) + "\n"


VARIANT_NAMES = {"ours": "churnflow serve", "before": "churnflow serve, before"}


def _achieved(target: str, summary: dict[str, Any]) -> str:
    """What a ceiling target reached: the median ratio to the no-op, or the lowest two-worker ratio."""
    load = target.split(" ≥ ")[0]
    if load in summary["ours_vs_noop"]:
        return f" ({summary['ours_vs_noop'][load]['ratio']:.2f})"
    lowest = min(ratio for start in summary["workers2_vs_1"] for ratio in start.values())
    return f" (lowest {lowest:.2f}×)"


def ceiling(document: dict[str, Any]) -> str:
    figures = document["figures"]
    rounds, summary = figures["rounds"], figures["summary"]
    lines = [
        _provenance(document),
        f"`wrk -t1`, {figures['seconds_per_load']} s per load; the one-worker servers ran {len(rounds)} alternating "
        f"rounds (medians shown, each round's ratio in brackets) on {document['machine']['cpus']} cores shared "
        "with wrk. No-op: a bare `kserve.Model` on KServe's own ModelServer "
        "(bench/_noop_kserve.py), logging as churnflow serve logs.\n",
        "| server, 1 worker | load | req/s | × no-op | p50 ms | p99 ms | server CPU µs per request |",
        "|---|---|---|---|---|---|---|",
    ]

    def med(server: str, load_name: str, key: str) -> float:
        return statistics.median(r[server][load_name][key] for r in rounds)

    servers = [("noop-1w", "no-op kserve.Model", None)] + [
        (f"{variant}-1w", VARIANT_NAMES.get(variant, variant), variant) for variant in summary
    ]
    for load_name in summary["ours"]["ours_vs_noop"]:
        for key, name, variant in servers:
            if variant is None:
                ratio = "1"
            else:
                v = summary[variant]["ours_vs_noop"][load_name]
                ratio = f"{v['ratio']:.2f} ({', '.join(f'{x:.2f}' for x in v['per_round'])})"
            lines.append(
                f"| {name} | {load_name} | {_n(med(key, load_name, 'rps'))} | {ratio} | "
                f"{med(key, load_name, 'p50_ms'):.2f} | {med(key, load_name, 'p99_ms'):.2f} | "
                f"{_n(med(key, load_name, 'server_cpu_us_per_request'))} |"
            )
    lines += [
        "",
        "Two workers, each fresh start against one worker's median (same server version, same run):\n",
        "| server, 2 workers | start | v1 c=32 | v2 c=32 | CPU s of each busy process during v1 c=32 |",
        "|---|---|---|---|---|",
    ]
    for variant, starts in figures["two_workers"].items():
        for i, ratios in enumerate(summary[variant]["workers2_vs_1"]):
            cpu = " / ".join(f"{x:.1f}" for x in starts[i]["v1 c=32"]["busy_process_cpu_seconds"])
            lines.append(
                f"| {VARIANT_NAMES.get(variant, variant)} | {i + 1} | {ratios['v1 c=32']:.2f}× | "
                f"{ratios['v2 c=32']:.2f}× | {cpu} |"
            )
    targets = summary["ours"]["targets_met"]
    extra = []
    for load_name in summary["ours"]["ours_vs_noop"]:
        noop_cpu = med("noop-1w", load_name, "server_cpu_us_per_request")
        ours_cpu = med("ours-1w", load_name, "server_cpu_us_per_request")
        extra.append(f"{load_name} {_n(ours_cpu - noop_cpu)} µs (room: {_n(noop_cpu / 0.8 - noop_cpu)})")
    lines += [
        "",
        "Targets for churnflow serve: "
        + "; ".join(
            f"{name}: {'met' if met else 'missed'}{_achieved(name, summary['ours'])}" for name, met in targets.items()
        )
        + ".",
        "",
        "Server CPU per request beyond the no-op model's (medians), and the most that 80% of the no-op's "
        "rate would leave room for, were req/s set by CPU alone: " + "; ".join(extra) + ".",
        "",
        "CPU per call of one single-row request's model work, in one process without a server (median of 5 rounds):\n",
        "| step | µs CPU |",
        "|---|---|",
        *(f"| {step} | {cost:.1f} |" for step, cost in figures["steps_cpu_us"].items()),
    ]
    return "\n".join(lines) + "\n"


RUN_NAMES = {
    "original": "original script",
    "seed_exact": "`churnflow run --set tune=false` (seed-exact)",
    "tuned": "`churnflow run` (tuned, the default)",
}


def _model(key: str, run: dict[str, Any]) -> str:
    if key != "tuned":
        return "forest, 100 trees, fully grown (as bench/baseline_train.py fits it)"
    family = "gradient boosting" if run["family"] == "hist_gradient_boosting" else "random forest"
    rungs = run["tuning_rungs"]
    if len(rungs) == 2 and rungs[0][0] == rungs[1][0]:  # one rung on every row, then its repetitions
        return f"{family}; {rungs[0][1]} candidates on every row, {rungs[1][1]} undecided ones on more folds"
    if len(rungs) > 1:
        path = " → ".join(f"{count} on {_n(rows)}" for rows, count in rungs)
        return f"{family}; halving: {path} rows"
    return f"{family}; {rungs[0][1]} candidates on every row"


def _ratio(run: dict[str, Any], key: str) -> str:
    return f"{run[key]:.2f}" if key in run else "—"


def pipeline(document: dict[str, Any]) -> str:
    figures = document["figures"]
    lines = [
        _provenance(document),
        "| rows | run | wall s | × original | peak RSS MiB | × original | test ROC-AUC | Brier | model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in figures["sizes"]:
        for key, name in RUN_NAMES.items():
            run = entry.get(key)
            if run is None:
                lines.append(f"| {_n(entry['rows'])} | {name} | not run | | | | | | |")
                continue
            brier = f"{run['brier']:.4f}" if "brier" in run else "—"
            lines.append(
                f"| {_n(entry['rows'])} | {name} | {run['seconds']:.1f} | {_ratio(run, 'seconds_ratio')} | "
                f"{_n(run['peak_rss_mib'])} | {_ratio(run, 'peak_rss_ratio')} | {run['roc_auc']:.4f} | {brier} | "
                f"{_model(key, run)} |"
            )
    for key, what in (("task_floor", "that do nothing"), ("task_floor_with_stack", "that only import")):
        floor = figures.get(key)
        if floor:
            imports = f" {floor['imports'].replace(',', ', ')}" if floor.get("imports") else ""
            lines.append(
                f"\n{floor['tasks']} kfp.local tasks {what}{imports}: {floor['seconds']:.1f} s, "
                f"{floor['cpu_seconds']:.1f} CPU-s (the run's own start included)."
            )
    return "\n".join(lines) + "\n"


SCORE_ROWS = {
    "baseline": "(a) original approach: pandas read_csv, get_dummies, predict_proba, CSV write",
    "onnx_only": "(b) ONNX Runtime alone on the encoded matrix, one thread",
    "sklearn_only": "(b) scikit-learn predict_proba alone, one job",
    "score_csv": "(c) `churnflow score`, CSV",
    "score_parquet": "(c) `churnflow score`, Parquet",
    "score_parquet_2_shards": "(c) `churnflow score`, Parquet, 2 shards (processes) at once",
}
EVALUATORS = {
    "onnx": "ONNX Runtime, one thread",
    "sklearn": "scikit-learn, one job (boosting: its OpenMP threads on every core)",
    "onnx_rows_split": "ONNX Runtime, rows split across one-thread sessions",
    "sklearn_rows_split": "scikit-learn, rows split (boosting: its OpenMP threads)",
    "onnx_intra_op": "ONNX Runtime intra-op threads (not exact)",
    "sklearn_n_jobs": "scikit-learn n_jobs (forest: trees split, not exact)",
}


def _rss(run: dict[str, Any]) -> str:
    return _n(run["peak_rss_mib"]) if "peak_rss_mib" in run else "—"


def score(document: dict[str, Any]) -> str:
    figures = document["figures"]
    load = figures.get("load_average_at_start")
    lines = [
        _provenance(document),
        f"{figures['threads']} threads; load average at the start "
        f"{' / '.join(map(str, load)) if load else 'not recorded'}"
        f" (on a shared machine rows per CPU-second is the steadier figure). Model: {figures['model']['trees']} trees "
        f"trained on {_n(figures['model']['train_rows'])} rows (mean depth {figures['model']['mean_depth']}).\n",
        "| rows | what | rows/s (wall) | rows per CPU-second | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for entry in figures["sizes"]:
        rows = _n(entry["rows"])
        for key, name in SCORE_ROWS.items():
            if key in entry:
                run = entry[key]
                lines.append(
                    f"| {rows} | {name} | {_n(run['rows_per_second'])} | {_n(run['rows_per_cpu_second'])} | "
                    f"{_rss(run)} |"
                )
        fastest = entry["fastest_all_cores"]
        lines.append(
            f"| {rows} | fastest evaluator on all cores: {EVALUATORS.get(fastest['evaluator'], fastest['evaluator'])} "
            f"({_n(fastest['rows'])} rows) | {_n(fastest['rows_per_second'])} | "
            f"{_n(fastest['rows_per_cpu_second'])} | — |"
        )
    lines.append("")
    for entry in figures["sizes"]:
        r = entry["ratios"]
        parts = [
            f"`churnflow score` at {_n(entry['rows'])} rows: Parquet "
            f"{r['score_parquet_wall_vs_fastest_all_cores']:.0%} of the fastest evaluator on all cores (wall)"
        ]
        if "score_parquet_per_cpu_vs_fastest_all_cores" in r:
            parts.append(f"{r['score_parquet_per_cpu_vs_fastest_all_cores']:.0%} per CPU-second")
        parts.append(f"CSV {r['score_csv_wall_vs_fastest_all_cores']:.0%} (wall)")
        if "score_parquet_wall_vs_baseline" in r:
            parts.append(
                f"{r['score_parquet_wall_vs_baseline']:.2f}× (Parquet) and "
                f"{r['score_csv_wall_vs_baseline']:.2f}× (CSV) "
                "the original approach end to end (wall)"
            )
        if "score_csv_per_cpu_vs_baseline" in r:
            parts.append(
                f"{r['score_parquet_per_cpu_vs_baseline']:.2f}× / {r['score_csv_per_cpu_vs_baseline']:.2f}× "
                "per CPU-second"
            )
        peak = max(entry[k]["peak_rss_mib"] for k in ("score_csv", "score_parquet") if k in entry)
        parts.append(f"peak RSS {_n(peak)} MiB")
        lines.append("- " + "; ".join(parts) + ".")
    families = figures.get("families")
    if families:
        lines += [
            "",
            f"Evaluators per model family ({_n(families['rows'])} encoded rows, same run):\n",
            "| family | evaluator | rows/s (wall) | rows per CPU-second |",
            "|---|---|---|---|",
        ]
        for key in ("random_forest", "hist_gradient_boosting"):
            family = families.get(key)
            if family is None:
                continue
            for name, run in family["evaluators"].items():
                lines.append(
                    f"| {key} | {EVALUATORS.get(name, name)} | {_n(run['rows_per_second'])} | "
                    f"{_n(run['rows_per_cpu_second'])} |"
                )
        lines.append("")
        for key in ("random_forest", "hist_gradient_boosting"):
            family = families.get(key)
            if family is not None:
                lines.append(
                    f"- {key}: fastest per CPU-second on one thread: "
                    f"{EVALUATORS[family['fastest_one_thread_per_cpu_second']]}; fastest on all cores: "
                    f"{EVALUATORS[family['fastest_all_cores']]}; `churnflow score` uses "
                    f"{family['churnflow_score_uses']}."
                )
    return "\n".join(lines) + "\n"


def _recovery(seconds: float) -> str:
    return "not within 30 s" if seconds == float("inf") else f"{seconds:.2f}"


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "serve_bench": serve,
    "request_bench": request,
    "soak_bench": soak,
    "pipeline_bench": pipeline,
    "score_bench": score,
    "ceiling_bench": ceiling,
}


def render(name: str) -> str:
    path = HERE / "results" / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"bench/readme.py: {PAGE.name} block {name!r} has no results file {path}")
    document = json.loads(path.read_text())
    document["_stem"] = name
    return RENDERERS[document["benchmark"]](document)


def rendered_page(text: str) -> str:
    """The page with every generated block rendered afresh from its results file."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the generated blocks in docs/benchmarks.md")
    args = parser.parse_args()
    text = PAGE.read_text()
    fresh = rendered_page(text)
    if args.write:
        PAGE.write_text(fresh)
        return 0
    if fresh != text:
        name = "docs/benchmarks.md"
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), name, "fresh"))
        print(f"bench/readme.py: the figures in {name} differ from bench/results (run bench/readme.py --write)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
