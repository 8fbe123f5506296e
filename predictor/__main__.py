"""`python -m churnflow.predictor`: the serve image's entrypoint.

Accepts the flags KServe's InferenceService passes to a custom predictor (`--model_name`, `--model_dir`,
`--http_port`, `--grpc_port`, `--workers`, `--event_loop`) and churnflow's own spellings (`--model-dir`, `--port`, ...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m churnflow.predictor", description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", "--model-dir", dest="model_dir", default="/mnt/models")
    parser.add_argument("--model_name", "--model-name", dest="model_name", default="churn")
    parser.add_argument("--http_port", "--port", dest="http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", "--grpc-port", dest="grpc_port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max_batch", "--max-batch", dest="max_batch", type=int, default=None)
    parser.add_argument("--watch", type=float, default=0.0)
    parser.add_argument(
        "--event_loop", "--event-loop", dest="event_loop", choices=["auto", "asyncio", "uvloop"], default="asyncio"
    )
    args, _unknown = parser.parse_known_args(argv)  # KServe's own flags (e.g. --enable_docs_url) pass through
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    from churnflow.predictor.server import serve

    serve(
        model_dir=args.model_dir,
        model_name=args.model_name,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_batch=args.max_batch,
        watch_seconds=args.watch,
        event_loop=args.event_loop,
    )


if __name__ == "__main__":
    main()
