"""Score the test passengers with the trained model and write Kaggle's submission file."""

import pandas as pd

from luigiflow import PipelineTask, requires
from tasks.preprocessor import ID, TARGET, Preprocessor
from tasks.trainer import Trainer


@requires(Preprocessor, Trainer)
class Prediction(PipelineTask):
    """Predict every test passenger through mlflow.pyfunc: `PassengerId,Survived` per row."""

    outputs = {"submission": "submission.csv"}

    def run(self) -> None:
        test, model = self.load("test"), self.load("model")
        features = test[model.metadata.get_input_schema().input_names()]
        predictions = pd.Series(model.predict(features)).astype(int).to_numpy()
        self.save("submission", pd.DataFrame({ID: test[ID], TARGET: predictions}))
