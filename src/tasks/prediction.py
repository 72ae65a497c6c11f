"""Score the rows of the scoring file and write Kaggle's submission file."""

import luigi
import numpy as np
import pandas as pd

from luigiflow import InputFile, PipelineTask, registry, requires
from tasks.register import Register
from tasks.trainer import Trainer, probability_columns


@requires(Trainer, Register)
class Prediction(PipelineTask):
    """Predict every row of the scoring file, raw as it is, through mlflow.pyfunc.

    The model is this pipeline's Trainer's by default, or a registered one
    (`model_uri = "models:/titanic@champion"`); both take the rows of the file unchanged.
    """

    model_uri = luigi.Parameter(default="", description="e.g. models:/<model_name>@champion")
    scoring_file = luigi.Parameter(default="test.csv", description="in [PathConfig] input")
    batch_size = luigi.NumericalParameter(
        default=100_000,
        var_type=int,
        min_value=1,
        max_value=2**63,
        description="rows scored at a time",
    )

    outputs = {"submission": "submission.csv", "predictions": "predictions.parquet"}

    def input_files(self) -> dict[str, InputFile]:
        data = self.dataset
        columns = (data.id_column, *data.features)
        scoring = InputFile(
            self.scoring_file, columns, unique=(data.id_column,), numeric=data.numeric_columns
        )
        return {"scoring": scoring}

    def validate(self) -> dict[str, str]:
        return registry.uri_problems(model_uri=self.model_uri) if self.model_uri else {}

    def external_state(self) -> dict[str, str]:
        """The registered version the URI points at now: moving the alias rescores."""
        return {self.model_uri: registry.describe(self.model_uri)} if self.model_uri else {}

    def run(self) -> None:
        """The submission holds the id and the prediction under the data's own names (the
        class, or the value of a regression); predictions.parquet adds the probabilities."""
        rows = self.load("scoring")
        model = registry.load_model(self.model_uri) if self.model_uri else self.load("model")
        if self.model_uri:
            self.log_params(scored_model=registry.describe(self.model_uri))
        estimator = model.get_raw_model()
        classes = list(getattr(estimator, "classes_", []))
        predicted, probabilities = [], []
        for start in range(0, len(rows), self.batch_size):
            batch = rows.iloc[start : start + self.batch_size]
            predicted.append(np.asarray(model.predict(batch)))
            if hasattr(estimator, "predict_proba"):
                probabilities.append(estimator.predict_proba(batch))
        ID, TARGET = self.dataset.id_column, self.dataset.target_column
        values = np.concatenate(predicted) if predicted else np.array([])
        table = pd.DataFrame({ID: rows[ID].to_numpy(), TARGET: values})
        self.save("submission", table)
        if probabilities:
            table = table.assign(**probability_columns(classes, np.concatenate(probabilities)))
        self.save("predictions", table)
