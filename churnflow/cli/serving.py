"""`churnflow serve`: serving a model directory with KServe's ModelServer on this machine.

The command is `python -m churnflow.predictor` under another name: the same parser (KServe's own
flags plus churnflow's, predictor/settings.py), so every KServe flag works with both and
`churnflow serve --help` lists them all. The hyphenated spellings this command always had
(--model-dir, --port, --max-batch, --enable-repository-api, ...) are aliases with the same meaning.
Its flags are handed over unparsed: the parser needs KServe, and the train image, which runs the
other commands, has no KServe.
"""

from __future__ import annotations

import argparse
import importlib.util

from churnflow.core.errors import ChurnflowError


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        # Looked up, not imported: KServe parses the command line when imported (predictor/__main__.py).
        missing = importlib.util.find_spec("kserve") is None
    except ImportError:
        missing = True
    if missing:
        raise ChurnflowError("serve: KServe is not installed here; pip install 'churnflow[serve]'")
    from churnflow.predictor.__main__ import main

    return main(args.serve_args, prog="churnflow serve", model_dir_required=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds serve to the `churnflow` parser; its flags are parsed by predictor/__main__.py."""
    # No option characters: every word after `serve` (--help included) goes to the predictor's parser.
    srv = sub.add_parser(
        "serve",
        help="serve a model directory with KServe's ModelServer (churnflow serve --help: every flag)",
        add_help=False,
        prefix_chars="\0",
    )
    srv.add_argument("serve_args", nargs=argparse.REMAINDER, metavar="FLAGS")
    srv.set_defaults(func=_cmd_serve)
