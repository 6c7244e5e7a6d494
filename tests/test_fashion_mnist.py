"""The real Fashion-MNIST files, offline: Debian's dataset-fashion-mnist read where it lies, trained on end to end.

Slow (CI, ``.ci/run``): each test reads the 60 000 + 10 000 images; training ones take tens of seconds on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from helpers import all_runs, run_cli
from overfit import paths
from overfit.data.base import Dataset
from overfit.data.images import IDX_FILES
from overfit.tracking.runs import TAG_KIND
from overfit.training.parts import component

REPO = Path(__file__).resolve().parents[1]
DEB = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts the four files
HAVE_FILES = all((DEB / f"{f}.gz").is_file() for f in IDX_FILES)
pytestmark = pytest.mark.slow
needs_files = pytest.mark.skipif(not HAVE_FILES, reason=f"no Fashion-MNIST files in {DEB}: Debian's "
                                 "dataset-fashion-mnist is not installed (scripts/get-data fashion_mnist installs it)")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def fashion_mnist(**overrides: object) -> Dataset:
    """conf/dataset/fashion_mnist.yaml on Debian's files, with ``overrides``."""
    node = OmegaConf.load(paths.config_dir() / "dataset" / "fashion_mnist.yaml")
    return component(OmegaConf.create({"dataset": {**OmegaConf.to_container(node), "root": str(DEB), **overrides}}),
                     "dataset")


def points(store: MlflowClient) -> dict[str, Run]:
    """The trained points of the store, by run name."""
    return {r.info.run_name: r for r in all_runs(store) if r.data.tags.get(TAG_KIND) == "point"}


@needs_files
@pytest.mark.parametrize("val_size,n_train,sizes", [(5000, None, (55_000, 5000)), (10_000, None, (50_000, 10_000)),
                                                    (5000, 1000, (1000, 5000))])
def test_the_debian_files_give_the_official_splits(val_size: int, n_train: int | None,
                                                   sizes: tuple[int, int]) -> None:
    """60 000 training images less val_size (n_train of them if set), the official 10 000 test images."""
    data = fashion_mnist(val_size=val_size, n_train=n_train)
    data.check()
    assert data.train_size() == sizes[0]
    s = data.load(0)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (*sizes, 10_000)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (*sizes, 10_000)
    assert s.input_dim == 784 and s.num_classes == 10 and s.class_names == CLASSES
    assert s.x_train.dtype == torch.float32 and 0.0 == s.x_test.min() and s.x_test.max() == 1.0
    assert torch.bincount(s.y_test).tolist() == [1000] * 10  # the published test set is balanced
    if n_train is None:  # the training set is balanced too: 6000 a class, train and val together
        assert torch.bincount(torch.cat([s.y_train, s.y_val])).tolist() == [6000] * 10


@needs_files
def test_a_linear_softmax_learns_fashion_mnist(root: Path, store: MlflowClient,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The README's first real-data run: a linear softmax classifier reaches the textbook 0.80–0.86 test accuracy."""
    code, out, err = run_cli(capsys, "train", "dataset=fashion_mnist", f"dataset.root={DEB}", "model=linear",
                             "loss=log_likelihood", "optimizer.batch_size=256", "trainer.max_epochs=3")
    assert code == 0, err[-3000:]
    (run,) = points(store).values()
    assert run.info.status == "FINISHED" and run.data.params["dataset.root"] == str(DEB)
    metrics = run.data.metrics
    with capsys.disabled():
        print(f"\nfashion_mnist linear softmax, 3 epochs: train acc {metrics['train/acc']:.4f}, "
              f"val {metrics['val/acc']:.4f}, test {metrics['test/acc']:.4f}")
    # Wrong labels or a broken reader land near 0.1; test data leaking into training would be above 0.9.
    assert 0.80 < metrics["test/acc"] < 0.90
    assert 0.80 < metrics["val/acc"] < 0.90 and metrics["train/acc"] > 0.80
    assert any(a.path.startswith("images/confusion_matrix+step+3+")
               for a in store.list_artifacts(run.info.run_id, "images"))


@needs_files
def test_the_fashion_mnist_study_on_a_subset(root: Path, store: MlflowClient,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """pipelines/fashion_mnist.yaml on 5000 training images: every point runs, validation picks, the report says."""
    code, out, err = run_cli(capsys, "pipeline", "run", str(REPO / "pipelines" / "fashion_mnist.yaml"),
                             f"dataset.root={DEB}", "dataset.n_train=5000")
    assert code == 0, err[-3000:]
    runs = points(store)
    assert set(runs) == {"lr=0.001", "lr=0.01", "model.hidden=[4]", "model.hidden=[32]", "model.hidden=[256]",
                         "model.hidden=[1024]"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    acc = {name: r.data.metrics["test/acc"] for name, r in runs.items()}
    with capsys.disabled():
        print("\nfashion_mnist study, n_train=5000: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    assert acc["lr=0.001"] > 0.75 and acc["model.hidden=[1024]"] > 0.75
    assert acc["model.hidden=[4]"] < acc["model.hidden=[1024]"]  # four units under-fit ten classes
    best = min(runs.values(), key=lambda r: r.data.metrics["val/error"])
    assert f"{best.info.run_name} by min val/error" in out, out[-3000:]
    html = (root / "reports" / "fashion_mnist" / "report.html").read_text()
    assert f"test error {best.data.metrics['test/error']:.4g}" in html


def test_get_data_says_where_fashion_mnist_is_or_how_to_get_it(tmp_path: Path) -> None:
    """scripts/get-data: one line dataset.root=... on stdout when the files are there; else how, and exit 1."""
    script = str(REPO / "scripts" / "get-data")
    env = {**os.environ, "OVERFIT_ROOT": str(tmp_path)}  # an empty project root: no data/ of its own

    def get(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([script, *args], capture_output=True, text=True, env=env, timeout=60)

    assert get("--help").returncode == 0 and "scripts/get-data fashion_mnist" in get("--help").stdout
    assert get().returncode == 64 and get("svhn").returncode == 64
    for name in ("mnist", "cifar10"):
        done = get(name)
        assert done.returncode == 1 and not done.stdout, done.stderr
        assert f"overfit train dataset={name} dataset.download=true" in done.stderr
    if HAVE_FILES:
        done = get("fashion_mnist")
        assert done.returncode == 0 and done.stdout == f"dataset.root={DEB}\n", done.stderr
