"""The terminal summary and the dry run, from a hand-built run context and task records."""

from __future__ import annotations

import os
import re

os.environ["LUIGI_CONFIG_PARSER"] = "toml"

from luigiflow.plan import Plan
from luigiflow.report import TaskOutcome, covering, dry_run, outcomes, summary
from luigiflow.runstate import (
    COPIED,
    FAILED,
    FINISHED,
    KILLED,
    REUSED,
    RUN,
    RUNNING,
    SKIPPED,
    RunContext,
    TaskPlan,
    TaskRecord,
)

OLD = "e" * 32


def plan_entry(family, upstream=(), decision=RUN, **fields) -> TaskPlan:
    return TaskPlan(family, list(upstream), decision=decision, **fields)


def context_of(*entries: TaskPlan) -> RunContext:
    return RunContext(entries[-1].family, "input", {}, {e.family: e for e in entries})


def record(family, status, seconds=None, error="") -> TaskRecord:
    return TaskRecord(family, status, "", "host", 1, "t0", "t1", seconds, seconds, error)


def by_task(found: list[TaskOutcome]) -> dict[str, TaskOutcome]:
    return {o.task: o for o in found}


def test_a_task_that_ran_shows_its_duration_and_why():
    context = context_of(plan_entry("Prep", reason="no earlier run"))
    [outcome] = outcomes(context, {"Prep": record("Prep", FINISHED, 2.5)})
    assert outcome == TaskOutcome("Prep", "ran", 2.5, "no earlier run")


def test_reused_by_fingerprint_or_by_path_config_say_so():
    context = context_of(
        plan_entry("A", decision=REUSED, source=f"runs:/{OLD}/A", cached=True),
        plan_entry("B", decision=REUSED, source="/kept/B", cached=False),
        plan_entry("C", ["A", "B"], reason="x"),
    )
    found = by_task(outcomes(context, {"C": record("C", FINISHED, 1.0)}))
    assert found["A"] == TaskOutcome("A", "reused", None, f"from runs:/{OLD}/A (same fingerprint)")
    assert found["B"] == TaskOutcome("B", "reused", None, "from /kept/B ([PathConfig])")
    assert found["C"].outcome == "ran"


def test_copied_names_its_source():
    context = context_of(
        plan_entry("A", decision=COPIED, source=f"runs:/{OLD}/A", cached=True),
        plan_entry("B", ["A"], reason="r"),
    )
    found = by_task(outcomes(context, {}))
    assert found["A"] == TaskOutcome("A", "copied", None, f"from runs:/{OLD}/A")
    assert found["B"] == TaskOutcome("B", "not run"), "its upstream was copied: nothing failed"


def test_skipped_names_the_reused_task_that_covers_it_transitively():
    context = context_of(
        plan_entry("Source", decision=SKIPPED),
        plan_entry("Split", ["Source"], decision=SKIPPED),
        plan_entry("Train", ["Split"], decision=REUSED, source=f"runs:/{OLD}/Train", cached=True),
        plan_entry("Score", ["Train"], reason="Score.batch 1 → 2"),
    )
    found = by_task(outcomes(context, {"Score": record("Score", FINISHED, 0.4)}))
    assert found["Source"] == TaskOutcome("Source", "skipped", None, "not needed: Train reused")
    assert found["Split"].detail == "not needed: Train reused"
    assert found["Train"].outcome == "reused"
    assert found["Score"] == TaskOutcome("Score", "ran", 0.4, "Score.batch 1 → 2")


def test_covering_names_every_reused_task_that_needs_it():
    context = context_of(
        plan_entry("Source", decision=SKIPPED),
        plan_entry("Left", ["Source"], decision=REUSED, source="/l"),
        plan_entry("Right", ["Source"], decision=COPIED, source="/r"),
        plan_entry("Other", decision=REUSED, source="/o"),
        plan_entry("Top", ["Left", "Right", "Other"]),
    )
    assert covering(context, "Source") == "Left and Right"
    assert covering(context, "Top") == "a downstream task"


