"""Keeping the garbage collector's full collections short in a serving process."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Moves every object alive after start-up (modules, the model, the app) out of the garbage
    collector's reach, once per process, just before it serves.

    Python's full collections walk every tracked object. In the server that is ~220,000 objects of
    imported libraries and the forest, and each full collection stops the event loop for about a
    tenth of a second: enough, under load, to shed requests at the 250 ms queueing limit. Frozen
    objects are skipped by every collection; they live as long as the process anyway. A hot reload
    must therefore free the model it replaces by reference counting alone (no cycles in a model)."""
    gc.collect()
    gc.freeze()
