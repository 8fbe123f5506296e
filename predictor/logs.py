"""The predictor's log lines: churnflow's own in KServe's format, and the per-request noise left out."""

from __future__ import annotations

import logging
import sys


def configure_logging() -> None:
    """churnflow's server log lines in KServe's format, at KServe's level, on stderr.

    KServe configures only its own and uvicorn's loggers; without this, churnflow's lines (a model
    loaded and which version, the event loop) would reach Python's last-resort handler, which
    shows warnings and errors only. Called in the server process and in each spawned worker."""
    from kserve.constants.constants import KSERVE_LOGLEVEL
    from kserve.logging import KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT

    logger = logging.getLogger("churnflow")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(KSERVE_LOGGER_FORMAT, KSERVE_LOGGER_DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(KSERVE_LOGLEVEL)
    logger.propagate = False


def quiet_request_logs(access_log: bool = False) -> None:
    """Silences the per-request timing and access logs, which together cost about half a request,
    and KServe's tracebacks for client errors (patches.ClientErrorFilter).

    To be called once the app starts, after KServe configured its logging (in every worker).
    `access_log` (CHURNFLOW_ACCESS_LOG=1 or --enable-access-log) keeps the per-request lines; errors
    are still logged, and every request is counted in the request guard's metrics."""
    from churnflow.predictor.patches import ClientErrorFilter

    if not access_log:
        for name in ("kserve.trace", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    kserve_logger = logging.getLogger("kserve")
    if not any(isinstance(f, ClientErrorFilter) for f in kserve_logger.filters):
        kserve_logger.addFilter(ClientErrorFilter())
