"""Benchmark data: the example passengers, or many more made by resampling those real rows.

Resampled sets keep the real rows' values and mix (a fixed seed, so every run of the benchmark
measures the same data), renumber the passengers, and are written outside the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20261123


def make_workload(example: Path, rows: int | None, out: Path) -> Path:
    """Write train.csv and test.csv with `rows` training rows (None: the example files)."""
    out.mkdir(parents=True, exist_ok=True)
    if rows is None:
        for name in ("train.csv", "test.csv"):
            shutil.copy(example / name, out / name)
        return out
    rng = np.random.default_rng(SEED)
    train, test = pd.read_csv(example / "train.csv"), pd.read_csv(example / "test.csv")
    test_rows = round(rows * len(test) / len(train))
    big_train = train.iloc[rng.integers(0, len(train), rows)].reset_index(drop=True)
    big_test = test.iloc[rng.integers(0, len(test), test_rows)].reset_index(drop=True)
    big_train["PassengerId"] = np.arange(1, rows + 1)
    big_test["PassengerId"] = np.arange(rows + 1, rows + test_rows + 1)
    big_train.to_csv(out / "train.csv", index=False)
    big_test.to_csv(out / "test.csv", index=False)
    return out