def test_a_failed_task_names_its_error_and_points_at_its_traceback():
    context = context_of(plan_entry("Train", reason="no earlier run"))
    [outcome] = outcomes(context, {"Train": record("Train", FAILED, 3.0, "ValueError: x")})
    assert outcome == TaskOutcome("Train", "failed", 3.0, "ValueError: x; see errors/Train.txt")


def test_a_task_that_needed_retries_says_which_attempt_succeeded():
    context = context_of(plan_entry("Train", reason="no earlier run"))
    finished = record("Train", FINISHED, 3.0)
    finished.attempts = [{"attempt": 1, "status": FAILED}, {"attempt": 2, "status": FINISHED}]
    [outcome] = outcomes(context, {"Train": finished})
    assert outcome.detail == "no earlier run (attempt 2)"


def test_killed_or_still_running_records_are_interrupted():
    context = context_of(plan_entry("A"), plan_entry("B"))
    found = by_task(outcomes(context, {"A": record("A", KILLED, 1.5), "B": record("B", RUNNING)}))
    assert found["A"] == TaskOutcome("A", "interrupted", 1.5)
    assert found["B"] == TaskOutcome("B", "interrupted", None)


def test_not_run_says_whether_an_upstream_task_failed():
    context = context_of(
        plan_entry("Prep"),
        plan_entry("Train", ["Prep"]),
        plan_entry("Eval", ["Train"]),
        plan_entry("Other"),
        plan_entry("Report", ["Other"]),
        plan_entry("Top", ["Eval", "Report"]),
    )
    found = by_task(
        outcomes(
            context,
            {
                "Prep": record("Prep", FINISHED, 1.0),
                "Train": record("Train", FAILED, 1.0, "boom"),
                "Other": record("Other", FINISHED, 1.0),
            },
        )
    )
    assert found["Train"].outcome == "failed"
    assert found["Eval"] == TaskOutcome("Eval", "not run", None, "an upstream task failed")
    assert found["Top"].detail == "an upstream task failed", "transitively, too"
    assert found["Report"] == TaskOutcome("Report", "not run"), "its upstream finished"


def test_what_did_not_run_in_an_interrupted_run_says_so():
    context = context_of(plan_entry("Prep"), plan_entry("Train", ["Prep"]))
    found = by_task(outcomes(context, {"Prep": record("Prep", KILLED, 1.0)}, interrupted=True))
    assert found["Train"] == TaskOutcome("Train", "not run", None, "the run was interrupted")


def test_outcomes_keep_the_plan_order():
    context = context_of(plan_entry("Z"), plan_entry("A", ["Z"]), plan_entry("M", ["A"]))
    assert [o.task for o in outcomes(context, {})] == ["Z", "A", "M"]


def test_summary_lists_status_tasks_conclusions_and_url():
    found = [
        TaskOutcome("Preprocessor", "reused", None, f"from runs:/{OLD}/Preprocessor"),
        TaskOutcome("Trainer", "ran", 12.25, "Trainer.seed 0 → 3"),
        TaskOutcome("Evaluator", "failed", 0.5, "see errors/Evaluator.txt"),
    ]
    text = summary(
        found,
        "FAILED",
        "http://mlflow/#/runs/1",
        log_hint="Log: run.log",
        conclusions={"validation": "REJECTED (accuracy 0.5 < 0.75)", "model.version": "3", "x": ""},
        mode="verbose",
    )
    lines = text.splitlines()
    assert "Run FAILED" in lines
    assert re.search(rf"^  Preprocessor\s+reused\s+from runs:/{OLD}/Preprocessor$", text, re.M)
    assert re.search(r"^  Trainer\s+ran\s+12\.2s\s+Trainer\.seed 0 → 3$", text, re.M)
    assert re.search(r"^  Evaluator\s+failed\s+0\.5s\s+see errors/Evaluator\.txt$", text, re.M)
    assert "  Validation: REJECTED (accuracy 0.5 < 0.75)" in lines
    assert "  Model version: 3" in lines
    assert not any(line.strip().startswith("X:") for line in lines), "empty conclusions hidden"
    assert "  MLflow: http://mlflow/#/runs/1" in lines
    assert lines[-1] == "  Log: run.log"
    # the columns line up: every outcome starts at the same offset
    starts = {line.index(o.outcome) for o, line in zip(found, lines[2:5], strict=True)}
    assert len(starts) == 1


