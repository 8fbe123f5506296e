"""A seeded table in the public Telco churn layout (21 columns, Yes/No churn, blank TotalCharges)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def telco_like(rows: int = 2000, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def pick(values, p=None):
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
