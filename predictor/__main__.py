"""`python -m churnflow.predictor`: the serve image's entrypoint, on KServe's own argument parser.

Every flag of KServe's model server (`kserve.model_server.parser`: --http_port, --grpc_port, --workers,
--max_threads, --enable_docs_url, --enable_latency_logging, --timeout-keep-alive, --ssl_certfile, ...)
means what it means for any KServe custom predictor, and churnflow adds its own (--model_dir,
--max_batch, --watch, --store, --metadata_sha256, --enable_repository_api, ...: predictor/settings.py,
docs/serving-settings.md); `--help` lists them all. `churnflow serve` is this same parser. An unknown
flag, or a value that cannot be used, is one error line, not silently dropped.

churnflow's defaults differ from KServe's in four places, each because of what this predictor is:
--model_name churn; --event-loop asyncio (see the README's serving section); per-request latency log
lines off (--enable_latency_logging true brings them back); gRPC off unless --grpc_port or
--enable_grpc true is given (the InferenceService exposes HTTP only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Sequence
from typing import NoReturn

from churnflow.core.errors import ChurnflowError

PROG = "python -m churnflow.predictor"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: with KServe's flags the usage alone is a screenful."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """KServe's help shows each default; churnflow's flags say theirs (flag, variable, default) themselves."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def _kserve_parser() -> argparse.ArgumentParser:
    """KServe's model-server parser, imported without KServe's own exit on a bad flag value.

    Upstream: kserve/model_server.py (checked on 0.21.0) parses sys.argv when imported and exits with
    its whole usage text on a bad value (`--workers abc`). Then it is imported again on a bare command
    line, and our parser, which has the same flags and types, reports the value in one line."""
    if "kserve.model_server" in sys.modules:
        return sys.modules["kserve.model_server"].parser
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            from kserve.model_server import parser
    except SystemExit:
        saved, sys.argv = sys.argv, sys.argv[:1]
        try:
            from kserve.model_server import parser
        finally:
            sys.argv = saved
    else:
        sys.stderr.write(said.getvalue())  # whatever else the import said is not ours to hide
    return parser


def build_parser(prog: str = PROG, model_dir_required: bool = False) -> argparse.ArgumentParser:
    """KServe's model-server parser plus churnflow's flags (predictor/settings.py)."""
    kserve_parser = _kserve_parser()

    from churnflow.predictor.settings import add_arguments

    parser = _OneLineParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        parents=[kserve_parser],
        formatter_class=_Formatter,
    )
    add_arguments(parser, model_dir_required=model_dir_required)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG, model_dir_required: bool = False) -> int:
    """Parses the flags, reads the settings once (flags, then environment) and serves; 2 on a bad setting."""
    args = build_parser(prog, model_dir_required).parse_args(sys.argv[1:] if argv is None else argv)
    from churnflow.predictor.settings import from_command_line

    try:
        settings = from_command_line(args)
        from churnflow.predictor.server import serve

        serve(settings)
    except ChurnflowError as error:
        print(f"churnflow: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
