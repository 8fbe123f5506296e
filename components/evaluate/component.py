"""KFP wrapper of the evaluate step (logic in logic.py)."""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from churnflow.components.image import churnflow_component


@churnflow_component
def evaluate_op(
    model: Input[Model],
    test_data: Input[Dataset],
    min_roc_auc: float,
    min_f1: float,
    min_precision: float,
    max_regression: float,
    champion_metrics: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Artifact],
    reliability_curve: Output[Artifact],
    model_card: Output[HTML],
    card_summary: Output[Markdown],
) -> bool:
    """Scores the candidate on the test split; returns whether it may be deployed.

    The decision is the component's single output (`Output`): kfp.local resolves conditions only on
    an `Output`-named parameter, so dsl.If reads `evaluate.outputs["Output"]`. The model card (HTML)
    and its summary (Markdown) are what the Kubeflow UI shows on the run page.
    """
    import json

    from churnflow.components.evaluate.gate import Gate
    from churnflow.components.evaluate.logic import evaluate, reliability_png
    from churnflow.core.artifact import read_metadata
    from churnflow.evaluation.model_card import render_html, render_markdown, summary_line

    gate = Gate(min_roc_auc=min_roc_auc, min_f1=min_f1, min_precision=min_precision, max_regression=max_regression)
    result = evaluate(model.path, test_data.path, gate, champion_metrics)
    scores = result["metrics"]
    for name in ("roc_auc", "accuracy", "precision", "recall", "f1", "brier"):
        metrics.log_metric(name, round(scores[name], 6))
    classification_metrics.log_confusion_matrix(["retained", "churned"], scores["confusion_matrix"])
    curve = scores["roc_curve"]
    classification_metrics.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    reliability_png(scores["calibration_curve"], scores["brier"], reliability_curve.path)
    reliability_curve.metadata["mime_type"] = "image/png"
    with open(report.path, "w") as handle:
        json.dump(result, handle, indent=2)
    metadata = read_metadata(model.path)
    with open(model_card.path, "w") as handle:
        handle.write(render_html(result, metadata))
    with open(card_summary.path, "w") as handle:
        handle.write(render_markdown(result, metadata))
    print(f"evaluate: {summary_line(result, metadata)}")
    verdict = "deploy" if result["deploy"] else "do not deploy: " + "; ".join(result["reasons"])
    print(f"evaluate: roc_auc={scores['roc_auc']:.4f} f1={scores['f1']:.4f} -> {verdict}")
    return result["deploy"]
