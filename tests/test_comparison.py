"""A sweep's comparison: the table of its children, the winners on `select`, the plots."""

import pytest

from luigiflow import comparison
from luigiflow.sweep import Sweep


def test_the_winners_are_the_best_finished_child_and_the_best_validated_one():
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                "child": 1,
                "run_id": "a",
                "status": "FINISHED",
                "validation": "VALIDATED",
                "auc": 0.8,
            },
            {"child": 2, "run_id": "b", "status": "FINISHED", "validation": "REJECTED", "auc": 0.9},
            {"child": 3, "run_id": "c", "status": "FAILED", "validation": "", "auc": 0.95},
            {
                "child": 4,
                "run_id": "d",
                "status": "FINISHED",
                "validation": "VALIDATED",
                "auc": 0.8,
            },
        ]
    )
    best, validated = comparison.winners(table, Sweep({("T", "k"): [1]}, select="auc"))
    assert (best["run_id"], validated["run_id"]) == ("b", "a"), "failed children never win"
    best, validated = comparison.winners(
        table, Sweep({("T", "k"): [1]}, select="auc", direction="lower")
    )
    assert (best["run_id"], validated["run_id"]) == ("a", "a"), "a tie goes to the first child"
    assert (
        comparison.winners(table[table["validation"] != "VALIDATED"], Sweep(select="auc"))[1]
        is None
    )
    assert comparison.winners(table, Sweep(select="f1")) == (None, None)


@pytest.mark.usefixtures("settings")
def test_a_child_never_started_and_values_of_mixed_types_are_compared_and_plotted(client, tmp_path):
    """Interrupted while the children were created, a sweep still compares those it has; a
    value of 1 and one of 0.1 are told apart on the plot although the table holds 1.0."""
    from luigiflow.sweep_run import Child

    experiment = client.create_experiment("s", artifact_location=str(tmp_path / "artifacts"))
    parent, first = client.create_run(experiment), client.create_run(experiment)
    client.log_metric(first.info.run_id, "auc", 0.7)
    client.set_tag(first.info.run_id, "luigiflow.validation", "VALIDATED")
    grid = Sweep({("Trainer", "alpha"): [1, 0.1]}, select="auc")
    children = [
        Child(1, {("Trainer", "alpha"): 1}, None, None, first.info.run_id, status="FINISHED"),
        Child(2, {("Trainer", "alpha"): 0.1}, None, None, status="KILLED"),
    ]
    table = comparison.table(client, grid, children)
    assert table[["child", "status", "validation"]].to_dict("records") == [
        {"child": 1, "status": "FINISHED", "validation": "VALIDATED"},
        {"child": 2, "status": "KILLED", "validation": ""},
    ]
    assert table["auc"].iloc[0] == 0.7
    [(title, png)] = comparison.plot(client, parent.info.run_id, grid, table, children)
    assert title == "auc_by_Trainer.alpha" and png.startswith(b"\x89PNG")
    logged = tmp_path / "artifacts" / parent.info.run_id / "artifacts" / "sweep"
    assert (logged / "auc_by_Trainer.alpha.png").is_file()
