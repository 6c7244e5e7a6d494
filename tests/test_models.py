"""What a run gives back: its weights as an MLflow LoggedModel that predicts from raw inputs, the winner linked from
its sweep, a study's selection registered, and every run's datasets (``log_inputs``)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from helpers import all_runs, compose, parent_of, run_cli
from overfit.errors import ConfigError
from overfit.tracking import models
from overfit.tracking.runs import TAG_KIND, TAG_PARENT
from overfit.tracking.store import Store
from overfit.training.parts import build
from overfit.training.vectorized import VectorizedLearner

SMALL = ("features=polynomial", "trainer.max_epochs=10")


def points(store: MlflowClient, parent: str | None = None) -> list:
    return [r for r in all_runs(store) if r.data.tags.get(TAG_KIND) == "point"
            and (parent is None or r.data.tags.get(TAG_PARENT) == parent)]


def logged_models(store: MlflowClient) -> list:
    return store.search_logged_models([e.experiment_id for e in store.search_experiments()])


def inputs(run) -> dict[str, tuple[str, str]]:
    """context → (name, digest) of the run's datasets."""
    found = {}
    for d in run.inputs.dataset_inputs:
        (context,) = [t.value for t in d.tags if t.key == "mlflow.data.context"]
        found[context] = (d.dataset.name, d.dataset.digest)
    return found


def splits_of(store: MlflowClient, run):
    """The run's own data, loaded from its config.yaml."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = OmegaConf.load(store.download_artifacts(run.info.run_id, "config.yaml", tmp))
    return build(cfg).dataset.load(cfg.seed)


def error_of(predicted: np.ndarray, splits) -> float:
    """The run's test/error recomputed from predictions: MSE (Σ over targets) or the misclassification rate."""
    y = splits.y_test.numpy()
    if splits.task == "classification":
        return float((predicted != y).mean())
    return float(((predicted - y) ** 2).sum(1).mean())


def loaded(store: MlflowClient, run):
    """The run's LoggedModel, loaded with mlflow.pyfunc from where MLflow keeps it."""
    model = store.get_logged_model(run.data.tags[models.TAG_MODEL])
    assert str(model.status) == "READY"
    assert model.source_run_id == run.info.run_id
    return mlflow.pyfunc.load_model(model.artifact_location)


def test_a_single_run_is_a_loggedmodel_that_predicts_its_test_error(root: Path, store: MlflowClient, capsys) -> None:
    code, _, err = run_cli(capsys, "train", "trainer.max_epochs=20")
    assert code == 0, err
    (run,) = points(store)
    assert {"model/network.pt", "model/model.json"} <= {a.path for a in store.list_artifacts(run.info.run_id, "model")}
    model_id = run.data.tags[models.TAG_MODEL]
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    model = store.get_logged_model(model_id)
    assert model.metrics and {m.key: m.value for m in model.metrics}["test/error"] == run.data.metrics["test/error"]
    assert [h.step for h in store.get_metric_history(run.info.run_id, "test/error")] == [20]  # no duplicate row
    pyfunc = loaded(store, run)
    assert str(pyfunc.metadata.signature.inputs.inputs[0].type) == "float32"
    data = splits_of(store, run)
    predicted = pyfunc.predict(data.x_test.numpy())
    assert predicted.shape == (len(data.x_test), 1)
    assert error_of(predicted, data) == pytest.approx(run.data.metrics["test/error"], rel=1e-5)

    # Datasets: train / validation / test, named for the option; writing them again changes nothing.
    assert set(inputs(run)) == {"train", "validation", "test"}
    assert {name for name, _ in inputs(run).values()} == {"polynomial"}
    s = Store(store.tracking_uri)
    models.log_inputs(s, run.info.run_id, models.dataset_inputs(compose("trainer.max_epochs=20"), data))
    assert inputs(store.get_run(run.info.run_id)) == inputs(run)
    assert len(store.get_run(run.info.run_id).inputs.dataset_inputs) == 3

    # Idempotent: asked again, the same model; a creation cut short (a kill after create) is completed, not doubled.
    assert models.log_model(s, run.info.run_id) == model_id
    other = store.create_run(run.info.experiment_id, run_name="features.order=3").info.run_id
    store.log_artifacts(other, store.download_artifacts(run.info.run_id, models.MODEL_DIR, str(root)), models.MODEL_DIR)
    pending = models._create(s, s.call("get_run", other))
    assert str(store.get_logged_model(pending.model_id).status) == "PENDING"
    assert models.log_model(s, other) == pending.model_id
    assert models.log_model(s, other) == pending.model_id
    assert str(store.get_logged_model(pending.model_id).status) == "READY"
    assert len(store.get_run(other).outputs.model_outputs) == 1
    assert len(logged_models(store)) == 2


