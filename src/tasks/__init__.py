"""The pipeline: one task per module. Copy one to add a step, then name it in luigi.toml."""

from tasks.prediction import Prediction
from tasks.preprocessor import Preprocessor
from tasks.trainer import Trainer

__all__ = ["Prediction", "Preprocessor", "Trainer"]
