"""Pick the model's columns from the raw training file and give them fixed types."""

import pandas as pd

from luigiflow import InputFile, PipelineTask


class Preprocessor(PipelineTask):
    """Turn train.csv into a typed Parquet table of the id, the target and the feature columns
    that `[Dataset]` names.

    Nothing is learned from the data here (no means, no vocabularies): cleaning and encoding
    belong to the model, so that the model of record scores raw rows as they come.
    """

    outputs = {"train": "train.parquet"}

    def input_files(self) -> dict[str, InputFile]:
        data = self.dataset
        columns = (data.id_column, data.target_column, *data.features)
        target = InputFile(
            "train.csv",
            columns,
            target=data.target_column,
            problem=data.problem_type,
            unique=(data.id_column,),
            numeric=data.numeric_columns,
        )
        return {"train.csv": target}

    def run(self) -> None:
        self.save("train", self.typed(self.load("train.csv")))

    def typed(self, raw: pd.DataFrame) -> pd.DataFrame:
        data = self.dataset
        ID, TARGET = data.id_column, data.target_column
        numeric, categorical = list(data.numeric_columns), list(data.categorical_columns)
        table = raw[[c for c in (ID, TARGET) if c in raw] + numeric + categorical].copy()
        # Numbers keep the type pandas reads them with (int64 where nothing is missing), so the
        # model's signature accepts test.csv rows exactly as pandas reads them.
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="coerce")
        table[categorical] = (
            table[categorical].astype(object).where(table[categorical].notna(), None)
        )
        return table