class _Capture:
    """The batched module of every group trained in this test, with each member's test scores before they go."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scores: dict[str, torch.Tensor] = {}
        original = VectorizedLearner.on_train_end
        capture = self

        def on_train_end(module: VectorizedLearner) -> None:
            with torch.no_grad():
                scores = module(module.phi["test"].index_select(0, module.slot))
                n = module.n["test"]
            for m, run_id in enumerate(module.members):
                capture.scores[run_id] = module.loss.predict(scores[m, : int(n[m])]).cpu()
            original(module)

        monkeypatch.setattr(VectorizedLearner, "on_train_end", on_train_end)


def test_a_vectorized_sweep_keeps_each_member_and_links_the_winner(root: Path, store: MlflowClient, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    captured = _Capture(monkeypatch)
    sweep = ["train", "-m", *SMALL, "features.order=1,3", "dataset.n_train=10,20"]
    code, out, err = run_cli(capsys, *sweep)
    assert code == 0, err
    assert "vectorized: 4 points in 1 job(s)" in out
    parent_id = parent_of(out)
    kids = points(store, parent_id)
    assert len(kids) == 4 and set(captured.scores) == {k.info.run_id for k in kids}

    # Each member's weights are a single network that predicts exactly what the batched member did.
    for kid in kids:
        assert models.META_FILE in {a.path for a in store.list_artifacts(kid.info.run_id, "model")}
        saved = torch.load(io.BytesIO(Path(store.download_artifacts(kid.info.run_id, models.NETWORK_FILE,
                                                                   str(root))).read_bytes()), weights_only=False)
        data = splits_of(store, kid)
        with torch.no_grad():
            single = saved["loss"].predict(saved["net"].eval()(data.x_test))
        torch.testing.assert_close(single, captured.scores[kid.info.run_id], rtol=1e-6, atol=1e-6)

    # Datasets: one name; the test split is the same data everywhere, the training split differs with n_train.
    seen = {(k.data.params["dataset.n_train"], k.data.params["features.order"]): inputs(k) for k in kids}
    assert {name for i in seen.values() for name, _ in i.values()} == {"polynomial"}
    assert len({i["test"] for i in seen.values()}) == 1
    assert seen[("10", "1")]["train"] == seen[("10", "3")]["train"] != seen[("20", "1")]["train"]

    # The winner alone has a LoggedModel (tracking.log_model=best); the parent links it and shows its datasets.
    parent = store.get_run(parent_id)
    (model,) = logged_models(store)
    assert model.source_run_id == parent.data.tags["best.run_id"]
    assert parent.data.tags[models.TAG_BEST_MODEL] == model.model_id
    assert parent.data.tags[models.TAG_BEST_URI] == f"models:/{model.model_id}"
    assert [o.model_id for o in parent.outputs.model_outputs] == [model.model_id]
    assert inputs(parent) == inputs(store.get_run(model.source_run_id))
    winner = store.get_run(model.source_run_id)
    data = splits_of(store, winner)
    assert error_of(loaded(store, winner).predict(data.x_test.numpy()), data) == pytest.approx(
        winner.data.metrics["test/error"], rel=1e-5)

    # A rerun reuses every point, and the winner's model: nothing is logged twice.
    code, out, err = run_cli(capsys, *sweep)
    assert code == 0 and "every one of the 4 points finished earlier" in out, err
    again = store.get_run(parent_of(out))
    assert again.data.tags[models.TAG_BEST_MODEL] == model.model_id
    assert len(logged_models(store)) == 1
    assert len(store.get_run(winner.info.run_id).outputs.model_outputs) == 1


def test_log_model_all_and_none(root: Path, store: MlflowClient, capsys) -> None:
    """all: every finished point, vectorized or one at a time, has its model; a diverged one has its datasets only.
    none: no LoggedModel anywhere, the weights still kept."""
    code, out, err = run_cli(capsys, "train", "-m", *SMALL, "features.order=1,2", "tracking.log_model=all")
    assert code == 0, err
    kids = points(store, parent_of(out))
    assert {m.source_run_id for m in logged_models(store)} == {k.info.run_id for k in kids}
    parent = store.get_run(parent_of(out))
    assert parent.data.tags[models.TAG_BEST_MODEL] == store.get_run(parent.data.tags["best.run_id"]).data.tags[
        models.TAG_MODEL]

    code, out, err = run_cli(capsys, "train", "-m", *SMALL, "features.order=2", "optimizer.lr=0.1,1e6",
                             "sweep.vectorize=false", "tracking.log_model=all", "experiment_name=alone")
    assert code == 1, err  # lr = 1e6 diverges
    kids = {k.data.params["optimizer.lr"]: k for k in points(store, parent_of(out))}
    assert kids["1000000.0"].data.tags["failure"] == "diverged"
    assert set(inputs(kids["1000000.0"])) == {"train", "validation", "test"}
    assert models.TAG_MODEL not in kids["1000000.0"].data.tags
    fine = kids["0.1"]
    assert fine.data.tags[models.TAG_MODEL] in {m.model_id for m in logged_models(store)}
    data = splits_of(store, fine)
    assert error_of(loaded(store, fine).predict(data.x_test.numpy()), data) == pytest.approx(
        fine.data.metrics["test/error"], rel=1e-5)

    before = len(logged_models(store))
    code, out, err = run_cli(capsys, "train", *SMALL, "features.order=4", "tracking.log_model=none")
    assert code == 0, err
    (single,) = [k for k in points(store) if k.data.params.get("features.order") == "4"]
    assert models.TAG_MODEL not in single.data.tags and len(logged_models(store)) == before
    assert models.NETWORK_FILE in {a.path for a in store.list_artifacts(single.info.run_id, "model")}


TINY = """\
name: tiny
description: Two orders, the better one selected.
overrides: [dataset=polynomial, features=polynomial, dataset.n_test=200, trainer.max_epochs=10]
stages:
  orders: {kind: sweep, axes: {features.order: [1, 3]}}
  best: {kind: select, needs: [orders]}
