"""Seeded synthetic customer tables with real churn signal, for demos, tests, benchmarks and the README.

Two layouts (`churnflow generate --layout ...`):

- `classic`: the default dataset config's columns. Churn is drawn from a logistic model in which a
  short tenure, a month-to-month contract and high monthly charges raise the odds, so a good model has
  something to find (unlike the baseline script's coin-flip target, bench/baseline_train.py).
- `telco`: the 21 columns of IBM's public "Telco Customer Churn" sample (Yes/No churn, blank
  `TotalCharges` for brand-new customers), so `examples/telco/config.yaml` runs on a fresh clone
  without downloading anything. The values are invented; only the layout and quirks are the sample's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

CONTRACT_TYPES = ("Month-to-month", "One year", "Two year")
DEFAULT_ROWS = 1000
DEFAULT_SEED = 42


def synthetic_customers(rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Returns `rows` customers with an id column; vectorised, so a million rows take about a second."""
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 73, rows)
    usage = rng.uniform(0, 100, rows).round(2)
    age = rng.integers(18, 81, rows)
    monthly_charges = rng.uniform(20, 150, rows).round(2)
    contract = rng.choice(np.array(CONTRACT_TYPES, dtype=object), rows, p=[0.55, 0.25, 0.20])
    logit = (
        -0.9
        - 0.055 * (tenure - 36)
        + 1.3 * (contract == "Month-to-month")
        - 1.1 * (contract == "Two year")
        + 0.022 * (monthly_charges - 85)
        - 0.012 * (usage - 50)
        + 0.01 * (age - 50)
    )
    churn = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    return pd.DataFrame(
        {
            "customer_id": np.char.add("C", np.arange(1, rows + 1).astype(str)),
            "tenure": tenure,
            "usage": usage,
            "age": age,
            "monthly_charges": monthly_charges,
            "contract_type": contract,
            "churn": churn,
        }
    )


def telco_customers(rows: int = 2000, seed: int = 11) -> pd.DataFrame:
    """Returns `rows` customers in the public Telco churn layout, with the target `Churn` as Yes/No.

    Like the public table, `SeniorCitizen` is 0/1 (a category coded as a number) and `TotalCharges`
    is text that is blank for customers of tenure 0, which is what the example config must cope with.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)

    def pick(values: list[str], p: list[float] | None = None) -> np.ndarray:
        return rng.choice(np.array(values, dtype=object), rows, p=p)

    tenure = rng.integers(0, 73, rows)
    contract = pick(["Month-to-month", "One year", "Two year"], [0.55, 0.21, 0.24])
    internet = pick(["DSL", "Fiber optic", "No"], [0.34, 0.44, 0.22])
    monthly = np.round(np.where(internet == "No", rng.uniform(18, 30, rows), rng.uniform(40, 118, rows)), 2)
    total = np.round(monthly * tenure + rng.normal(0, 20, rows).clip(0), 2).astype(str)
    total = np.where(tenure == 0, " ", total)  # new customers: blank, as in the public table
    yes_no = ["Yes", "No"]
    service = ["Yes", "No", "No internet service"]
    security = np.where(internet == "No", "No internet service", pick(yes_no, [0.3, 0.7]))
    payment = pick(["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"])
    logit = (
        -1.0
        - 0.045 * (tenure - 30)
        + 1.1 * (contract == "Month-to-month")
        - 0.9 * (contract == "Two year")
        + 0.7 * (internet == "Fiber optic")
        - 0.5 * (security == "Yes")
        + 0.4 * (payment == "Electronic check")
    )
    churn = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "Yes", "No")
    return pd.DataFrame(
        {
            "customerID": [f"{i:04d}-{chr(65 + i % 26)}" for i in range(rows)],
            "gender": pick(["Female", "Male"]),
            "SeniorCitizen": rng.choice([0, 1], rows, p=[0.84, 0.16]),
            "Partner": pick(yes_no),
            "Dependents": pick(yes_no, [0.3, 0.7]),
            "tenure": tenure,
            "PhoneService": pick(yes_no, [0.9, 0.1]),
            "MultipleLines": pick(["Yes", "No", "No phone service"]),
            "InternetService": internet,
            "OnlineSecurity": security,
            "OnlineBackup": pick(service),
            "DeviceProtection": pick(service),
            "TechSupport": pick(service),
            "StreamingTV": pick(service),
            "StreamingMovies": pick(service),
            "Contract": contract,
            "PaperlessBilling": pick(yes_no, [0.6, 0.4]),
            "PaymentMethod": payment,
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "Churn": churn,
        }
    )


# layout name -> (generator, target column, the target value that means "churned")
LAYOUTS: dict[str, tuple[Callable[[int, int], pd.DataFrame], str, object]] = {
    "classic": (synthetic_customers, "churn", 1),
    "telco": (telco_customers, "Churn", "Yes"),
}
