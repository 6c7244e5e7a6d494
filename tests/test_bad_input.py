"""Bad input, the hostile way: every case is one line, exit 2, no run, the store byte for byte as it was.

Each row is what a user typed after ``overfit train``, the key the one-line error
must name, and a fragment of the message. Validation runs before any MLflow run
exists (DESIGN.md, "Bad input"), so nothing here trains: each row costs one Hydra
composition. Rows with ``-m`` are sweeps with one bad point among good ones:
nothing runs, not even the parent.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from fakes import write_cifar10, write_mnist
from helpers import run_cli
from overfit.data import images

Setup = Callable[[Path], None]


def mnist(root: Path) -> None:
    """200 training images in the real format, where dataset.root=data looks."""
    write_mnist(root / "data", kind="MNIST")


def damaged(kind: str, file: str, how: Callable[[bytes], bytes]) -> Setup:
    """Valid fake files of ``kind`` with ``file`` (under root/data) rewritten by ``how``."""

    def setup(root: Path) -> None:
        if kind == "cifar10":
            write_cifar10(root / "data", n_per_batch=40)
        else:
            write_mnist(root / "data", kind=kind)
        path = root / "data" / file
        path.write_bytes(how(path.read_bytes()))

    return setup


def offline(root: Path) -> None:
    """The download check is exercised for real: where the host answers, the case cannot be."""
    if images.unreachable(*images.MNIST.host) is None:
        pytest.skip("this machine reaches the MNIST download host")


def case(args: str, key: str, fragment: str, setup: Setup | None = None, skip: str | None = None) -> Any:
    """One row; ``skip`` says why this machine cannot show it (a GPU that is there after all)."""
    marks = [pytest.mark.skip(reason=skip)] if skip else []
    return pytest.param(args, key, fragment, setup, id=args, marks=marks)


CUDA = "this machine has a CUDA GPU" if torch.cuda.is_available() else None
MPS = "this machine has an MPS GPU" if torch.backends.mps.is_available() else None
TOO_MANY_CPUS = (os.cpu_count() or 1) + 1
HUGE = 100_000_000_000  # 1e11 examples: 400 GB of inputs alone
IMAGES = "MNIST/raw/train-images-idx3-ubyte"
LABELS = "MNIST/raw/train-labels-idx1-ubyte"

CASES = [
    # unknown options and keys, wrong types (the schemas, at compose time)
    case("dataset=nope", "dataset", "unknown option 'nope'"),
    case("features.order=-2", "features.order", "no such key for overfit.maths.features.Identity"),
    case("+foo=1", "foo", "unknown top-level key"),
    case("+sweep.foo=1", "sweep.foo", "unknown key"),
    case("optimizer=sgd +optimizer.momentum=0.5", "optimizer.momentum", "no such key for overfit.training.optimizers.SGD"),
    case("~seed", "seed", "is missing"),
    case("optimizer.name=lbfgs", "optimizer.name", "no such key for overfit.training.optimizers.SGD (allowed: lr, batch_size)"),
    case("optimizer.batch_size=abc", "optimizer.batch_size", "got 'abc' (allowed: an integer or null)"),
    case("features=polynomial features.order=1e9", "features.order", "got 1000000000.0 (allowed: an integer)"),
    case("trainer.max_epochs=1e23", "trainer.max_epochs", "got 1e+23 (allowed: an integer)"),
    case("trainer.eval_every_n_epochs=1e23", "trainer.eval_every_n_epochs", "got 1e+23 (allowed: an integer)"),
    # seed and experiment name (the name becomes a folder of the artifact store)
    case("seed=-1", "seed", "got -1 (allowed: an integer in [0, 4294967295])"),
    case("seed=abc", "seed", "got 'abc'"),
    case("seed=true", "seed", "got True"),
    case("seed=4294967296", "seed", "got 4294967296"),
    case("experiment_name=../../x", "experiment_name", "got '../../x' (allowed: letters, digits"),
    case("experiment_name=/tmp/elsewhere", "experiment_name", "got '/tmp/elsewhere'"),
    case("experiment_name=.hidden", "experiment_name", "not starting with ."),
    case("experiment_name=" + "x" * 201, "experiment_name", "at most 200 characters"),
    # the plumbing of a sweep's jobs is overfit's own; sizes and patience have bounds
    case("sweep.parent_run_id=a/b", "sweep.parent_run_id", "is set by overfit"),
    case("-m sweep.parent_run_id=0123456789abcdef0123456789abcdef features.order=1,2", "sweep.parent_run_id",
         "is set by overfit"),
    case("-m sweep.plan=README.md sweep.unit=0", "sweep.plan", "is set by overfit"),
    case("sweep.unit=0", "sweep.unit", "is set by overfit"),
    case("+sweep.axes=[seed]", "sweep.axes", "is set by overfit"),
    case("-m features=polynomial features.order=range(0,100000)", "sweep.max_points",
         "the sweep has 100,000 points, more than the limit of 10,000"),
    case("-m seed=range(0,1000000000000)", "sweep.max_points", "1,000,000,000,000 points"),
    case("-m seed=0,1,2 sweep.max_points=2", "sweep.max_points", "more than the limit of 2"),
    case("sweep.max_points=0", "sweep.max_points", "got 0"),
    case("tracking.retry_seconds=0", "tracking.retry_seconds", "got 0"),
    case("tracking.retry_seconds=nan", "tracking.retry_seconds", "got nan"),
    case("hydra.run.dir=/proc/no/such", "hydra.run.dir", "cannot create /proc/no/such"),
    case("-m hydra.sweep.dir=/proc/no/such seed=1,2", "hydra.sweep.dir", "cannot create /proc/no/such"),
    # NaN, inf and out-of-range numbers, group by group
    case("dataset.noise=nan", "dataset.noise", "got nan (allowed: a finite number"),
    case("dataset.x_min=-inf", "dataset.x_min", "got -inf"),
    case("dataset.x_max=nan", "dataset.x_max", "got nan"),
    case("dataset=digits dataset.val_fraction=nan", "dataset.val_fraction", "is not a fraction"),
    case("dataset=digits dataset.test_fraction=inf", "dataset.test_fraction", "is not a fraction"),
    case("regularizer.strength=-1", "regularizer.strength", "must be ≥ 0"),
    case("regularizer=l2 regularizer.strength=nan", "regularizer.strength", "got nan"),
    case("regularizer=elastic_net regularizer.beta=null", "regularizer.beta", "needs beta"),
    case("regularizer=elastic_net regularizer.beta=-inf", "regularizer.beta", "got -inf"),
    case("regularizer=max_norm regularizer.c=0", "regularizer.c", "must be > 0"),
    case("regularizer=max_norm regularizer.c=nan", "regularizer.c", "got nan"),
    case("optimizer.lr=0", "optimizer.lr", "got 0.0 (allowed: a number in (0, 3.4e+38]"),
    case("optimizer=adam optimizer.lr=inf", "optimizer.lr", "got inf"),
    case("optimizer.lr=1e308", "optimizer.lr", "got 1e+308"),
    case("-m optimizer.lr=0.1,1e308", "optimizer.lr", "got 1e+308"),
    case("optimizer.batch_size=0", "optimizer.batch_size", "got 0"),
    case("optimizer=adam optimizer.beta1=2", "optimizer.beta1", "got 2.0 (allowed: a number in [0, 1)"),
    case("optimizer=adam optimizer.beta2=nan", "optimizer.beta2", "got nan"),
    case("optimizer=momentum optimizer.momentum=nan", "optimizer.momentum", "got nan"),
    case("optimizer=lbfgs optimizer.max_iter=100000", "optimizer.max_iter", "an integer in [1, 10,000]"),
    case("model=mlp model.activation=softplus", "model.activation", "unknown activation 'softplus'"),
    case("model=mlp model.hidden=[0]", "model.hidden", "got [0]"),
    case("model=mlp model.dropout=1", "model.dropout", "got 1.0 (allowed: 0 ≤ dropout < 1)"),
    case("model=mlp model.dropout=nan", "model.dropout", "got nan"),
    case("model=mlp model.batch_norm=true optimizer.batch_size=19", "model.batch_norm", "on 20 training points"),
    case("features=polynomial features.order=-2", "features.order", "must be an integer ≥ 0"),
    case("features=polynomial features.order=1000000000", "features.order", "≤ 1000"),
    case("dataset=digits features=polynomial features.order=5 features.basis=legendre", "features.order",
         "gives 11,238,512 features"),
    case("features=seed_transform", "dataset.standardize", "seed_transform works on the raw coordinates"),
    case("loss=log_likelihood", "loss", "classification loss"),
    case("loss=hinge dataset=digits", "loss", "hinge is binary"),
    # epochs, accelerator and devices against what the machine has
    case("trainer.max_epochs=100000000", "trainer.max_epochs", "an integer in [1, 10,000,000]"),
    case("trainer.checkpoint_every_seconds=nan", "trainer.checkpoint_every_seconds", "got nan"),
    case("trainer.precision=32", "trainer.precision", "got 32 (allowed: text)"),
    case("trainer.precision=bf32", "trainer.precision", "unknown precision 'bf32'"),
    case("features=seed_transform dataset.standardize=false", "features", "seed_transform needs 2-D inputs"),
    case("trainer.accelerator=tpu9", "trainer.accelerator", "unknown accelerator 'tpu9'"),
    case("trainer.accelerator=gpu", "trainer.accelerator", "gpu needs a CUDA GPU", skip=CUDA),
    case("trainer.accelerator=mps", "trainer.accelerator", "mps needs an Apple MPS GPU", skip=MPS),
    case("trainer.devices=abc", "trainer.devices", "got 'abc' (allowed: a positive integer"),
    case("trainer.devices=0", "trainer.devices", "got 0"),
    case(f"trainer.accelerator=cpu trainer.devices={TOO_MANY_CPUS}", "trainer.devices", "CPU cores"),
    case("trainer.accelerator=cpu trainer.devices=[0,1]", "trainer.devices", "on the CPU"),
    # sizes that cannot fit in this machine's memory
    case(f"dataset.n_train={HUGE}", "dataset.n_train", "GB, more than the"),
    case(f"dataset.n_val={HUGE}", "dataset.n_val", "GB, more than the"),
    case("dataset.n_train=100000000 features=polynomial features.order=1000 features.basis=legendre",
         "optimizer.batch_size", "a batch of 100,000,000 rows"),
    case("dataset.n_train=100000000 features=polynomial features.order=1000", "features.basis",
         "whitening 100,000,000 rows"),
    case("model=mlp model.hidden=[100000000,100000000]", "model.hidden", "GB for their weights"),
    case("optimizer=lbfgs optimizer.history_size=10000 model=mlp model.hidden=[4096,4096]",
         "optimizer.history_size", "16,793,601 parameters"),
    # image files: missing, corrupt, too few, or a download without a network
    case("dataset=mnist", "dataset.root", "MNIST not found under"),
    case("dataset=mnist dataset.download=true", "dataset.download", "no network: cannot reach", offline),
    case("dataset=mnist", "dataset.val_size", "leaves none of the 200 training images", mnist),
    case("dataset=mnist dataset.val_size=30 dataset.n_train=171", "dataset.n_train",
         "exceeds the 170 training points", mnist),
    case("dataset=mnist dataset.val_size=30", "dataset.root", "train-images-idx3-ubyte is empty",
         damaged("MNIST", IMAGES, lambda data: b"")),
    case("dataset=mnist dataset.val_size=30 dataset.download=true", "dataset.root", "its header says",
         damaged("MNIST", IMAGES, lambda data: data[:-100])),
    case("dataset=mnist dataset.val_size=30", "dataset.root", "magic number 0x00000803, not 0x00000801",
         damaged("MNIST", LABELS, lambda data: b"\0\0\x08\x03" + data[4:])),
    case("dataset=fashion_mnist dataset.val_size=30", "dataset.root", "FashionMNIST/raw are corrupt",
         damaged("FashionMNIST", "FashionMNIST/raw/t10k-labels-idx1-ubyte", lambda data: data[:6])),
    case("dataset=cifar10 dataset.val_size=30", "dataset.root", "data_batch_2 is not a readable pickle",
         damaged("cifar10", "cifar-10-batches-py/data_batch_2", lambda data: data[: len(data) // 3])),
    # sweeps: one bad point among good ones stops the whole sweep before its parent run
    case("-m features=polynomial features.order=1,3,2000", "features.order", "got 2000"),
    case("-m dataset.noise=0.1,nan", "dataset.noise", "got nan"),
    case("-m seed=0,1,-1", "seed", "got -1"),
    case("-m optimizer=adam optimizer.beta1=0.5,0.9,1.5", "optimizer.beta1", "got 1.5"),
]


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    """A store that already holds an experiment and a finished run: bad input must leave both as they are."""
    db = tmp_path_factory.mktemp("filled") / "mlflow.db"
    shutil.copy(empty_store, db)
    client = MlflowClient(f"sqlite:///{db}")
    run = client.create_run(client.create_experiment("overfit"))
    client.log_metric(run.info.run_id, "train/loss", 0.5, step=1)
    client.set_terminated(run.info.run_id, "FINISHED")
    return db


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("args, key, fragment, setup", CASES)
def test_bad_input_is_one_line_exit_2_and_no_run(args: str, key: str, fragment: str, setup: Setup | None,
                                                 root: Path, filled_store: Path, capsys) -> None:
    db = root / "mlruns" / "mlflow.db"
    shutil.copy(filled_store, db)
    if setup is not None:
        setup(root)
    before, files = digest(db), tree(root)

    code, out, err = run_cli(capsys, "train", *shlex.split(args))

    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"overfit: error: {key}: ") and fragment in lines[0], lines[0]
    assert digest(db) == before  # the store, byte for byte
    assert tree(root) == files  # no Hydra output folder, no artifacts, no journal: nothing ran
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as store:  # read-only: the check changes nothing
        assert sorted(name for (name,) in store.execute("SELECT name FROM experiments")) == ["Default", "overfit"]
        assert store.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]


def test_the_table_covers_every_hole_of_the_probe() -> None:
    """Issue 9's list, one row at least for each, and at least 60 rows in all."""
    typed = " | ".join(p.values[0] for p in CASES)
    for hole in ("optimizer.beta1=2", "dataset.noise=nan", "seed=-1", "seed=abc", "trainer.accelerator=gpu",
                 "trainer.devices=abc", "dataset.download=true", f"dataset.n_train={HUGE}",
                 "trainer.max_epochs=1e23", "+foo=1", "experiment_name=../../x", "experiment_name=/tmp"):
        assert hole in typed, hole
    assert sum(p.values[3] is not None and p.values[3] is not offline for p in CASES) >= 6  # corrupt or short files
    assert len(CASES) >= 60


def test_the_command_exits_with_mains_code() -> None:
    """``overfit`` (cli.run: main, then a quick exit) hands main's code to the shell, as ``python -m overfit``."""
    for args, code in ((["--help"], 0), (["no-such-command"], 2)):
        done = subprocess.run([sys.executable, "-m", "overfit", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr[-2000:]
    assert done.stderr.count("overfit: error: unknown command 'no-such-command'") == 1
