"""`churnflow run | generate`: running the whole pipeline on this machine (kfp.local) and making data to run
it on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from churnflow.cli.exits import EXIT_INPUT_ERROR, EXIT_NOT_RELEASED
from churnflow.core.errors import ChurnflowError

IMPLICIT_DATA = "customer_data.csv"  # what `churnflow generate` writes and `churnflow run` picks up
RELIABILITY_CHART = "reliability.png"


def _implicit_data(args: argparse.Namespace) -> str:
    """`customer_data.csv` in the working directory when no --data/--config is given, announced every time.

    `churnflow generate` writes that file by default, and a later run that trains on it instead of
    fresh synthetic data (or instead of the table the user meant) must never do so silently.
    """
    if args.data or args.config is not None or not Path(IMPLICIT_DATA).is_file():
        return ""
    print(
        f"churnflow: note: no --data given, so this run trains on ./{IMPLICIT_DATA} (the file `churnflow generate` "
        "writes); pass --data to choose a table, or remove the file to train on fresh synthetic data",
        file=sys.stderr,
    )
    return IMPLICIT_DATA


def _copy_reliability_chart(output_dir: Path) -> Path | None:
    """Copies this run's reliability-curve PNG from kfp.local's artifacts to `output_dir/reliability.png`.

    kfp.local keeps it deep under `.kfp/<run>/evaluate-op/`; the newest run directory is this run's.
    """
    runs = sorted((output_dir / ".kfp").glob("*/evaluate-op/reliability_curve"))
    if not runs or not runs[-1].is_file():
        return None
    import shutil

    target = output_dir / RELIABILITY_CHART
    shutil.copyfile(runs[-1], target)
    return target


def _cmd_run(args: argparse.Namespace) -> int:
    if args.image and args.runner != "docker":
        raise ChurnflowError("--image: only with --runner docker (subprocess tasks run in this environment)")
    if args.image:  # read when the components are declared, by the imports below
        os.environ["CHURNFLOW_TRAIN_IMAGE"] = args.image
    from churnflow.core.config import load_config
    from churnflow.pipelines.churn_pipeline import churn_training_pipeline
    from churnflow.pipelines.local import run_local
    from churnflow.pipelines.parameters import parse_assignments

    if args.rows < 10:
        raise ChurnflowError(f"--rows: expected at least 10, got {args.rows}")
    config = load_config(args.config)
    arguments = parse_assignments(args.set or [], churn_training_pipeline)
    data = args.data or _implicit_data(args)
    source = data or f"synthetic data ({args.rows} rows)"
    print(f"churnflow: running the pipeline locally on {source} → {args.output} (log: pipeline.log)")
    runner = None
    if args.runner == "docker":
        from churnflow.pipelines.local import docker_runner

        local_data = (Path(data).absolute().parent,) if data and Path(data).exists() else ()
        runner = docker_runner(Path(args.output), read_only=local_data)
    result = run_local(args.output, config=config, data_uri=data, rows=args.rows, arguments=arguments, runner=runner)
    m = result.metrics
    print(
        f"  roc_auc={m['roc_auc']:.4f} accuracy={m['accuracy']:.4f} precision={m['precision']:.4f} "
        f"recall={m['recall']:.4f} f1={m['f1']:.4f} brier={m['brier']:.4f}"
    )
    params = ", ".join(f"{k}={v}" for k, v in m["params"].items() if k not in ("family", "random_state"))
    print(f"  chose {m['model_family']} ({params}); threshold {m['threshold']:.3f}; pr_auc={m['pr_auc']:.4f}")
    for column, fill in m.get("filled_blanks", {}).items():
        print(f"  filled {fill['blanks']} blank {column!r} cell(s) with the training median {fill['value']:g}")
    print(f"  model card: {result.output_dir / 'model-card.html'}")
    chart = _copy_reliability_chart(result.output_dir)
    if result.deployed:
        print(f"  deployed model {m['model_version']} → {result.output_dir / 'model'}")
    else:
        print(f"  not deployed: {'; '.join(m['reasons'])}")
    print(f"  metrics: {result.output_dir / 'metrics.json'}")
    if chart is not None:
        print(f"  reliability chart: {chart}")
    if not result.deployed:
        kept = result.output_dir / "model"
        still = f"{kept} still holds the model released before" if kept.exists() else "no model is released yet"
        print(
            f"churnflow: trained but not released (exit status {EXIT_NOT_RELEASED}); {still}; "
            f"this run's model is in {result.output_dir / 'candidate'}",
            file=sys.stderr,
        )
        return EXIT_NOT_RELEASED
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from churnflow.core.synthetic import LAYOUTS

    if args.rows < 1:
        raise ChurnflowError(f"--rows: expected at least 1, got {args.rows}")
    make, target, positive = LAYOUTS[args.layout]
    frame = make(args.rows, args.seed)
    try:
        frame.to_csv(args.output, index=False)
    except OSError as error:
        raise ChurnflowError(f"--output {args.output}: cannot write it ({error.strerror or error})") from None
    rate = (frame[target] == positive).mean()
    print(f"churnflow: wrote {len(frame)} {args.layout} rows to {args.output} (churn rate {rate:.3f})")
    if Path(args.output).resolve() == Path(IMPLICIT_DATA).resolve():
        print(
            f"  note: `churnflow run` without --data in this directory now trains on {IMPLICIT_DATA}, "
            "not on fresh synthetic data (remove the file to go back)"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds run, generate to the `churnflow` parser."""
    run = sub.add_parser(
        "run",
        help="run the whole pipeline locally through kfp.local",
        description=f"Exit status: 0 released, {EXIT_NOT_RELEASED} trained but not released (the evaluation gate "
        f"refused the model; the reasons are printed and the model released before stays), {EXIT_INPUT_ERROR} an "
        "error in the input or a failed step.",
    )
    run.add_argument(
        "--data", help="customer table: CSV path or URI (default: customer_data.csv if present, else synthetic data)"
    )
    run.add_argument("--config", help="dataset config, YAML or JSON (default: the classic churn table)")
    run.add_argument("--rows", type=int, default=1000, help="rows of synthetic data when --data is absent")
    run.add_argument("--output", default="runs/latest", help="output directory (default: runs/latest)")
    run.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="set a pipeline parameter, e.g. --set min_roc_auc=0.8 (repeatable)",
    )
    run.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="subprocess (default): every task a process here; docker: every task in the train image through "
        "kfp.local's DockerRunner, as the image's user (needs a Docker engine)",
    )
    run.add_argument(
        "--image", help="with --runner docker: the train image (default: $CHURNFLOW_TRAIN_IMAGE or the published tag)"
    )
    run.set_defaults(func=_cmd_run)

    gen = sub.add_parser("generate", help="write a synthetic customer table as CSV")
    gen.add_argument("--rows", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument(
        "--layout",
        choices=["classic", "telco"],
        default="classic",
        help="classic: the default config's columns; telco: the 21 columns of IBM's Telco Customer Churn sample, "
        "for examples/telco/config.yaml (default classic)",
    )
    gen.add_argument(
        "--output",
        default=IMPLICIT_DATA,
        help=f"CSV to write (default {IMPLICIT_DATA}, which `churnflow run` without --data then trains on)",
    )
    gen.set_defaults(func=_cmd_generate)
