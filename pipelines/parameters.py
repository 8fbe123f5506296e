"""Pipeline parameters from the command line (`--set name=value`), typed by the pipeline's signature."""

from __future__ import annotations

from typing import Any

from churnflow.core.errors import ChurnflowError

_KFP_TYPES = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "BOOLEAN": bool}
# Old names still accepted, so scripts and recurring-run arguments written before a rename keep working.
# `deploy_mode` (render/apply) read too much like `deployment_mode` (Serverless/RawDeployment).
RENAMED = {"deploy_mode": "deploy_action"}


def current_name(name: str) -> str:
    """A pipeline parameter's name today (its old name → the new one)."""
    return RENAMED.get(name, name)


def parameter_types(pipeline: Any) -> dict[str, type]:
    """Name → Python type of every input parameter the compiled pipeline declares."""
    inputs = pipeline.pipeline_spec.root.input_definitions.parameters
    from kfp.pipeline_spec import pipeline_spec_pb2

    names = pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name
    return {name: _KFP_TYPES.get(names(spec.parameter_type), str) for name, spec in inputs.items()}


def _coerce(name: str, text: str, kind: type) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ChurnflowError(f"--set {name}: expected true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ChurnflowError(f"--set {name}: expected {kind.__name__}, got {text!r}") from None


def parse_assignments(assignments: list[str], pipeline: Any) -> dict[str, Any]:
    """Parses ["min_roc_auc=0.8", ...] into typed pipeline arguments, rejecting unknown names."""
    types = parameter_types(pipeline)
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = current_name(name.strip())
        if not sep or not name:
            raise ChurnflowError(f"--set {assignment!r}: expected name=value")
        if name not in types:
            known = ", ".join(sorted(types))
            raise ChurnflowError(f"--set {name}: not a pipeline parameter (expected one of: {known})")
        values[name] = _coerce(name, text, types[name])
        _check_value(name, values[name])
    return values


def _check_value(name: str, value: Any) -> None:
    """Values a later step would refuse, refused now: a wrong deployment mode would otherwise surface
    only in the deploy step, after the whole pipeline has trained."""
    if name == "deployment_mode":
        from churnflow.components.deploy.inferenceservice import check_deployment_mode

        check_deployment_mode(value)
