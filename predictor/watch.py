"""Noticing a re-released model directory (`churnflow serve --watch SECONDS`).

A release swaps the directory's symlink and writes a new metadata.json, so its real path and that
file's stat change. Every process that serves runs its own watcher thread: the server process, and
each spawned worker when it unpickles the model, so with several workers each one reloads on its own
within one interval (plus the time to load).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any


def fingerprint(model_dir: str) -> tuple:
    """What changes when a model directory is re-released: its real path and metadata file's stat."""
    if "://" in model_dir and not model_dir.startswith("file://"):
        return ()
    path = Path(model_dir.removeprefix("file://"))
    try:
        stat = (path / "metadata.json").stat()
    except OSError:
        return (str(path.resolve()),)
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def start_watcher(model: Any, interval: float) -> None:
    """Calls model.reload() whenever model.model_dir's fingerprint differs from the one it loaded
    (model._fingerprint), checking every `interval` seconds; a refused release is not retried until
    the directory changes again."""
    if interval <= 0:
        return

    def loop() -> None:
        while True:
            time.sleep(interval)
            if fingerprint(model.model_dir) != model._fingerprint:
                model.reload()

    threading.Thread(target=loop, name="churnflow-model-watch", daemon=True).start()
