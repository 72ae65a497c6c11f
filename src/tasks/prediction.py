"""Score the test passengers with the trained model and write Kaggle's submission file."""

import luigi
import numpy as np
import pandas as pd

from luigiflow import PipelineTask, requires
from tasks.preprocessor import ID, TARGET, Preprocessor
from tasks.trainer import Trainer


@requires(Preprocessor, Trainer)
class Prediction(PipelineTask):
    """Predict every test passenger through mlflow.pyfunc: `PassengerId,Survived` per row."""

    batch_size = luigi.IntParameter(default=100_000, description="rows scored at a time")

    outputs = {"submission": "submission.csv"}

    def validate(self) -> dict[str, str]:
        return {} if self.batch_size >= 1 else {"batch_size": "must be at least 1"}

    def run(self) -> None:
        test, model = self.load("test"), self.load("model")
        features = test[model.metadata.get_input_schema().input_names()]
        batches = range(0, len(features), self.batch_size)
        predicted = [model.predict(features.iloc[i : i + self.batch_size]) for i in batches]
        survived = np.concatenate(predicted).astype(int) if predicted else np.array([], dtype=int)
        self.save("submission", pd.DataFrame({ID: test[ID], TARGET: survived}))
