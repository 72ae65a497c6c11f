"""End to end, as a hostile user with write access to a model's files: no path of the project
runs code from a model, a changed Logged Model is passed over, and a file replaced after it
was checked is never read.

The payload is real: a skops file that calls `posix.system` when loaded with MLflow's loader,
which reads the file `python_function.model_path` names and trusts the types the MLmodel
lists (the test proves it runs there first). Each forgery keeps the sklearn flavor's own file
harmless, as a check of the sklearn flavor alone would want, and makes every digest agree.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import (
    artifacts,
    complete_outputs,
    gate_trainer,
    run_runner,
    runs,
    start_runner,
    store,
    wait_until_asleep,
)

pytestmark = pytest.mark.slow


def system_call(command: str) -> bytes:
    """A skops file whose one object is `posix.system(command)`."""
    schema = {
        "__class__": "system",
        "__module__": "posix",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(command),
                    "is_json": True,
                    "__id__": 2,
                }
            ],
            "__id__": 1,
        },
        "__id__": 0,
        "protocol": 2,
        "_skops_version": "0.16.0",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return buffer.getvalue()


def plant(model: Path, marker: Path) -> None:
    """Put the payload beside the model and point MLflow's pyfunc loader at it."""
    (model / "evil.skops").write_bytes(system_call(f"touch {marker}"))
    meta = yaml.safe_load((model / "MLmodel").read_text())
    meta["flavors"]["python_function"]["model_path"] = "evil.skops"
    meta["flavors"]["sklearn"]["skops_trusted_types"].append("posix.system")
    (model / "MLmodel").write_text(yaml.safe_dump(meta))


def forge_manifest(client, run_id: str | None, folder: Path) -> None:
    """The task folder's manifest (and, for a run, its fingerprint tag) made to agree."""
    manifest = json.loads((folder / "_manifest.json").read_text())
    manifest.pop("files", None)
    complete_outputs(client, run_id, folder, manifest)


def mlflow_loads(model: Path) -> subprocess.CompletedProcess:
    """MLflow's own loader on a folder, in a process of its own."""
    code = f"import mlflow.pyfunc; mlflow.pyfunc.load_model({str(model)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def logged_model_folder(project: Path) -> Path:
    [model] = store(project).search_logged_models(
        [e.experiment_id for e in store(project).search_experiments()]
    )
    return Path(model.artifact_location.removeprefix("file://"))


def test_a_forged_path_config_model_runs_no_code(project, first_run, tmp_path):
    [first] = runs(project)
    folder = tmp_path / "x" / "Trainer"
    shutil.copytree(artifacts(project, first) / "Trainer", folder)
    marker = tmp_path / "ran-code"
    plant(folder / "model", marker)
    forge_manifest(store(project), None, folder)
    mlflow_loads(folder / "model")
    assert marker.exists(), "the payload is live: MLflow's loader runs it"
    marker.unlink()

    result = run_runner(project, "--no-cache", "--set", f'PathConfig.Trainer="{folder}"')
    assert not marker.exists(), "loading the model ran code"
    assert result.returncode == 2, result.stderr
    assert "python_function.model_path 'evil.skops' is not the sklearn flavor's" in result.stderr
    assert len(runs(project)) == 1, "refused before any run"


def test_a_forged_logged_model_run_and_version_give_no_command_anywhere(
    project, first_run, tmp_path
):
    """What a user with EDIT on a shared server can do to another user's run: the Logged
    Model, the run's Trainer folder, its manifest and its tag, rewritten together."""
    [first] = runs(project)
    marker = tmp_path / "ran-code"
    plant(logged_model_folder(project), marker)
    trainer = artifacts(project, first) / "Trainer"
    plant(trainer / "model", marker)
    forge_manifest(store(project), first.info.run_id, trainer)
    mlflow_loads(logged_model_folder(project))
    assert marker.exists(), "the payload is live: MLflow's loader runs it"
    marker.unlink()

    served = subprocess.run(
        [sys.executable, "src/serve.py", "--port", "9"],
        cwd=project, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert served.returncode != 0 and not marker.exists(), served.stderr
    assert "is not the sklearn flavor's 'model.skops'" in served.stderr

    scored = run_runner(project, "--set", 'Prediction.model_uri="models:/titanic@champion"')
    assert not marker.exists(), "scoring by the registered name ran code"
    # The forged run is passed over as a source (the Trainer runs again), and the alias's
    # model is refused when Prediction loads it.
    assert scored.returncode == 1, scored.stdout
    assert re.search(r"Trainer\s+finished .*earlier outputs failed verification", scored.stdout)
    assert "is not the sklearn flavor's 'model.skops'" in scored.stderr
    tags = store(project).get_run(first.info.run_id).data.tags
    assert "evil.skops" in tags["luigiflow.task.Trainer.broken"]

    sys.path.insert(0, str(project / "src"))
    from luigiflow.loader import UntrustedModel
    from luigiflow.registry import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
        with pytest.raises(UntrustedModel):
            load_model("models:/titanic@champion")
    assert not marker.exists()


def test_a_changed_logged_model_is_passed_over_and_its_run_tagged_broken(project, first_run):
    [first] = runs(project)
    skops = logged_model_folder(project) / "model.skops"
    data = skops.read_bytes()
    skops.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])

    result = run_runner(project, "--force", "Evaluator")  # which needs the Trainer's model
    assert result.returncode == 0, result.stderr
    line = r"Trainer\s+finished in [\d.]+s\s+earlier outputs failed verification: models:/m-"
    assert re.search(line, result.stdout), result.stdout
    tags = store(project).get_run(first.info.run_id).data.tags
    assert "model.skops differs" in tags["luigiflow.task.Trainer.broken"]
    again = run_runner(project, "--force", "Evaluator", "--dry-run")
    assert re.search(r"Trainer\s+would reuse", again.stdout), again.stdout


def test_a_reused_file_replaced_while_a_task_runs_is_never_read(project, first_run, tmp_path):
    [first] = runs(project)
    gate = tmp_path / "gate"
    gate_trainer(project, gate)  # a changed Trainer: it runs again, the Splitter is reused
    runner = start_runner(project)
    wait_until_asleep(project, runner)
    validation = artifacts(project, first) / "Splitter/validation.parquet"
    rows = pd.read_parquet(validation)
    rows.assign(Survived=1 - rows["Survived"]).to_parquet(validation, index=False)
    gate.touch()
    stdout, stderr = runner.communicate(timeout=300)

    assert runner.returncode == 1, stdout
    assert f"runs:/{first.info.run_id}/Splitter/validation.parquet differs from its manifest" in (
        stderr
    )
    [second, _] = runs(project)
    evaluator = artifacts(project, second) / "Evaluator"
    assert not (evaluator / "_manifest.json").exists(), "nothing made from it counts as done"
    tags = store(project).get_run(first.info.run_id).data.tags
    assert "validation.parquet differs" in tags["luigiflow.task.Splitter.broken"]
