"""churnflow: train, release, serve and score a customer-churn model, locally or on Kubeflow and KServe.

Each command group lives in its own module here (local, scoring, campaigns, serving, monitoring,
kubeflow, deploy); this one only assembles the parser and maps errors to exit statuses.

User errors (ChurnflowError) print one line, `churnflow: error: ...`, and exit 2; nothing else
prints a traceback unless CHURNFLOW_DEBUG=1.

Exit statuses mean one thing whichever command returns them, so scripts and schedulers can act on
them: 0 done, 2 an error in the input (or a failed pipeline step), 3 drift found, 4 a model was
trained but not released (the evaluation gate refused it), 5 drift not judged because the window
holds too few predictions of the model's version and some of other versions (after a retrain).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from churnflow.cli import campaigns, deploy, kubeflow, local, monitoring, scoring, serving
from churnflow.cli.exits import EXIT_INPUT_ERROR
from churnflow.core.errors import ChurnflowError

# The order of `churnflow --help`: this machine first, then the cluster.
GROUPS = (local, scoring, campaigns, serving, monitoring, kubeflow, deploy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churnflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ChurnflowError as error:
        print(f"churnflow: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        return 130
