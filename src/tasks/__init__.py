"""The pipeline: one task per module. Copy one to add a step, then name it in luigi.toml."""

from tasks.evaluator import Evaluator
from tasks.prediction import Prediction
from tasks.preprocessor import Preprocessor
from tasks.register import Register
from tasks.splitter import Splitter
from tasks.trainer import Trainer

__all__ = ["Evaluator", "Prediction", "Preprocessor", "Register", "Splitter", "Trainer"]
