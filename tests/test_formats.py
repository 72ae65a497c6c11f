"""Formats and digests of outputs: digests taken while writing, read again only for files
written otherwise."""

from __future__ import annotations

import pandas as pd
import pytest

from luigiflow import formats


@pytest.mark.parametrize("name", ["table.parquet", "table.csv", "values.json"])
def test_a_written_file_s_digest_is_taken_while_writing(tmp_path, name):
    value = {"a": [1, 2]} if name.endswith(".json") else pd.DataFrame({"a": [1, 2], "b": "é"})
    written = formats.write(tmp_path / name, value)
    assert written["size"] == (tmp_path / name).stat().st_size
    assert written["sha256"] == formats.sha256_file(tmp_path / name)
    assert not list(tmp_path.glob(".*.tmp"))


def test_known_digests_spare_a_second_read_until_the_file_changes(tmp_path, monkeypatch):
    table, other = tmp_path / "table.parquet", tmp_path / "notes.txt"
    written = {table: formats.write(table, pd.DataFrame({"a": range(10)}))}
    other.write_text("written by the task itself")
    read = []
    real = formats.sha256_file
    monkeypatch.setattr(formats, "sha256_file", lambda path: read.append(path.name) or real(path))

    found = formats.file_digests(tmp_path, written)
    assert read == ["notes.txt"]
    assert found["table.parquet"]["sha256"] == real(table)

    formats.write(table, pd.DataFrame({"a": range(20)}))  # rewritten after its digest
    read.clear()
    found = formats.file_digests(tmp_path, written)
    assert sorted(read) == ["notes.txt", "table.parquet"]
    assert found["table.parquet"]["sha256"] == real(table)


def test_a_model_saved_with_other_library_versions_is_loaded_with_a_warning(tmp_path, caplog):
    """MLflow's own check of a model's requirements is skipped (it costs a second or more in
    each fresh process): the pinned versions are compared here instead."""
    from importlib.metadata import version

    from luigiflow.loader import _warn_of_other_versions

    requirements = (
        f"pandas=={version('pandas')}\nscikit-learn==0.0.1\nno-such-package==1.0\nmlflow\n"
    )
    with caplog.at_level("WARNING", logger="luigiflow"):
        _warn_of_other_versions("runs:/r/Trainer/model", requirements.encode())
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "the model runs:/r/Trainer/model was saved with scikit-learn 0.0.1; "
        f"{version('scikit-learn')} is installed here",
        "the model runs:/r/Trainer/model was saved with no-such-package 1.0; "
        "nothing is installed here",
    ]
