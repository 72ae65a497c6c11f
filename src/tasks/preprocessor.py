"""Pick the model's columns from the raw CSV files and give them fixed types."""

import luigi
import pandas as pd

from luigiflow import InputFile, PipelineTask

ID, TARGET = "PassengerId", "Survived"


class Preprocessor(PipelineTask):
    """Turn train.csv and test.csv into typed Parquet tables of the configured columns.

    Nothing is learned from the data here (no means, no vocabularies): that belongs to the
    model, so nothing from the test set leaks into training.
    """

    numeric_columns = luigi.ListParameter(default=["Pclass", "Age", "SibSp", "Parch"])
    categorical_columns = luigi.ListParameter(default=["Sex"])

    outputs = {"train": "train.parquet", "test": "test.parquet"}

    def input_files(self) -> dict[str, InputFile]:
        features = (*self.numeric_columns, *self.categorical_columns)
        return {
            "train.csv": InputFile("train.csv", (ID, TARGET, *features)),
            "test.csv": InputFile("test.csv", (ID, *features)),
        }

    def run(self) -> None:
        self.save("train", self.typed(self.load("train.csv")))
        self.save("test", self.typed(self.load("test.csv")))

    def typed(self, raw: pd.DataFrame) -> pd.DataFrame:
        numeric, categorical = list(self.numeric_columns), list(self.categorical_columns)
        table = raw[[c for c in (ID, TARGET) if c in raw] + numeric + categorical].copy()
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce").astype("float64")
        table[categorical] = (
            table[categorical].astype(object).where(table[categorical].notna(), None)
        )
        return table.astype({c: "int64" for c in (ID, TARGET) if c in table})
