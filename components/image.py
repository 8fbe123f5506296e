"""How every churnflow component is declared: one image, the project package already inside it.

Components are "lightweight components over a package": their bodies import churnflow, which
Dockerfile.train installs together with kfp, so no pip install runs when a task starts (and none
runs into the developer's environment under kfp.local). The image is chosen at compile time with
`churnflow compile --image` or CHURNFLOW_TRAIN_IMAGE.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from kfp import dsl

DEFAULT_TRAIN_IMAGE = "ghcr.io/churnflow/churnflow-train:0.1.0"
TRAIN_IMAGE = os.environ.get("CHURNFLOW_TRAIN_IMAGE", DEFAULT_TRAIN_IMAGE)


def churnflow_component(func: Callable) -> dsl.python_component.PythonComponent:
    """@dsl.component on the train image, without the per-task kfp install."""
    return dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)(func)
