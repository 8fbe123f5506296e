"""Stand-in outcomes for a planned campaign, for trying `churnflow campaign-report` without waiting a month.

Each listed customer churns with their planned probability; contacted customers churn `--effect` less
(an absolute reduction). Real outcomes come from the billing system: a table with the call list's id
column and `churned` (0/1).

    python examples/campaign/simulate_outcomes.py campaign/call_list.csv outcomes.csv --effect 0.05
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("call_list", help="call_list.csv written by churnflow plan")
    parser.add_argument("output", help="outcomes CSV to write")
    parser.add_argument("--effect", type=float, default=0.05, help="true churn rate reduction of a contact")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    calls = pd.read_csv(args.call_list, dtype={0: str}, keep_default_na=False)
    rate = np.clip(calls.probability - np.where(calls.group == "contact", args.effect, 0.0), 0, 1)
    churned = (np.random.default_rng(args.seed).random(len(calls)) < rate).astype(int)
    pd.DataFrame({calls.columns[0]: calls.iloc[:, 0], "churned": churned}).to_csv(args.output, index=False)
    print(f"wrote {len(calls)} outcomes to {args.output} (true effect {args.effect})")


if __name__ == "__main__":
    main()
