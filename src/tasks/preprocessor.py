"""Pick the model's columns from the raw training file and give them fixed types."""

import luigi
import pandas as pd

from luigiflow import InputFile, PipelineTask

ID, TARGET = "PassengerId", "Survived"


class Preprocessor(PipelineTask):
    """Turn train.csv into a typed Parquet table of the id, the target and the feature columns.

    Nothing is learned from the data here (no means, no vocabularies): cleaning and encoding
    belong to the model, so that the model of record scores raw rows as they come.
    """

    numeric_columns = luigi.ListParameter(default=["Pclass", "Age", "SibSp", "Parch"])
    categorical_columns = luigi.ListParameter(default=["Sex"])

    outputs = {"train": "train.parquet"}

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric_columns, *self.categorical_columns)

    def input_files(self) -> dict[str, InputFile]:
        columns = (ID, TARGET, *self.features)
        return {"train.csv": InputFile("train.csv", columns, target=TARGET)}

    def run(self) -> None:
        self.save("train", self.typed(self.load("train.csv")))

    def typed(self, raw: pd.DataFrame) -> pd.DataFrame:
        numeric, categorical = list(self.numeric_columns), list(self.categorical_columns)
        table = raw[[c for c in (ID, TARGET) if c in raw] + numeric + categorical].copy()
        # Numbers keep the type pandas reads them with (int64 where nothing is missing), so the
        # model's signature accepts test.csv rows exactly as pandas reads them.
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
        table[categorical] = (
            table[categorical].astype(object).where(table[categorical].notna(), None)
        )
        return table.astype({c: "int64" for c in (ID, TARGET) if c in table})
