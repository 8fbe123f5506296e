"""`churnflow outcomes | drift`: ground truth into the prediction store, and the drift check over it."""

from __future__ import annotations

import argparse
import os

from churnflow.cli.exits import DRIFT_EXIT, EXIT_INPUT_ERROR, EXIT_OTHER_VERSIONS
from churnflow.core.errors import ChurnflowError
from churnflow.monitoring.psi import PSI_ACT, PSI_WATCH


def _store_url(args: argparse.Namespace) -> str:
    url = args.store or os.environ.get("CHURNFLOW_STORE_URL")
    if not url:
        raise ChurnflowError("--store: no store given (a URL such as sqlite:///predictions.db or $CHURNFLOW_STORE_URL)")
    return url


def _cmd_outcomes(args: argparse.Namespace) -> int:
    from churnflow.store.database import PredictionStore
    from churnflow.store.outcomes import read_outcomes_csv, record_outcomes

    if args.csv and (args.request_id or args.customer_id or args.churned is not None):
        raise ChurnflowError("outcomes: give either --csv FILE or --request-id/--customer-id with --churned, not both")
    if args.csv:
        rows, source = read_outcomes_csv(args.csv), f"{args.csv} row"
    elif args.churned is None or not (args.request_id or args.customer_id):
        raise ChurnflowError("outcomes: give --csv FILE, or --request-id ID (or --customer-id ID) and --churned 1|0")
    else:
        row = {"request_id": args.request_id, "customer_id": args.customer_id, "churned": args.churned}
        rows, source = [{**row, "row_index": args.row_index}], "outcome"
    store = PredictionStore(_store_url(args))
    try:
        count = record_outcomes(store, rows, source=source)
    finally:
        store.close()
    print(f"churnflow: recorded {count} outcome{'s' if count != 1 else ''} in {store.display_url}")
    return 0


def _other_versions(store_url: str, report: dict, *, model_name: str, window: int | None, since) -> dict[str, int]:
    """Predictions in the same window (newest N, or since a time) made by other versions of the model.

    After a retrain the window is mostly the previous version's predictions, which the default check
    leaves out; a check that then says "0 predictions, no drift" must say why.
    """
    from churnflow.store.database import PredictionStore

    store = PredictionStore(store_url)
    try:
        frame = store.call(
            "reading predictions",
            store.read_predictions,
            model_name=model_name,
            window=None if since is not None and window is None else window,
            since=since,
        )
    finally:
        store.close()
    versions = frame.loc[frame["model_version"] != report.get("model_version"), "model_version"]
    return {str(v): int(n) for v, n in versions.value_counts().items()}


