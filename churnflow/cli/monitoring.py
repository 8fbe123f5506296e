"""`churnflow outcomes | drift`: ground truth into the prediction store, and the drift check over it."""

from __future__ import annotations

import argparse
import os

from churnflow.cli.exits import DRIFT_EXIT, EXIT_INPUT_ERROR, EXIT_OTHER_VERSIONS
from churnflow.core.artifact import DEFAULT_MODEL_NAME
from churnflow.core.errors import ChurnflowError
from churnflow.monitoring.thresholds import DEFAULT_THRESHOLDS, DEFAULT_WINDOW


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


def _cmd_drift(args: argparse.Namespace) -> int:
    import datetime as dt

    from churnflow.monitoring.drift import DRIFT, NOT_JUDGED, Thresholds, judge, run_check, summary
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
    window_size = args.window if args.window is not None else (None if since else DEFAULT_WINDOW)
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
    verdict = judge(report)
    lines = summary(report).splitlines()  # the last line is the verdict
    status = {DRIFT: DRIFT_EXIT, NOT_JUDGED: EXIT_OTHER_VERSIONS}.get(verdict.outcome, 0)
    if status == EXIT_OTHER_VERSIONS:
        lines[-1] += f" (exit status {EXIT_OTHER_VERSIONS})"
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
    drift.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    window = drift.add_mutually_exclusive_group()
    window.add_argument("--window", type=int, help=f"the newest N predictions (default {DEFAULT_WINDOW})")
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
    t = DEFAULT_THRESHOLDS  # the one place these defaults are declared (the drift pipeline reads it too)
    drift.add_argument(
        "--psi-watch", type=float, default=t.psi_watch, help=f"PSI worth watching (default {t.psi_watch})"
    )
    drift.add_argument(
        "--psi-act", type=float, default=t.psi_act, help=f"PSI that is drift on its own (default {t.psi_act})"
    )
    drift.add_argument("--alpha", type=float, default=t.alpha, help=f"test level before Bonferroni (default {t.alpha})")
    drift.add_argument(
        "--precision-drop",
        type=float,
        default=t.precision_drop,
        help=f"relative precision drop that is drift (default {t.precision_drop})",
    )
    drift.add_argument(
        "--min-rows", type=int, default=t.min_rows, help=f"fewest predictions to judge drift (default {t.min_rows})"
    )
    drift.add_argument(
        "--min-labelled",
        type=int,
        default=t.min_labelled,
        help=f"fewest predictions with ground truth for accuracy (default {t.min_labelled})",
    )
    drift.set_defaults(func=_cmd_drift)
