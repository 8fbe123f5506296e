"""The model this process serves, for the routes KServe's own data plane does not dispatch
(/predict, the repository load and unload). One per process: set when the server starts, and in each
spawned worker when it unpickles the model."""

from __future__ import annotations

from typing import Any

_SERVED: list[Any] = []


def register_served(model: Any) -> None:
    _SERVED[:] = [model]


def served_model() -> Any:
    """The served ChurnModel, or None before one is registered."""
    return _SERVED[0] if _SERVED else None
