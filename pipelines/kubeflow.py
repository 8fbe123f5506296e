"""Compiling the pipeline to YAML and handing it to a Kubeflow Pipelines endpoint (kfp.Client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from churnflow.errors import ChurnflowError


def compile_pipeline(output: str | Path, image: str | None = None) -> Path:
    """Writes the pipeline spec; every component runs in `image` (default: the train image).

    The image is set on the compiled spec's executors rather than at import time, so one process can
    compile for several registries.
    """
    from kfp import compiler

    from churnflow.pipelines.churn_pipeline import churn_training_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(churn_training_pipeline, str(output))
    if image:
        documents = list(yaml.safe_load_all(output.read_text()))
        for executor in documents[0]["deploymentSpec"]["executors"].values():
            executor["container"]["image"] = image
        output.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return output


def load_compiled(path: str | Path) -> Any:
    """Loads a compiled pipeline back (raises if kfp cannot read it)."""
    from kfp import components

    try:
        return components.load_component_from_file(str(path))
    except Exception as error:
        raise ChurnflowError(f"{path}: not a compiled KFP pipeline ({error})") from None
