"""The project's model loader on crafted model folders: each forgery is refused with a reason
(an UntrustedModel, which reuse passes over), never a crash, a hang or a raw traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from luigiflow.formats import file_digests, write_sklearn_model
from luigiflow.loader import UntrustedModel, load_model

ROWS = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
LABELS = (np.arange(40) % 3 == 0).astype(int)


@pytest.fixture
def tree_model(tmp_path):
    """A real tree model in the Trainer's format; the test forges it, then its digests."""
    model = make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=3, random_state=0))
    folder = tmp_path / "model"
    write_sklearn_model(model.fit(ROWS, LABELS), ROWS.head(5), folder)
    return folder, model


def load(folder):
    return load_model(folder, file_digests(folder), "runs:/r/Trainer/model")


def test_a_real_tree_model_loads_and_predicts_as_it_was_saved(tree_model):
    folder, model = tree_model
    loaded = load(folder)
    assert loaded.predict(ROWS).tolist() == model.predict(ROWS).tolist()
    assert type(loaded.get_raw_model()).__name__ == "Pipeline"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda t: t.children_left.__setitem__(0, 2**40), id="child-out-of-bounds"),
        pytest.param(lambda t: t.children_left.__setitem__(0, 0), id="self-loop"),
        pytest.param(lambda t: t.feature.__setitem__(0, 2**40), id="feature-out-of-bounds"),
    ],
)
def test_a_crafted_tree_is_refused_before_anything_predicts_with_it(tree_model, forge):
    """Predicting with such a tree reads out of bounds (a segfault) or never ends."""
    import skops.io

    folder, _ = tree_model
    model = skops.io.load(
        folder / "model.skops", trusted=["numpy.dtype", "sklearn.tree._tree.Tree"]
    )
    tree = model[-1].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    view = type("Nodes", (), {})()  # the fields a forger rewrites, on the nodes array
    view.children_left, view.feature = nodes["left_child"], nodes["feature"]
    forge(view)
    tree.__setstate__({**state, "nodes": nodes})
    (folder / "model.skops").write_bytes(skops.io.dumps(model))
    with pytest.raises(UntrustedModel, match="a tree that scikit-learn could not have grown"):
        load(folder)


def rewrite_mlmodel(folder, change) -> None:
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    (folder / "MLmodel").write_text(yaml.safe_dump(change(meta)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {**m, "flavors": [1, 2]}, "not a model's description"),
        (lambda m: {**m, "get_input_schema": 1}, "sets 'get_input_schema'"),
        (lambda m: {**m, "signature": "evil"}, "not a model this project can load"),
        (
            lambda m: {**m, "flavors": {**m["flavors"], "python_function": [1]}},
            "its flavors are not a model's description",
        ),
    ],
)
def test_a_malformed_mlmodel_is_refused_saying_why(tree_model, change, message):
    folder, _ = tree_model
    rewrite_mlmodel(folder, change)
    with pytest.raises(UntrustedModel, match=message):
        load(folder)


def test_yaml_tags_and_a_file_that_is_no_skops_file_are_refused(tree_model):
    folder, _ = tree_model
    (folder / "model.skops").write_bytes(b"not a zip")
    with pytest.raises(UntrustedModel, match="not a skops file"):
        load(folder)
    (folder / "MLmodel").write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(UntrustedModel, match="not plain YAML"):
        load(folder)


def test_a_skops_file_holding_no_estimator_is_refused(tree_model):
    import skops.io

    folder, _ = tree_model
    (folder / "model.skops").write_bytes(skops.io.dumps({"predict": "no"}))
    with pytest.raises(UntrustedModel, match="holds a dict, not an estimator"):
        load(folder)


def test_a_symlink_in_the_model_folder_is_refused(tree_model, tmp_path):
    folder, _ = tree_model
    (tmp_path / "elsewhere.txt").write_text("x")
    (folder / "link").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(UntrustedModel, match="link is not a plain file"):
        load(folder)
