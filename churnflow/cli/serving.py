"""`churnflow serve`: serving a model directory with KServe's ModelServer on this machine."""

from __future__ import annotations

import argparse

from churnflow.core.artifact import DEFAULT_MODEL_NAME


def _cmd_serve(args: argparse.Namespace) -> int:
    from churnflow.predictor.server import serve

    serve(
        model_dir=args.model_dir,
        model_name=args.model_name,
        http_port=args.port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_batch=args.max_batch,
        watch_seconds=args.watch,
        store_url=args.store,
        event_loop=args.event_loop,
        metadata_sha256=args.metadata_sha256,
        enable_repository_api=args.enable_repository_api or None,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds serve to the `churnflow` parser."""
    srv = sub.add_parser("serve", help="serve a model directory with KServe's ModelServer")
    srv.add_argument("--model-dir", required=True, help="model directory or storage URI (pvc://, s3://, gs://)")
    srv.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    srv.add_argument("--grpc-port", type=int, default=0, help="gRPC port (default: none)")
    srv.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    srv.add_argument("--workers", type=int, default=1)
    srv.add_argument(
        "--max-batch", type=int, help="most rows one request may carry (default 10000, or $CHURNFLOW_MAX_BATCH)"
    )
    srv.add_argument(
        "--watch",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="re-load the model when its directory changes, checking every SECONDS (default: off)",
    )
    srv.add_argument(
        "--store",
        metavar="URL",
        help="log every prediction to this store: sqlite:///PATH or postgresql://... (default: $CHURNFLOW_STORE_URL)",
    )
    srv.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="asyncio",
        help="the server's event loop (default asyncio; auto or uvloop: more throughput under overload, but "
        "new connections can wait seconds; see the README)",
    )
    srv.add_argument(
        "--metadata-sha256",
        metavar="HEX",
        help="refuse the model unless its metadata.json has this SHA-256 (default: $CHURNFLOW_METADATA_SHA256)",
    )
    srv.add_argument(
        "--enable-repository-api",
        action="store_true",
        help="serve the model repository's load/unload requests (default: off, or $CHURNFLOW_REPOSITORY_API=true)",
    )
    srv.set_defaults(func=_cmd_serve)
