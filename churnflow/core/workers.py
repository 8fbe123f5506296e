"""Worker processes for the fits of a small table: tune's candidates side by side, train's final fit
beside its out-of-fold fits.

Processes, because a forest fit on a small table holds the GIL most of the time (components/tune/
logic.py). They fork from multiprocessing's fork server, a clean single-threaded process that has
imported the fitting stack once and run no OpenMP (forking a process whose OpenMP threads have run can
hang the child), so a worker costs no import of its own. A task starts that server first thing
(`start_server`), so that it imports the stack on a second core while the task itself does: a second's
import overlapped, on a run whose whole budget is a few seconds. Standard library only, so that
starting it costs nothing here. One server per process: the first `start_server` chooses what it
preloads.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def side_by_side(train_rows: int, below_rows: int) -> int:
    """How many candidates to score at once: one per core on a training split under `below_rows`
    rows (fits short, memory no concern), else one, each fit then taking every core."""
    return len(os.sched_getaffinity(0)) if train_rows < below_rows else 1


def start_server(preload: list[str]) -> None:
    """Starts the fork server, which imports the `preload` modules, without waiting for it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    from multiprocessing import forkserver

    forkserver.ensure_running()


@contextmanager
def process_pool(workers: int, preload: list[str]) -> Iterator[Any]:
    """A pool of `workers` processes forked from the server (started here with `preload` if it is not
    yet), or None for one worker: the caller then works in its own process."""
    if workers <= 1:
        yield None
        return
    from concurrent.futures import ProcessPoolExecutor

    start_server(preload)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread_each) as pool:
        yield pool


def _one_thread_each() -> None:
    """A worker's native thread pools (OpenMP and BLAS) at one thread, for as long as it lives.

    The workers already share the cores one each; a second thread per library only competes. BLAS
    threads matter too: with two workers each keeping OpenBLAS's two threads, gradient-boosting fits
    on 640 rows took 0.6-1.3 CPU-s each instead of 0.1 (they were the only thing that changed)."""
    from threadpoolctl import threadpool_limits

    from churnflow.core.hyperparameters import LOOP_THREADS_ENV

    threadpool_limits(limits=1)
    # A forest's n_jobs comes from LOOP_THREADS_ENV (hyperparameters.loop_threads). The workers inherit the
    # environment of the fork server as it was when it started, which is once per process, so it is set
    # here: with two threads a forest adds its trees' votes in the order they finish (one ulp apart).
    os.environ[LOOP_THREADS_ENV] = "1"