def test_in_a_log_the_summary_leaves_out_the_tasks_shown_as_they_finished():
    found = [TaskOutcome("A", "reused", None, "from x"), TaskOutcome("B", "ran", 1.0)]
    text = summary(found, "FINISHED", "url", mode="tasks")
    assert text.splitlines() == [
        "",
        "Run FINISHED",
        "  A     reused                   from x",
        "  MLflow: url",
    ]
    on_a_terminal = summary(found, "FINISHED", "url", mode="line")
    assert on_a_terminal.startswith("\r\033[K\nRun FINISHED\n"), "the progress line is erased"
    assert "\n  B     ran                1.0s\n" in on_a_terminal


def test_summary_without_conclusions_or_hint():
    text = summary([TaskOutcome("A", "ran", 1.0)], "FINISHED", "url", mode="verbose")
    assert text.splitlines() == [
        "",
        "Run FINISHED",
        "  A     ran                1.0s",
        "  MLflow: url",
    ]


def test_dry_run_lists_each_task_with_its_verdict():
    context = context_of(
        plan_entry("Source", decision=SKIPPED),
        plan_entry("Split", ["Source"], decision=REUSED, source=f"runs:/{OLD}/Split", cached=True),
        plan_entry("Feature", decision=REUSED, source="/kept/Feature"),
        plan_entry("Train", ["Split", "Feature"], reason="Train.seed 0 → 3"),
    )
    text = dry_run(Plan(tasks=[], context=context))
    lines = text.splitlines()
    assert lines[0] == "Dry run of Train: no task runs and no MLflow run is created."
    assert len(lines) == 5
    verdicts = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines[1:]}
    assert verdicts == {
        "Source": "not needed: Split would be reused",
        "Split": f"would reuse from run {OLD} (same fingerprint)   (needs Source)",
        "Feature": "complete: [PathConfig] /kept/Feature",
        "Train": "would run: Train.seed 0 → 3   (needs Split, Feature)",
    }


def test_what_the_plan_inferred_of_the_dataset_is_said_before_the_run(capsys):
    from luigiflow.inputs import Dataset
    from luigiflow.plan import Plan
    from luigiflow.report import say_before_run

    context = RunContext("T", "input", {}, {})
    written = Dataset("Id", "y", "binary", ("a",), ("b",))
    say_before_run(Plan([], context, written))
    say_before_run(Plan([], context, None))
    assert capsys.readouterr().out == ""
    inferred = Dataset("Id", "y", "multiclass", ("a", "c"), ("b",), ("problem_type",))
    say_before_run(Plan([], context, inferred))
    assert capsys.readouterr().out == (
        "Dataset: multiclass (inferred) on y, 2 numeric and 1 categorical features\n"
    )


def test_tasks_the_store_could_not_say_are_finished_when_known_here_else_unknown():
    context = context_of(
        plan_entry("Prep"), plan_entry("Train", ["Prep"]), plan_entry("Score", ["Train"])
    )
    here = {"Prep": record("Prep", FINISHED, 0.5), "Train": record("Train", FAILED, 3.0, "E")}
    found = by_task(outcomes(context, here, unknown={"Prep", "Train", "Score"}))
    assert found["Prep"] == TaskOutcome(
        "Prep", "finished", 0.5, "recorded here; the store did not say"
    )
    assert found["Train"].outcome == "failed"
    assert found["Score"] == TaskOutcome("Score", "unknown", None, "the store did not say")
