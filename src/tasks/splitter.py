"""Hold out a validation set, so the model is judged on passengers it never saw."""

import operator

import luigi

from luigiflow import PipelineTask, requires
from tasks.preprocessor import TARGET, Preprocessor


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

        table = self.load("train")
        train, validation = train_test_split(
            table,
            test_size=self.validation_fraction,
            stratify=table[TARGET],
            random_state=self.seed,
        )
        self.save("train", train)
        self.save("validation", validation)
        self.log_metrics(train_rows=len(train), validation_rows=len(validation))
        balance = pd.DataFrame(
            {
                "train rows": train[TARGET].value_counts(),
                "train share": train[TARGET].value_counts(normalize=True).round(3),
                "validation rows": validation[TARGET].value_counts(),
                "validation share": validation[TARGET].value_counts(normalize=True).round(3),
            }
        ).rename_axis(TARGET)
        self.add_to_card("Class balance", balance.reset_index())
