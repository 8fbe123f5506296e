"""`churnflow plan | campaign-report`: planning a retention campaign and measuring what it kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from churnflow.core.errors import ChurnflowError


def _cmd_plan(args: argparse.Namespace) -> int:
    from churnflow.campaigns.plan import (
        Campaign,
        explain_list,
        make_plan,
        money_text,
        read_scores,
        write_plan,
        write_plan_html,
    )
    from churnflow.core.config import load_config

    campaign = Campaign(
        contact_cost=args.contact_cost,
        offer_cost=args.offer_cost,
        save_rate=args.save_rate,
        budget=args.budget,
        top=args.top,
        control_fraction=args.control_fraction,
        seed=args.seed,
        min_control=args.min_control,
        currency=args.currency,
    )
    campaign.check()
    campaign.check_affordable()
    if bool(args.model_dir) != bool(args.data) and not (args.uplift_from and args.data):
        raise ChurnflowError("plan: give --model-dir and --data together (for the reasons), or neither")
    if args.uplift_from and not args.data:
        raise ChurnflowError("--uplift-from: needs --data (the customers' features) and --config")
    scores, id_column = read_scores(args.scores)
    uplift, uplift_notes = None, []
    if args.uplift_from:
        from churnflow.campaigns.uplift import estimate

        ids = [str(v) for v in scores.column(id_column).to_pylist()]
        uplift, uplift_notes = estimate(args.uplift_from, args.data, load_config(args.config), ids)
    plan = make_plan(scores, id_column, campaign, uplift)
    plan.notes[:0] = uplift_notes
    if args.model_dir and args.data:
        explain_list(plan, args.model_dir, args.data, load_config(args.config))
    else:
        given = "no --model-dir" if args.data else "no --model-dir/--data"
        plan.notes.append(f"{given} given: the call list has no reasons")
    paths = write_plan(plan, args.output)
    if args.report == "html":
        paths["report"] = write_plan_html(plan, paths)
    summary = plan.summary()
    money = args.currency
    print(f"churnflow: {summary['formula']}")
    print(
        f"  contact {summary['contacted']:,} of {summary['customers_scored']:,} customers "
        f"(control group {summary['control']:,}, not contacted); "
        f"expected spend {money_text(summary['expected_spend'], money)}"
    )
    print(f"  expected net saving of the contacted list: {money_text(summary['expected_net_saving'], money)}")
    warning = plan.measurement_note()
    if warning:
        print(f"  warning: {warning}")
    for note in plan.notes:
        print(f"  note: {note}")
    print(f"  call list: {paths['call_list']}; charts: {paths['expected_saving']}, {paths['cumulative_gains']}")
    if "report" in paths:
        print(f"  report: {paths['report']}")
    return 0


def _cmd_campaign_report(args: argparse.Namespace) -> int:
    from churnflow.campaigns.measurement import campaign_report, summary_lines

    report = campaign_report(args.plan, args.outcomes, args.output, args.format)
    print(f"churnflow: campaign report → {Path(args.output) / 'report.json'}, report.html")
    for line in summary_lines(report):
        print(f"  {line}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds plan, campaign-report to the `churnflow` parser."""
    plan = sub.add_parser("plan", help="choose whom to contact from the scores: budget or top K, control group")
    plan.add_argument("--scores", required=True, help="output of churnflow score (path or URI)")
    plan.add_argument("--output", required=True, help="directory for call_list.csv, plan.json and the charts")
    limit = plan.add_mutually_exclusive_group()
    limit.add_argument("--budget", type=float, help="most expected spend (contacts plus offers paid)")
    limit.add_argument("--top", type=int, help="contact at most K customers")
    plan.add_argument("--contact-cost", type=float, required=True, help="cost of contacting one customer")
    plan.add_argument("--offer-cost", type=float, required=True, help="cost of the offer to a customer it saves")
    plan.add_argument("--save-rate", type=float, required=True, help="share of contacted churners the offer keeps")
    plan.add_argument("--control-fraction", type=float, default=0.1, help="random share kept as control (0.1)")
    plan.add_argument("--seed", type=int, default=0, help="seed of the control group draw (default 0)")
    plan.add_argument(
        "--min-control",
        type=int,
        default=0,
        help="smallest control group (the plan prints the size that detects its expected effect)",
    )
    plan.add_argument("--currency", default="", help="currency of the values and costs, for the charts (e.g. EUR)")
    plan.add_argument("--report", choices=["html"], help="also write plan.html, the one-page campaign plan")
    plan.add_argument(
        "--uplift-from",
        metavar="REPORT_DIR",
        help="a past campaign's report (churnflow campaign-report --output): rank by expected saving = "
        "uplift × value − costs, with --data and --config",
    )
    plan.add_argument("--model-dir", help="model directory or URI, for each customer's top three reasons")
    plan.add_argument("--data", help="the customer table that was scored, for the reasons")
    plan.add_argument("--config", help="dataset config (the id column), as given to churnflow score")
    plan.set_defaults(func=_cmd_plan)

    report = sub.add_parser(
        "campaign-report", help="measure a campaign against its control group once the outcomes are known"
    )
    report.add_argument("--plan", required=True, help="the plan directory (output of churnflow plan; path or URI)")
    report.add_argument(
        "--outcomes", required=True, help="table of the call list's id column and churned (0/1); path or URI"
    )
    report.add_argument("--output", required=True, help="directory for report.json, report.html and the charts")
    report.add_argument("--format", choices=["csv", "parquet"], help="outcomes format (default: from the file names)")
    report.set_defaults(func=_cmd_campaign_report)
