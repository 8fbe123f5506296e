"""Judging a canary: its error ratio and p99 latency against the stable model's, from Prometheus.

The two models are told apart by the `model_version` label, which every scrape in manifests/monitoring/
(prometheus.yml and podmonitor.yaml) copies from the pod label `churnflow.io/model-version` that the
InferenceService puts on its predictor pods; `namespace` keeps other namespaces' predictors out. Only
inference routes count (protocol v1, v2 or compat): health probes and scrapes would dilute the ratio.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from churnflow.core.errors import ChurnflowError

INFERENCE = 'protocol=~"v1|v2|compat"'
NO_CANARY = 0
"""the default canary share (percent of traffic): none, the new model takes all traffic once it serves"""


@dataclass(frozen=True)
class CanaryPolicy:
    """How a canary is judged: its bake window and the bounds against the stable model.

    The defaults here are the only declaration of them: `churnflow deploy`'s options, the deploy step and
    the training pipeline's parameters all read `DEFAULT_CANARY` (tests/test_deploy_defaults.py checks)."""

    prometheus_url: str = ""
    bake_seconds: float = 300.0
    max_error_ratio_increase: float = 0.01  # absolute: canary 5xx/all may exceed stable's by this much
    max_p99_ratio: float = 1.5  # canary p99 may be this many times stable's p99
    min_requests: int = 20  # fewer canary requests in the window: no evidence, no promotion


DEFAULT_CANARY = CanaryPolicy()


def _selector(namespace: str, version: str) -> str:
    return f'namespace="{namespace}",model_version="{version}",{INFERENCE}'


def queries(namespace: str, version: str, window: str) -> dict[str, str]:
    """The PromQL for one model's requests, 5xx answers and p99 latency over `window`."""
    selector = _selector(namespace, version)
    return {
        "requests": f"sum(increase(churnflow_requests_total{{{selector}}}[{window}]))",
        "errors": f'sum(increase(churnflow_requests_total{{{selector},status=~"5.."}}[{window}]))',
        "p99_seconds": (
            f"histogram_quantile(0.99, sum by (le) (rate(churnflow_request_duration_seconds_bucket{{{selector}}}"
            f"[{window}])))"
        ),
    }


def query_scalar(prometheus_url: str, expr: str, timeout: float = 10.0) -> float:
    """One instant query; an empty result is 0 (nothing happened), NaN stays NaN (no data to divide)."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the configured URL
            answer = json.loads(response.read())
    except (OSError, ValueError) as error:
        raise ChurnflowError(f"prometheus_url: cannot query {prometheus_url} ({error})") from None
    if answer.get("status") != "success":
        raise ChurnflowError(f"prometheus_url: query failed: {answer.get('error', answer)}")
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def measure(prometheus_url: str, namespace: str, version: str, window: str) -> dict[str, Any]:
    figures = {key: query_scalar(prometheus_url, expr) for key, expr in queries(namespace, version, window).items()}
    requests = figures["requests"]
    return {
        "model_version": version,
        "requests": round(requests, 3),
        "error_ratio": round(figures["errors"] / requests, 6) if requests > 0 else None,
        "p99_seconds": figures["p99_seconds"] if math.isfinite(figures["p99_seconds"]) else None,
    }


def decide(stable: dict[str, Any], canary: dict[str, Any], policy: CanaryPolicy) -> tuple[str, str]:
    """promote, or rollback with the bound that was broken."""
    if canary["requests"] < policy.min_requests:
        return "rollback", (
            f"only {canary['requests']:g} requests reached the canary in the bake window "
            f"(need {policy.min_requests}): no evidence it serves well"
        )
    stable_ratio, canary_ratio = stable["error_ratio"] or 0.0, canary["error_ratio"] or 0.0
    if canary_ratio > stable_ratio + policy.max_error_ratio_increase:
        return "rollback", (
            f"error ratio {canary_ratio:.4f} vs stable {stable_ratio:.4f} "
            f"(allowed +{policy.max_error_ratio_increase:g})"
        )
    if stable["p99_seconds"] and canary["p99_seconds"] is not None:
        limit = stable["p99_seconds"] * policy.max_p99_ratio
        if canary["p99_seconds"] > limit:
            return "rollback", (
                f"p99 latency {canary['p99_seconds']:.4f} s vs stable {stable['p99_seconds']:.4f} s "
                f"(allowed x{policy.max_p99_ratio:g})"
            )
    return "promote", (
        f"error ratio {canary_ratio:.4f} vs stable {stable_ratio:.4f}, p99 "
        f"{canary['p99_seconds'] if canary['p99_seconds'] is not None else float('nan'):.4f} s vs "
        f"{stable['p99_seconds'] if stable['p99_seconds'] is not None else float('nan'):.4f} s: within bounds"
    )


def judge_from_prometheus(
    *, policy: CanaryPolicy, namespace: str, stable_version: str, canary_version: str
) -> dict[str, Any]:
    """The bake's numbers and decision, as the deploy step reports them (JSON and KFP metrics)."""
    window = f"{max(1, math.ceil(policy.bake_seconds))}s"
    stable = measure(policy.prometheus_url, namespace, stable_version, window)
    canary = measure(policy.prometheus_url, namespace, canary_version, window)
    decision, reason = decide(stable, canary, policy)
    return {
        "bake_seconds": policy.bake_seconds,
        "window": window,
        "label": "model_version",
        "stable": stable,
        "canary": canary,
        "bounds": {
            "max_error_ratio_increase": policy.max_error_ratio_increase,
            "max_p99_ratio": policy.max_p99_ratio,
            "min_requests": policy.min_requests,
        },
        "decision": decision,
        "reason": reason,
    }


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """The bake's figures flattened for KFP Metrics (numbers only; missing ones left out)."""
    canary = report.get("canary") or {}
    flat: dict[str, float] = {}
    for side in ("stable", "canary"):
        for key in ("requests", "error_ratio", "p99_seconds"):
            value = (canary.get(side) or {}).get(key)
            if isinstance(value, int | float):
                flat[f"canary_{side}_{key}"] = float(value)
    if canary.get("decision"):
        flat["canary_promoted"] = 1.0 if canary["decision"] == "promote" else 0.0
    return flat