"""


def registered(store: MlflowClient, uri: str):
    """``mlflow.pyfunc.load_model`` of a registry URI, the store the process's MLflow store for the call."""
    mlflow.set_tracking_uri(store.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)


def registered_selection(store: MlflowClient, capsys, study: str, name: str):
    """Run the study: its selection is version 1 of ``name``, which predicts the selected run's test error, and
    every run's Dataset column is filled. The selected run and its registry version."""
    code, out, err = run_cli(capsys, "pipeline", "run", study)
    assert code == 0, err[-3000:]
    assert f"model models:/{name}/1" in out
    (pipeline,) = [r for r in all_runs(store) if r.data.tags.get(TAG_KIND) == "pipeline"]
    assert pipeline.data.tags["best.model"] == f"models:/{name}/1"
    version = store.get_model_version(name, "1")
    run = store.get_run(version.run_id)
    data = splits_of(store, run)
    predicted = registered(store, f"models:/{name}/1").predict(data.x_test.numpy())
    assert error_of(predicted, data) == pytest.approx(run.data.metrics["test/error"], rel=1e-5)
    assert all(set(inputs(r)) == {"train", "validation", "test"} for r in all_runs(store))  # every run's Dataset column
    return run, version


def test_a_pipeline_registers_its_selection_once(root: Path, store: MlflowClient, capsys, tmp_path: Path) -> None:
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY)
    run, version = registered_selection(store, capsys, str(study), "tiny")
    assert run.data.params["features.order"] == "3"
    model = store.get_logged_model(run.data.tags[models.TAG_MODEL])
    assert version.source == model.artifact_location
    assert '"version": "1"' in model.tags["mlflow.modelVersions"]

    code, out, err = run_cli(capsys, "pipeline", "run", str(study))
    assert code == 0 and "'best': model models:/tiny/1 (registered before)" in out, err[-3000:]
    assert len(store.search_model_versions("name = 'tiny'")) == 1 and len(logged_models(store)) == 1


def test_log_model_is_checked() -> None:
    with pytest.raises(ConfigError, match="tracking.log_model"):
        compose("tracking.log_model=sometimes")


# --- the shipped study and a digits MLP (slow) ------------------------------------------------
@pytest.mark.slow
def test_polynomial_order_registers_the_selected_model(root: Path, store: MlflowClient, capsys) -> None:
    """After the study, models:/polynomial_order/1 predicts the selected point's test inputs with its test/error."""
    registered_selection(store, capsys, "polynomial_order", "polynomial_order")
    assert store.get_registered_model("polynomial_order").aliases == {"selected": 1}

    code, out, err = run_cli(capsys, "pipeline", "run", "polynomial_order")
    assert code == 0 and "model models:/polynomial_order/1 (registered before)" in out, err[-3000:]
    assert len(store.search_model_versions("name = 'polynomial_order'")) == 1


@pytest.mark.slow
def test_a_digits_mlp_predicts_its_test_labels(root: Path, store: MlflowClient, capsys) -> None:
    code, _, err = run_cli(capsys, "train", "dataset=digits", "model=mlp", "loss=log_likelihood",
                           "trainer.max_epochs=5")
    assert code == 0, err
    (run,) = points(store)
    pyfunc = loaded(store, run)
    data = splits_of(store, run)
    labels = pyfunc.predict(data.x_test.numpy())
    assert labels.dtype == np.int64 and labels.shape == (len(data.x_test),)
    assert error_of(labels, data) == pytest.approx(run.data.metrics["test/error"], abs=1e-9)
    assert 1 - run.data.metrics["test/error"] > 0.8
    assert {name for name, _ in inputs(run).values()} == {"digits"}
