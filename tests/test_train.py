"""`overfit train`: one composed config → one Lightning fit → one MLflow run."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch

from fakes import accept_fake_cifar10, write_cifar10, write_mnist
from helpers import all_runs, compose, run_cli
from overfit.data.datamodule import TensorDataModule
from overfit.maths.features import polynomial_terms
from overfit.tracking import runs
from overfit.training.module import Diverged, build_learner
from overfit.training.parts import build
from overfit.lifecycle.point import run_point
from overfit.training.fit import fit
from overfit.training.trainer import build_trainer


LINE = ("dataset=line", "model=linear", "features=identity", "loss=mse", "regularizer=none", "optimizer=gd")


def test_line_example_reaches_the_syllabus_optimum(root: Path, store) -> None:
    cfg = compose(*LINE, "trainer.max_epochs=200")
    result = run_point(cfg, list(LINE), root / "out")
    assert result.metrics["test/error"] < 1e-4
    assert result.metrics["train/loss"] < 1e-6

    run = store.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/error"] < 1e-4
    assert "generalization_gap" in run.data.metrics
    assert not (root / "out" / "checkpoints").exists()  # a finished run keeps no resume checkpoint
    # The fitted function in the data's own coordinates: y = 0.5·x + 2, 7.0 at x = 10.
    learner = fit(cfg, root / "fit" / "checkpoints").learner
    with torch.no_grad():
        f = learner.net.eval()(torch.tensor([[0.0], [1.0], [10.0]]))[:, 0]
    b, w = f[0].item(), (f[1] - f[0]).item()
    assert w == pytest.approx(0.5, abs=1e-4) and b == pytest.approx(2.0, abs=1e-4)
    assert f[2].item() == pytest.approx(7.0, abs=1e-4)


def test_a_run_records_config_metrics_and_picture(root: Path, store) -> None:
    cfg = compose(*LINE, "trainer.max_epochs=7", "optimizer.lr=0.05")
    result = run_point(cfg, [*LINE, "trainer.max_epochs=7", "optimizer.lr=0.05"], root / "out")
    run = store.get_run(result.run_id)
    params, tags = run.data.params, run.data.tags
    assert params["optimizer.lr"] == "0.05" and tags["dataset"] == "line"
    assert not [k for k, v in params.items() if k.endswith("._target_") or v == "None"]  # no plumbing columns
    assert params["trainer.max_epochs"] == "7"
    assert tags[runs.TAG_HASH] == runs.config_hash(cfg) and tags[runs.TAG_CODE] == runs.Key.of(cfg).code
    assert "optimizer.lr=0.05" in tags["overrides"]
    assert run.info.run_name == "dataset=line model=linear features=identity loss=mse regularizer=none " \
                                "optimizer=gd trainer.max_epochs=7 lr=0.05"
    artifacts = {a.path for a in store.list_artifacts(result.run_id)}
    assert {"config.yaml", "overrides.txt", "images"} <= artifacts and "fit.png" not in artifacts  # each picture once
    images = [a.path for a in store.list_artifacts(result.run_id, "images")]
    assert any(p.startswith("images/fit+step+7+") and p.endswith(".png") for p in images)  # MLflow's image views
    assert any(p.startswith("images/learning_curve+step+7+") and p.endswith(".png") for p in images)
    history = store.get_metric_history(result.run_id, "val/error")
    assert sorted(m.step for m in history) == list(range(1, 8))  # one point per epoch, stepped by epoch
    for key in ("train/loss", "train/objective", "train/error", "val/loss", "test/loss", "test/error"):
        assert key in run.data.metrics
    # Artifacts live beside the database, never in the working directory.
    assert run.info.artifact_uri.startswith((root / "mlruns" / "artifacts").as_uri())


def test_classification_run_logs_accuracy_and_confusion_matrix(root: Path, store) -> None:
    cfg = compose("dataset=breast_cancer", "loss=log_likelihood", "trainer.max_epochs=3")
    result = run_point(cfg, [], root / "out")
    run = store.get_run(result.run_id)
    assert 0 <= run.data.metrics["test/acc"] <= 1
    assert run.data.metrics["test/acc"] == pytest.approx(1 - run.data.metrics["test/error"])
    assert "confusion_matrix.png" not in {a.path for a in store.list_artifacts(result.run_id)}  # once: an image
    assert any("confusion_matrix+step+" in a.path for a in store.list_artifacts(result.run_id, "images"))


def test_config_hash_ignores_where_results_go() -> None:
    a = compose(*LINE)
    b = compose(*LINE, "tracking.uri=sqlite:////tmp/elsewhere.db", "experiment_name=other")
    c = compose(*LINE, "optimizer.lr=0.2")
    assert runs.config_hash(a) == runs.config_hash(b)
    assert runs.config_hash(a) != runs.config_hash(c)


def test_store_is_anchored_at_the_project_root_not_the_cwd(root: Path, tmp_path_factory, monkeypatch) -> None:
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)
    cfg = compose(*LINE, "trainer.max_epochs=2")
    run_point(cfg, [], elsewhere / "out")
    assert (root / "mlruns" / "mlflow.db").is_file()
    assert not any(p.name in ("mlruns", "mlartifacts") for p in elsewhere.iterdir())


def test_tracking_uri_from_environment_and_override(root: Path, store, tmp_path_factory, monkeypatch) -> None:
    env_db = tmp_path_factory.mktemp("env") / "env.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env_db}")
    run_point(compose(*LINE, "trainer.max_epochs=2"), [], root / "a")
    assert env_db.is_file() and all_runs(store) == []
    cfg_db = tmp_path_factory.mktemp("cfg") / "cfg.db"
    run_point(compose(*LINE, "trainer.max_epochs=2", f"tracking.uri=sqlite:///{cfg_db}"), [], root / "b")
    assert cfg_db.is_file()


def test_a_diverging_run_ends_failed_with_the_reason(root: Path, store) -> None:
    cfg = compose(*LINE, "optimizer.lr=1e6", "trainer.max_epochs=50")
    with pytest.raises(Diverged):
        run_point(cfg, [], root / "out")
    (run,) = all_runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure"] == "diverged"
    assert "at epoch" in run.data.tags["failure.reason"]


def test_an_interrupted_run_ends_killed(root: Path, store, monkeypatch) -> None:
    from overfit.training.module import Learner

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Learner, "on_train_epoch_end", interrupt)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_point(compose(*LINE, "trainer.max_epochs=5"), [], root / "out")
    (run,) = all_runs(store)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure"] == "killed"


def test_digits_mlp_softmax_classifier_reaches_95_percent(root: Path) -> None:
    result = fit(compose("dataset=digits", "model=mlp", "loss=log_likelihood", "trainer.max_epochs=30"), root / "out")
    assert result.metrics["test/acc"] >= 0.95


# Every shipped option of every group composes and runs one short fit.
OPTIONS = [
    ("dataset=polynomial",),
    ("dataset=line",),
    ("dataset=xor", "loss=log_likelihood"),
    ("dataset=digits", "loss=log_likelihood"),
    ("dataset=breast_cancer", "loss=log_likelihood"),
    ("features=polynomial", "features.order=4"),
    ("features=polynomial", "features.basis=legendre"),
    ("features=polynomial", "features.basis=monomial"),
    ("dataset=xor", "features=seed_transform", "loss=hinge"),
    ("model=mlp", "model.activation=sigmoid", "model.batch_norm=true", "model.dropout=0.1"),
    ("model=mlp", "model.activation=tanh", "model.hidden=[8,8]", "loss.gradient=analytic"),
    ("loss=l1",),
    ("dataset=digits", "loss=multiclass_hinge"),
    ("dataset=breast_cancer", "loss=hinge"),
    ("dataset=digits", "loss=cross_entropy"),
    ("dataset=digits", "loss=cross_entropy", "loss.output=sigmoid"),
    ("regularizer=l2",),
    ("regularizer=l1",),
    ("regularizer=elastic_net",),
    ("regularizer=max_norm", "regularizer.c=0.5"),
    ("optimizer=gd",),
    ("optimizer=sgd", "optimizer.batch_size=8"),
    ("optimizer=momentum", "optimizer.batch_size=8"),
    ("optimizer=adam",),
    ("optimizer=lbfgs",),
    ("trainer.precision=64-true",),
    ("trainer.eval_every_n_epochs=2", "trainer.max_epochs=3", "trainer.checkpoint=false"),
]


@pytest.mark.parametrize("overrides", OPTIONS, ids=lambda o: " ".join(o))
def test_every_option_trains(overrides: tuple[str, ...], root: Path, store) -> None:
    cfg = compose(*overrides, "trainer.max_epochs=2") if not any("max_epochs" in o for o in overrides) else compose(*overrides)
    result = run_point(cfg, list(overrides), root / "out")
    assert store.get_run(result.run_id).info.status == "FINISHED"
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.metrics.items() if k.startswith("train/"))


def test_max_norm_keeps_every_weight_row_inside_the_ball(root: Path) -> None:
    cfg = compose("dataset=digits", "loss=log_likelihood", "regularizer=max_norm", "regularizer.c=0.3",
                  "optimizer=sgd", "optimizer.lr=1.0", "trainer.max_epochs=2", "trainer.checkpoint=true")
    norms = fit(cfg, root / "out").learner.net[2].weight.norm(dim=1)
    assert norms.max() <= 0.3 + 1e-5


STEPPED = [
    ("optimizer=sgd", "optimizer.batch_size=8"),
    ("optimizer=adam", "optimizer.batch_size=6", "regularizer=l2", "regularizer.strength=0.01"),
    ("optimizer=momentum", "optimizer.batch_size=8", "regularizer=max_norm", "regularizer.c=0.5"),
    ("optimizer=lbfgs", "optimizer.lr=0.5", "optimizer.max_iter=5"),
]


@pytest.mark.parametrize("overrides", STEPPED, ids=lambda o: " ".join(o))
def test_an_epoch_per_lightning_step_trains_as_a_batch_per_step(overrides: tuple[str, ...], root: Path) -> None:
    """One process steps through an epoch's batches inside one Lightning step; DDP takes one batch per step.

    The two are the same updates in the same order: weights and metrics agree to float64 rounding.
    """
    cfg = compose("dataset=polynomial", "features=polynomial", "features.order=5", "trainer.precision=64-true",
                  "trainer.accelerator=cpu", "trainer.max_epochs=7", "trainer.checkpoint=false", *overrides)
    fused = fit(cfg, root / "fused")
    assert not fused.learner.automatic_optimization
    L.seed_everything(cfg.seed, verbose=False)
    parts = build(cfg)
    splits = parts.dataset.load(cfg.seed)
    learner = build_learner(parts, cfg, splits).double()
    splits = splits.floating(torch.float64)
    data = TensorDataModule(learner.encode(splits), cfg.optimizer.batch_size, cfg.seed)
    build_trainer(cfg.trainer, False, root / "stepped", []).fit(learner, datamodule=data)
    assert learner.automatic_optimization
    for mine, theirs in zip(fused.learner.net.parameters(), learner.net.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-14)
    assert fused.metrics["train/objective"] == pytest.approx(learner.last_metrics["train/objective"], rel=1e-12)


@pytest.mark.parametrize("kind", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_datasets_train_offline_from_real_formats(kind: str, root: Path, monkeypatch) -> None:
    if kind == "cifar10":
        accept_fake_cifar10(monkeypatch)
        write_cifar10(root / "data", n_per_batch=40)
    else:
        write_mnist(root / "data", n_train=300, n_test=60, kind="MNIST" if kind == "mnist" else "FashionMNIST")
    cfg = compose(f"dataset={kind}", "dataset.val_size=50", "loss=log_likelihood", "trainer.max_epochs=3")
    result = fit(cfg, root / "out")
    assert result.metrics["test/acc"] > 0.2  # ten classes: chance is 0.1


def test_cli_train_prints_where_the_run_is(root: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "train", *LINE, "trainer.max_epochs=3")
    assert code == 0, err
    assert "FINISHED" in out and "mlflow ui --backend-store-uri" in out
    assert str(root / "mlruns" / "mlflow.db") in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_path(root: Path) -> None:
    cfg = compose("dataset=digits", "model=mlp", "loss=log_likelihood", "trainer.accelerator=gpu", "trainer.max_epochs=5")
    assert fit(cfg, root / "out").metrics["test/acc"] > 0.8


def test_help_imports_no_heavy_library_and_python_m_works() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "overfit", "--help"],
                         capture_output=True, text=True, check=True, env=os.environ)
    assert "overfit train" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
    assert not imported & {"torch", "lightning", "mlflow", "torchvision", "matplotlib"}


@pytest.mark.parametrize(
    "setup",
    [
        ("dataset=digits", "loss=log_likelihood", "model=mlp", "model.activation=sigmoid", "model.hidden=[16]"),
        ("dataset=digits", "loss=multiclass_hinge"),
        ("dataset=breast_cancer", "loss=cross_entropy", "loss.output=sigmoid"),
        ("dataset=polynomial", "features=polynomial", "loss=mse"),
    ],
    ids=["softmax-mlp-sigmoid", "multiclass-hinge", "sigmoid-cross-entropy", "mse"],
)
def test_analytic_and_autograd_gradients_give_the_same_training_curve(setup, root: Path, store) -> None:
    curves = []
    for gradient in ("autograd", "analytic"):
        cfg = compose(*setup, f"loss.gradient={gradient}", "trainer.max_epochs=5", "optimizer=sgd",
                      "optimizer.batch_size=32", "optimizer.lr=0.05")
        run_id = run_point(cfg, [], root / gradient).run_id
        curves.append([m.value for m in store.get_metric_history(run_id, "train/objective")])
    assert len(curves[0]) == 5
    assert curves[0] == pytest.approx(curves[1], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_order_2_features_on_mnist_train_and_evaluate_batch_by_batch(root: Path) -> None:
    write_mnist(root / "data", n_train=300, n_test=60)
    cfg = compose("dataset=mnist", "dataset.val_size=50", "loss=log_likelihood", "features=polynomial",
                  "features.order=2", "features.basis=legendre", "optimizer=sgd", "optimizer.batch_size=32",
                  "optimizer.lr=0.01", "trainer.max_epochs=1")
    result = fit(cfg, root / "out")
    width = result.learner.net[1].out_features
    assert width == polynomial_terms(784, 2) - 1 == 308_504
    assert result.learner.eval_batch == 64  # evaluation chunks stay small, never all 300 images × 308k features
    assert 0 <= result.metrics["test/error"] <= 1