def _cmd_drift(args: argparse.Namespace) -> int:
    import datetime as dt

    from churnflow.monitoring.drift import Thresholds, run_check, summary
    from churnflow.monitoring.drift_report import write_report

    since = None
    if args.since:
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise ChurnflowError(
                f"--since: expected an ISO 8601 time such as 2026-05-01T00:00Z, got {args.since!r}"
            ) from None
    thresholds = Thresholds(
        psi_watch=args.psi_watch,
        psi_act=args.psi_act,
        alpha=args.alpha,
        precision_drop=args.precision_drop,
        min_rows=args.min_rows,
        min_labelled=args.min_labelled,
    )
    window_size = args.window if args.window is not None else (None if since else 10_000)
    report = run_check(
        _store_url(args),
        args.model_dir,
        model_name=args.model_name,
        window=window_size,
        since=since,
        any_version=args.any_version,
        evaluation_path=args.evaluation,
        thresholds=thresholds,
    )
    others = (
        {}
        if args.any_version
        else _other_versions(_store_url(args), report, model_name=args.model_name, window=window_size, since=since)
    )
    report["other_versions"] = others  # also in drift.json
    lines = summary(report).splitlines()  # the last line is the verdict
    status = DRIFT_EXIT if report["drift"] else 0
    if others:
        version = report.get("model_version")
        listed = ", ".join(f"{n} of {v}" for v, n in sorted(others.items(), key=lambda item: (-item[1], item[0])))
        lines.insert(
            -1,
            f"  note: the window also holds {sum(others.values())} predictions of other model versions ({listed}), "
            f"not counted: only {version}'s are; --any-version counts them all",
        )
        if not report["drift"] and report["window"]["rows"] < args.min_rows:
            lines[-1] = (
                f"  → not judged: {report['window']['rows']} predictions of {version}, the rest are other "
                f"versions' (exit status {EXIT_OTHER_VERSIONS})"
            )
            status = EXIT_OTHER_VERSIONS
    print("\n".join(lines))
    if args.report:
        paths = write_report(report, args.report)
        print(f"  report: {paths['html']} ({paths['json'].name}, {paths['prom'].name})")
    gateway = args.pushgateway or os.environ.get("CHURNFLOW_PUSHGATEWAY", "")
    if gateway:
        from churnflow.monitoring.drift_report import push_report

        group = push_report(report, gateway, namespace=args.namespace)
        print(f"  pushed to {gateway} ({', '.join(f'{k}={v}' for k, v in group.items())})")
    return status


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds outcomes, drift to the `churnflow` parser."""
    out = sub.add_parser("outcomes", help="record ground truth (who really churned) in the prediction store")
    out.add_argument("--store", metavar="URL", help="the prediction store (default: $CHURNFLOW_STORE_URL)")
    out.add_argument("--csv", help="CSV with churned and request_id (optionally row_index) or customer_id columns")
    out.add_argument("--request-id", help="the request the outcome settles")
    out.add_argument("--row-index", type=int, help="the row within that request (default: every row)")
    out.add_argument("--customer-id", help="the customer the outcome settles (their latest prediction)")
    out.add_argument("--churned", help="1/0, true/false or yes/no")
    out.set_defaults(func=_cmd_outcomes)

    drift = sub.add_parser(
        "drift",
        help="check logged predictions for data, prediction and accuracy drift (exit 3 on drift)",
        description=f"Exit status: 0 no drift (or too few predictions to judge), {DRIFT_EXIT} drift, "
        f"{EXIT_OTHER_VERSIONS} not judged: too few predictions of this model version while the window holds other "
        f"versions' (after a retrain: wait for more, or pass --any-version), {EXIT_INPUT_ERROR} an error in the input.",
    )
    drift.add_argument("--store", metavar="URL", help="the prediction store (default: $CHURNFLOW_STORE_URL)")
    drift.add_argument("--model-dir", required=True, help="the deployed model's directory")
    drift.add_argument("--model-name", default="churn")
    window = drift.add_mutually_exclusive_group()
    window.add_argument("--window", type=int, help="the newest N predictions (default 10000)")
    window.add_argument("--since", metavar="ISO", help="every prediction since this time (e.g. 2026-05-01T00:00:00Z)")
    drift.add_argument("--report", metavar="DIR", help="write drift.json, drift.html and drift.prom here")
    drift.add_argument("--evaluation", help="evaluation.json to compare with (default: the model directory's)")
    drift.add_argument(
        "--pushgateway",
        metavar="URL",
        help="push the results to this Prometheus Pushgateway, e.g. http://localhost:9091 "
        "(default: $CHURNFLOW_PUSHGATEWAY; unset: not pushed)",
    )
    drift.add_argument("--namespace", default="", help="namespace label of the pushed results (default: none)")
    drift.add_argument(
        "--any-version",
        action="store_true",
        help="count the predictions of every model version in the window (default: only the --model-dir's version; "
        "the others are reported, and exit status 5 says when they left too few to judge)",
    )
    drift.add_argument("--psi-watch", type=float, default=PSI_WATCH, help=f"PSI worth watching (default {PSI_WATCH})")
    drift.add_argument(
        "--psi-act", type=float, default=PSI_ACT, help=f"PSI that is drift on its own (default {PSI_ACT})"
    )
    drift.add_argument("--alpha", type=float, default=0.05, help="test level before Bonferroni (default 0.05)")
    drift.add_argument(
        "--precision-drop", type=float, default=0.10, help="relative precision drop that is drift (default 0.10)"
    )
    drift.add_argument("--min-rows", type=int, default=100, help="fewest predictions to judge drift (default 100)")
    drift.add_argument(
        "--min-labelled", type=int, default=100, help="fewest predictions with ground truth for accuracy (default 100)"
    )
    drift.set_defaults(func=_cmd_drift)
