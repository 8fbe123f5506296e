"""`python -m churnflow.predictor`: the serve image's entrypoint, on KServe's own argument parser.

Every flag of KServe's model server (`kserve.model_server.parser`: --http_port, --grpc_port, --workers,
--max_threads, --enable_docs_url, --enable_latency_logging, --timeout-keep-alive, --ssl_certfile, ...)
means what it means for any KServe custom predictor, and churnflow adds its own (--model_dir,
--max_batch, --watch, --store, --metadata_sha256, --enable_repository_api); `--help` lists them all.
An unknown flag is an error, not silently dropped.

churnflow's defaults differ from KServe's in four places, each because of what this predictor is:
--model_name churn; --event-loop asyncio (see the README's serving section); per-request latency log
lines off (--enable_latency_logging true brings them back); gRPC off unless --grpc_port or
--enable_grpc true is given (the InferenceService exposes HTTP only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from churnflow.core.errors import ChurnflowError

KSERVE_PASS_THROUGH = (
    "max_threads",
    "max_asyncio_workers",
    "enable_docs_url",
    "enable_latency_logging",
    "access_log_format",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
)
"""KServe flags that become ModelServer arguments; KServe reads the rest of its flags (logging
configuration, gRPC message sizes, transformer settings) from the command line itself."""


def _true(text: str) -> bool:
    from kserve.utils.utils import strtobool

    return bool(strtobool(text))


def build_parser() -> argparse.ArgumentParser:
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        prog="python -m churnflow.predictor",
        description=__doc__.splitlines()[0],
        parents=[kserve_parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ours = parser.add_argument_group("churnflow")
    ours.add_argument("--model_dir", "--model-dir", dest="model_dir", default="/mnt/models", help="directory or URI")
    ours.add_argument("--model-name", dest="model_name", help=argparse.SUPPRESS)
    ours.add_argument("--port", dest="http_port", type=int, help=argparse.SUPPRESS)
    ours.add_argument("--grpc-port", dest="grpc_port", type=int, help=argparse.SUPPRESS)
    ours.add_argument("--event_loop", dest="event_loop", choices=["auto", "asyncio", "uvloop"], help=argparse.SUPPRESS)
    ours.add_argument("--max_batch", "--max-batch", dest="max_batch", type=int, help="most rows one request may carry")
    ours.add_argument(
        "--watch",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="reload a re-released model, checking every SECONDS (0: off)",
    )
    ours.add_argument("--store", metavar="URL", help="log every prediction to this store")
    ours.add_argument(
        "--metadata_sha256",
        "--metadata-sha256",
        dest="metadata_sha256",
        metavar="HEX",
        help="refuse a model whose metadata.json has another SHA-256; also $CHURNFLOW_METADATA_SHA256",
    )
    ours.add_argument(
        "--enable_repository_api",
        "--enable-repository-api",
        dest="enable_repository_api",
        type=_true,
        nargs="?",
        const=True,
        default=None,
        help="serve repository load/unload requests (off unless given or $CHURNFLOW_REPOSITORY_API=true)",
    )
    # churnflow's defaults where they differ from KServe's (see the module docstring); None: not given.
    parser.set_defaults(
        model_name="churn", event_loop="asyncio", enable_latency_logging=False, grpc_port=None, enable_grpc=None
    )
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from churnflow.predictor.server import serve

    grpc = args.enable_grpc if args.enable_grpc is not None else args.grpc_port is not None
    grpc_port = (args.grpc_port or 8081) if grpc else 0
    try:
        serve(
            model_dir=args.model_dir,
            model_name=args.model_name,
            http_port=args.http_port,
            grpc_port=grpc_port,
            workers=args.workers,
            max_batch=args.max_batch,
            watch_seconds=args.watch,
            store_url=args.store,
            event_loop=args.event_loop,
            metadata_sha256=args.metadata_sha256,
            enable_repository_api=args.enable_repository_api,
            kserve_options={name: getattr(args, name) for name in KSERVE_PASS_THROUGH},
        )
    except ChurnflowError as error:
        print(f"churnflow: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
