"""Hold out a validation set, so the model is judged on rows it never saw."""

import operator

import luigi

from luigiflow import PipelineTask, requires
from tasks.preprocessor import Preprocessor


@requires(Preprocessor)
class Splitter(PipelineTask):
    """Split the training table into train and validation sets, stratified by the target."""

    validation_fraction = luigi.NumericalParameter(
        default=0.2, var_type=float, min_value=0.0, max_value=1.0, left_op=operator.lt
    )  # 0 < x < 1
    seed = luigi.NumericalParameter(default=0, var_type=int, min_value=0, max_value=2**32)

    outputs = {"train": "train.parquet", "validation": "validation.parquet"}

    def run(self) -> None:
        import pandas as pd
        from sklearn.model_selection import train_test_split

        TARGET, classes = self.dataset.target_column, self.dataset.is_classification
        table = self.load("train")
        if classes:
            check_enough_rows(table, self.validation_fraction, TARGET)
        train, validation = train_test_split(
            table,
            test_size=self.validation_fraction,
            stratify=table[TARGET] if classes else None,  # a regression's split is plain
            random_state=self.seed,
        )
        self.save("train", train)
        self.save("validation", validation)
        self.log_metrics(train_rows=len(train), validation_rows=len(validation))
        if not classes:
            spread = {
                "train": train[TARGET].describe(),
                "validation": validation[TARGET].describe(),
            }
            self.add_to_card(f"{TARGET} on both sides", pd.DataFrame(spread).reset_index())
            return
        balance = pd.DataFrame(
            {
                "train rows": train[TARGET].value_counts(),
                "train share": train[TARGET].value_counts(normalize=True).round(3),
                "validation rows": validation[TARGET].value_counts(),
                "validation share": validation[TARGET].value_counts(normalize=True).round(3),
            }
        ).rename_axis(TARGET)
        self.add_to_card("Class balance", balance.reset_index())


def check_enough_rows(table, validation_fraction: float, TARGET: str) -> None:
    """Stratifying needs every class on both sides of the split: say so in the data's terms
    rather than in scikit-learn's."""
    import math

    counts = table[TARGET].value_counts()
    held_out = math.ceil(len(table) * validation_fraction)
    if counts.min() < 2 or held_out < len(counts) or len(table) - held_out < len(counts):
        classes = ", ".join(f"{value}: {count}" for value, count in counts.items())
        raise ValueError(
            f"train.csv has {len(table)} rows ({TARGET} {classes}): too few to hold out "
            f"{validation_fraction:g} for validation with every class on both sides"
        )
