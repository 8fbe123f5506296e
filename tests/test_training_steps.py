"""Issue 2: each step's plain-Python logic, and every bad input as one line naming the column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churnflow.components.deploy.logic import deploy
from churnflow.components.evaluate.logic import Gate, decide, evaluate
from churnflow.components.preprocess.logic import preprocess
from churnflow.components.train.logic import train
from churnflow.core.config import load_config, parse_config_text
from churnflow.core.contract import FeatureContract
from churnflow.core.data import read_table, validate_table
from churnflow.core.encoding import encode_contract_frame
from churnflow.core.errors import ChurnflowError
from churnflow.core.hyperparameters import ForestParams, forest_params
from churnflow.core.synthetic import synthetic_customers

DEFAULT = load_config(None)


def table(**columns) -> pd.DataFrame:
    base = {
        "tenure": ["1", "2", "3", "4"],
        "usage": ["1.5", "2", "3", "4"],
        "age": ["30", "40", "50", "60"],
        "monthly_charges": ["10", "20", "30", "40"],
        "contract_type": ["One year", "Two year", "One year", "x"],
        "churn": ["1", "0", "1", "0"],
    }
    base.update(columns)
    return pd.DataFrame(base)


# -- dataset config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target: churn\nnumeric: [a]\ncolour: red\n", "unknown key 'colour'"),
        ("numeric: [a]\n", "missing required key 'target'"),
        ("target: churn\n", "at least one feature is needed"),
        ("target: churn\nnumeric: [a, a]\n", "columns listed twice among the features: ['a']"),
        ("target: churn\nnumeric: [churn]\n", "target column 'churn' is also listed as a feature"),
        ("target: churn\nid: a\nnumeric: [a]\n", "id column 'a' is also listed as a feature"),
        ("target: [churn\n", "dataset config (inline):"),
        ("- just\n- a list\n", "expected a mapping"),
        ("target: churn\nnumeric: a\n", "numeric"),
    ],
)
def test_bad_configs_are_one_line_errors(text, message):
    with pytest.raises(ChurnflowError) as error:
        parse_config_text(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_config_files_yaml_and_json(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"target": "Churn", "positive_label": "Yes", "numeric": ["x"]}))
    config = load_config(tmp_path / "c.json")
    assert config.positive_label == "Yes" and config.features == ["x"]
    with pytest.raises(ChurnflowError, match="cannot read it"):
        load_config(tmp_path / "missing.yaml")


# -- reading and validating the table -----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"usage": ["1", "lots", "3", "4"]}, "numeric column 'usage': 1 non-numeric value(s), e.g. 'lots'"),
        ({"churn": ["1", "0", "maybe", "0"]}, "target column 'churn': expected two labels, found 3"),
        ({"churn": ["yes", "no", "yes", "no"]}, "positive_label 1 is not among its labels"),
        ({"churn": ["1", "1", "1", "1"]}, "every row has the label '1'"),
        ({"churn": ["1", "", "1", "0"]}, "target column 'churn': 1 blank value(s)"),
        ({"age": ["", "", "", ""]}, "numeric column 'age': every value is blank"),
        ({"usage": ["1", "inf", "3", "4"]}, "numeric column 'usage': 1 infinite value(s)"),
    ],
)
def test_bad_tables_name_the_column(changes, message):
    with pytest.raises(ChurnflowError) as error:
        validate_table(table(**changes), DEFAULT)
    assert message in str(error.value)


def test_missing_columns_are_named():
    with pytest.raises(
        ChurnflowError, match=r"column\(s\) 'churn', 'age' named in the dataset config are not in the data"
    ):
        validate_table(table().drop(columns=["age", "churn"]), DEFAULT)


def test_empty_tables(tmp_path):
    (tmp_path / "header.csv").write_text("tenure,usage,age,monthly_charges,contract_type,churn\n")
    with pytest.raises(ChurnflowError, match="data has a header but no rows"):
        validate_table(read_table(str(tmp_path / "header.csv")), DEFAULT)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ChurnflowError, match="the file is empty"):
        read_table(str(tmp_path / "empty.csv"))
    with pytest.raises(ChurnflowError, match="no such file"):
        read_table(str(tmp_path / "nope.csv"))
    with pytest.raises(ChurnflowError, match="unsupported URI scheme 'ftp'"):
        read_table("ftp://example/x.csv")


def test_blanks_labels_and_types_are_coerced():
    typed = validate_table(table(usage=["1", " ", "NA", "4"], churn=["1", "0", "1.0", "0"]), DEFAULT)
    assert typed.frame["usage"].isna().tolist() == [False, True, True, False]
    assert typed.frame["churn"].tolist() == [1, 0, 1, 0]
    assert "tenure" in typed.integral_columns
    assert "usage" not in validate_table(table(), DEFAULT).integral_columns  # "1.5" makes it FP64
    yes_no = validate_table(
        table(churn=["Yes", "No", "yes", "No"]), DEFAULT.model_copy(update={"positive_label": "Yes"})
    )
    assert yes_no.frame["churn"].tolist() == [1, 0, 1, 0]


# -- preprocess ---------------------------------------------------------------------------------


def test_a_typed_table_validates_exactly_as_its_text_does():
    """Generated tables skip parsing numbers from text; the result must be what the CSV would give."""
    from churnflow.core.synthetic import synthetic_customers

    typed = synthetic_customers(500, 1)
    typed.loc[::9, "monthly_charges"] = np.nan
    typed.loc[3, "tenure"] = 2**40  # a whole number beyond float32
    as_text = typed.astype(str)  # what read_table gives: every cell text ("nan" for a blank)
    fast, parsed = validate_table(typed, DEFAULT), validate_table(as_text, DEFAULT)
    pd.testing.assert_frame_equal(fast.frame, parsed.frame)
    assert fast.integral_columns == parsed.integral_columns
    infinite = typed.astype({"age": "float64"})
    infinite.loc[0, "age"] = np.inf
    with pytest.raises(ChurnflowError, match="numeric column 'age': 1 infinite value"):
        validate_table(infinite, DEFAULT)


def test_preprocess_splits_stratified_and_writes_the_contract(tmp_path):
    summary = preprocess("", DEFAULT, tmp_path / "tr", tmp_path / "te", tmp_path / "c", synthetic_rows=1000)
    assert (summary.rows, summary.train_rows, summary.test_rows) == (1000, 800, 200)
    train_rate = pd.read_parquet(tmp_path / "tr/train.parquet")["churn"].mean()
    test_rate = pd.read_parquet(tmp_path / "te/test.parquet")["churn"].mean()
    assert abs(train_rate - test_rate) < 0.01
    contract = FeatureContract.load(tmp_path / "c")
    assert contract.categorical == {"contract_type": ["Month-to-month", "One year", "Two year"]}
    assert contract.feature_columns[-3:] == [
        "contract_type_Month-to-month",
        "contract_type_One year",
        "contract_type_Two year",
    ]  # every level kept, none dropped
    assert contract.numeric_dtypes == {
        "tenure": "int64",
        "usage": "float64",
        "age": "int64",
        "monthly_charges": "float64",
    }
    again = preprocess("", DEFAULT, tmp_path / "tr2", tmp_path / "te2", tmp_path / "c2", synthetic_rows=1000)
    assert again.data_sha256 == summary.data_sha256  # seeded


def test_too_few_rows_to_split(tmp_path):
    csv = tmp_path / "t.csv"
    table(churn=["1", "0", "0", "0"]).to_csv(csv, index=False)
    with pytest.raises(ChurnflowError, match="too few for a stratified"):
        preprocess(str(csv), DEFAULT, tmp_path / "a", tmp_path / "b", tmp_path / "c")


def test_synthetic_data_has_signal_and_scales():
    frame = synthetic_customers(20_000, seed=1)
    month = frame[frame.contract_type == "Month-to-month"].churn.mean()
    two_year = frame[frame.contract_type == "Two year"].churn.mean()
    assert month > two_year + 0.2
    assert frame[frame.tenure < 12].churn.mean() > frame[frame.tenure > 60].churn.mean() + 0.2
    assert len(synthetic_customers(1_000_000)) == 1_000_000


# -- unseen levels: all zeros, or rejected when strict ----------------------------------------------


def test_unseen_levels_read_as_all_zero_or_are_rejected_when_strict(tmp_path):
    preprocess("", DEFAULT, tmp_path / "tr", tmp_path / "te", tmp_path / "c", synthetic_rows=200)
    contract = FeatureContract.load(tmp_path / "c")
    row = pd.DataFrame([{"tenure": 1, "usage": None, "age": 3, "monthly_charges": 4, "contract_type": "Weekly"}])
    encoded = encode_contract_frame(contract, row)
    assert encoded[0, 4:].tolist() == [0.0, 0.0, 0.0]
    assert encoded[0, 1] == contract.numeric_fill["usage"]
    strict = contract.model_copy(update={"strict_categories": True})
    with pytest.raises(ChurnflowError, match="field 'contract_type': unseen category 'Weekly'"):
        encode_contract_frame(strict, row)


# -- hyperparameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n_estimators": 0}, "hyperparameter n_estimators"),
        ({"max_features": "most"}, "hyperparameter max_features"),
        ({"class_weight": "heavy"}, "hyperparameter class_weight"),
        ({"min_samples_leaf": 0}, "min_samples_leaf"),
    ],
)
def test_bad_hyperparameters(values, message):
    with pytest.raises(ChurnflowError, match=message):
        forest_params(**values)


def test_hyperparameters_map_to_sklearn():
    kwargs = ForestParams(max_depth=0, max_features="0.5", class_weight="balanced").sklearn_kwargs()
    assert kwargs["max_depth"] is None and kwargs["max_features"] == 0.5 and kwargs["class_weight"] == "balanced"
    assert ForestParams(max_features="3").sklearn_kwargs()["max_features"] == 3


# -- train, evaluate, deploy ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    preprocess("", DEFAULT, root / "tr", root / "te", root / "c", synthetic_rows=1000)
    metadata = train(root / "tr", root / "c", root / "model", ForestParams(n_estimators=40))
    return root, metadata


def test_train_writes_a_complete_artifact(trained):
    root, metadata = trained
    names = {p.name for p in (root / "model").iterdir()}
    assert {
        "model.joblib",
        "model.onnx",
        "contract.json",
        "metadata.json",
        "reference.json",
        "calibration.json",
    } <= names
    assert set(metadata["files"]) == names - {"metadata.json"}
    assert metadata["data"]["rows"] == 1000 and metadata["data"]["train_rows"] == 800
    assert metadata["hyperparameters"]["n_estimators"] == 40 and metadata["compiled"]["format"] == "onnx"
    assert {"scikit-learn", "pandas", "numpy", "python"} <= set(metadata["versions"])


def test_evaluate_reports_every_metric_and_gates(trained):
    root, _ = trained
    report = evaluate(root / "model", root / "te", Gate(min_roc_auc=0.6))
    metrics = report["metrics"]
    for name in ("roc_auc", "accuracy", "precision", "recall", "f1", "brier"):
        assert 0.0 <= metrics[name] <= 1.0
    assert report["deploy"] and report["reasons"] == []
    assert sum(map(sum, metrics["confusion_matrix"])) == 200
    assert len(metrics["roc_curve"]["fpr"]) == len(metrics["roc_curve"]["tpr"]) > 2
    assert set(metrics["classification_report"]) >= {"retained", "churned", "accuracy"}
    refused = evaluate(root / "model", root / "te", Gate(min_roc_auc=0.99))
    assert not refused["deploy"] and "below the floor 0.9900" in refused["reasons"][0]


def test_champion_challenger():
    metrics = {"roc_auc": 0.80, "f1": 0.6, "precision": 0.6, "brier": 0.2}
    assert decide(metrics, Gate(), {"roc_auc": 0.79}) == (True, [])
    deploy, reasons = decide(metrics, Gate(), {"roc_auc": 0.81})
    assert not deploy and "worse than the production model's 0.8100" in reasons[0]
    assert decide(metrics, Gate(max_regression=0.02), {"roc_auc": 0.81})[0]
    with pytest.raises(ChurnflowError, match="champion metrics: no 'roc_auc'"):
        decide(metrics, Gate(), {"auc": 0.5})


def test_evaluate_refuses_a_damaged_model(trained, tmp_path):
    import shutil

    root, _ = trained
    shutil.copytree(root / "model", tmp_path / "model")
    with open(tmp_path / "model" / "model.joblib", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ChurnflowError, match="model.joblib SHA-256 .* does not match"):
        evaluate(tmp_path / "model", root / "te", Gate())


def test_deploy_renders_the_inferenceservice_and_releases_locally(trained, tmp_path):
    import yaml

    root, metadata = trained
    evaluation = evaluate(root / "model", root / "te", Gate())
    manifest = deploy(
        root / "model",
        "s3://bucket/run/model",
        evaluation,
        tmp_path / "isvc.yaml",
        name="churn",
        namespace="ml",
        image="registry/serve:1",
        model_version=metadata["model_version"],
        local_release_dir=str(tmp_path / "out" / "model"),
    )
    assert manifest["kind"] == "InferenceService" and manifest["metadata"]["namespace"] == "ml"
    container = manifest["spec"]["predictor"]["containers"][0]
    assert container["image"] == "registry/serve:1"
    assert {"name": "STORAGE_URI", "value": (tmp_path / "out" / "model").as_uri()} in container["env"]
    assert manifest["metadata"]["labels"]["churnflow.io/model-version"] == metadata["model_version"]
    assert yaml.safe_load((tmp_path / "out" / "inferenceservice.yaml").read_text()) == manifest
    released = tmp_path / "out" / "model"
    assert released.is_symlink() and json.loads((released / "evaluation.json").read_text())["deploy"]
    assert np.isclose(
        json.loads((released / "evaluation.json").read_text())["metrics"]["roc_auc"], evaluation["metrics"]["roc_auc"]
    )


def test_a_missing_column_error_lists_every_column_and_suggests_the_closest_name():
    frame = table().rename(columns={"monthly_charges": "MonthlyCharges"})
    for i in range(70):  # a wide table: the list is cut with a count, never silently
        frame[f"extra_{i:02d}"] = 0
    with pytest.raises(ChurnflowError) as error:
        validate_table(frame, DEFAULT)
    message = str(error.value)
    assert "'monthly_charges': did you mean 'MonthlyCharges'?" in message and "\n" not in message
    assert "extra_53" in message and "extra_54" not in message and "… and 16 more" in message


def test_a_yes_label_that_yaml_read_as_a_boolean_gets_a_hint_to_quote_it():
    config = parse_config_text("target: churn\npositive_label: Yes\nnumeric: [tenure]\n")
    assert config.positive_label is True
    with pytest.raises(ChurnflowError) as error:
        validate_table(table(churn=["yes", "no", "yes", "no"]), config)
    assert 'quote it, e.g. positive_label: "Yes"' in str(error.value)
    with pytest.raises(ChurnflowError) as error:  # a label that is not a boolean gets no such hint
        validate_table(table(churn=["yes", "no", "yes", "no"]), DEFAULT)
    assert "quote it" not in str(error.value)


def test_the_reliability_chart_is_a_drawn_png(tmp_path) -> None:
    """The evaluate step's PNG artifact (and `churnflow run`'s reliability.png): 450 x 450 pixels with
    the diagonal, the curve and their labels drawn on it."""
    from PIL import Image

    from churnflow.components.evaluate.logic import reliability_png

    path = tmp_path / "reliability.png"
    reliability_png({"mean_predicted": [0.1, 0.5, 0.9], "observed_rate": [0.2, 0.4, 0.8]}, 0.19, path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (450, 450)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20, "a blank or nearly blank chart"


def test_train_on_a_small_table_is_the_same_in_worker_processes(trained, tmp_path) -> None:
    """On a small table train fits the final model and the five out-of-fold models side by side in
    worker processes: the same fits, so the same trees, calibration and threshold as one after
    another in the task itself."""
    from churnflow.core.artifact import ONNX_FILE

    root, _ = trained
    params = ForestParams(n_estimators=20, min_samples_leaf=5)
    reports = {}
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        metadata = train(root / "tr", root / "c", out, params, calibration="auto", threshold_goal="f1", workers=workers)
        reports[workers] = {key: metadata[key] for key in ("calibration", "threshold", "tree_nodes")}
        reports[workers]["trees"] = (out / ONNX_FILE).read_bytes()
    assert reports[1]["calibration"]["rows"] == 800
    assert reports[2] == reports[1]
