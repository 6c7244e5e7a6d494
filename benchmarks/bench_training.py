"""What one point costs in overfit against a bare PyTorch loop doing the same work, on the project's defaults.

    .venv/bin/python benchmarks/bench_training.py [--device cpu|cuda] [--epochs N] [--repeats R]

The bare loops are written here, independently of the project: scikit-learn's
data, `nn.Linear` / `nn.Sequential`, `torch.optim`, PyTorch's own losses, the
polynomial features computed once as a plain Legendre basis. Each does what an
overfit run does per epoch — train, then evaluate loss and error on the
training and validation sets and read them on the host (they would be logged) —
and tests at the end. overfit's side is `overfit.training.fit.fit` with its
MLflow logger on (a real run in a private store); the figure is the time inside
`Trainer.fit`. A third column, the Lightning floor, is the bare loop's work in
a minimal LightningModule (no logger, checkpoint or callback): what Lightning's
loop alone adds. Runs are interleaved and the medians compared, in one process.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CASES = {
    # name: (overrides of the project's defaults, the bare loop)
    "digits MLP, Adam batch 64": ["dataset=digits", "model=mlp", "loss=log_likelihood"],
    "digits linear, GD full batch": ["dataset=digits", "loss=log_likelihood", "optimizer=gd", "optimizer.lr=0.5"],
    "polynomial order 12, GD": ["dataset=polynomial", "features=polynomial", "features.order=12"],
}


# --- the bare loops ----------------------------------------------------------------------
def _digits(seed: int, device: str) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = data.data / 16.0, data.target
    n = len(y)
    rest, test = train_test_split(np.arange(n), test_size=round(0.2 * n), stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=round(0.2 * n), stratify=y[rest], random_state=seed)
    mean, std = x[train].mean(0), x[train].std(0)
    std[std < 1e-8] = 1.0
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    xs = [t((x[i] - mean) / std).float() for i in (train, val, test)]
    ys = [t(y[i]).long() for i in (train, val, test)]
    return (*xs, *ys)


def _polynomial(seed: int, device: str, order: int = 12) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    f = lambda x: 1.5 * x**3 - 0.5 * x**2 - x + 0.3  # noqa: E731
    xs, ys = [], []
    for n in (20, 100, 1000):
        x = 2 * torch.rand(n, 1, generator=gen) - 1
        xs.append(x)
        ys.append(f(x) + 0.2 * torch.randn(n, 1, generator=gen))
    low, high = xs[0].min(), xs[0].max()

    def legendre(x: torch.Tensor) -> torch.Tensor:
        u = (2 * x - (low + high)) / (high - low)
        p = [torch.ones_like(u), u]
        for m in range(1, order):
            p.append(((2 * m + 1) * u * p[m] - m * p[m - 1]) / (m + 1))
        return torch.cat(p[1:], 1)

    phis = [legendre(x) for x in xs]
    mean = phis[0].mean(0)
    e, v = torch.linalg.eigh(((phis[0] - mean).T @ (phis[0] - mean) / 20).double())
    keep = e > 1e-10 * e.max()
    whiten = (v[:, keep] / e[keep].sqrt()).float()
    feats = [((p - mean) @ whiten).to(device) for p in phis]
    return (*feats, *(y.to(device) for y in ys))


class Problem:
    """One case's data, network, optimizer and loss, built the same way for the bare loop and the floor."""

    def __init__(self, case: str, device: str) -> None:
        torch.manual_seed(0)
        self.regression = case.startswith("polynomial")
        self.device = device
        data = _polynomial(0, device) if self.regression else _digits(0, device)
        self.x_tr, self.x_va, self.x_te, self.y_tr, self.y_va, self.y_te = data
        width = self.x_tr.shape[1]
        if case.startswith("digits MLP"):
            self.net = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
            self.batch = 64
        else:
            self.net = nn.Linear(width, 1 if self.regression else 10).to(device)
            self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1 if self.regression else 0.5)
            self.batch = len(self.x_tr)
        self.loss_fn: Callable = F.mse_loss if self.regression else F.cross_entropy
        self.gen = torch.Generator(device).manual_seed(0)

    def batches(self) -> list:
        """One epoch's index sets: slices of a fresh permutation, or everything (full batch)."""
        if self.batch >= len(self.x_tr):
            return [slice(None)]
        return list(torch.randperm(len(self.x_tr), device=self.device, generator=self.gen).split(self.batch))

    def step(self, idx: slice | torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss_fn(self.net(self.x_tr[idx]), self.y_tr[idx]).backward()
        self.opt.step()

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        scores = self.net(x)
        error = self.loss_fn(scores, y) if self.regression else (scores.argmax(1) != y).float().mean()
        return [self.loss_fn(scores, y), error]

    @torch.no_grad()
    def epoch_metrics(self) -> list[float]:
        """Train and validation loss and error, read on the host (they would be logged)."""
        return torch.stack([*self.evaluate(self.x_tr, self.y_tr), *self.evaluate(self.x_va, self.y_va)]).tolist()

    @torch.no_grad()
    def test_metrics(self) -> list[float]:
        return torch.stack(self.evaluate(self.x_te, self.y_te)).tolist()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def bare(case: str, epochs: int, device: str) -> float:
    """Seconds of the training loop (data prepared outside, as overfit's fit receives it)."""
    p = Problem(case, device)
    p.sync()
    start = time.perf_counter()
    history = []
    for _ in range(epochs):
        p.net.train()
        for idx in p.batches():
            p.step(idx)
        p.net.eval()
        history.append(p.epoch_metrics())
    p.test_metrics()
    p.sync()
    return time.perf_counter() - start


def lightning_floor(case: str, epochs: int, device: str) -> float:
    """Seconds of ``Trainer.fit`` for the bare loop's work in a minimal LightningModule, one step per epoch.

    What Lightning's loop alone costs (hooks, progress, optimizer wrapper) on the bare loop's maths, with
    no logger, checkpoint or callback: the least any Lightning module training this way can take. overfit
    trains one process the same way (manual optimization, an epoch per step).
    """
    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # as overfit's trainer: no banners
    p = Problem(case, device)

    class Epochs:
        def __len__(self) -> int:
            return 1

        def __iter__(self):
            yield p.batches()

    class Minimal(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = p.net
            self.automatic_optimization = False

        def training_step(self, batch: list, batch_idx: int) -> None:
            opt = self.optimizers()
            for idx in batch:
                opt.zero_grad(set_to_none=True)
                self.manual_backward(p.loss_fn(self.net(p.x_tr[idx]), p.y_tr[idx]))
                opt.step()

        def on_train_epoch_end(self) -> None:
            self.net.eval()
            p.epoch_metrics()
            self.net.train()

        def on_train_end(self) -> None:
            p.test_metrics()  # before the trainer's teardown moves the module back to the CPU

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return p.opt

        def train_dataloader(self) -> Epochs:
            return Epochs()

    trainer = L.Trainer(max_epochs=epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    p.sync()
    start = time.perf_counter()
    trainer.fit(Minimal())
    p.sync()
    return time.perf_counter() - start


# --- overfit -----------------------------------------------------------------------------------
def overfit_fit(overrides: list[str], root: Path) -> float:
    """Seconds inside Trainer.fit of a real overfit run (logger on, private store)."""
    import lightning as L

    from overfit.compose import compose_jobs
    from overfit.tracking import runs
    from overfit.tracking.logger import RunLogger
    from overfit.tracking.store import store_for
    from overfit.tracking.writer import MetricWriter
    from overfit.training.fit import fit

    cfg = compose_jobs(overrides, multirun=False)[0]
    store = store_for(cfg.tracking.uri)
    run_id = runs.create(store, store.experiment("bench"), "point", "bench")
    seconds = {}
    real = L.Trainer.fit

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        real(self, *args, **kwargs)
        seconds["fit"] = time.perf_counter() - start

    L.Trainer.fit = timed
    writer = MetricWriter(store)
    try:
        fit(cfg, root / run_id / "checkpoints", RunLogger(writer, run_id), owner=run_id)
        writer.flush()
    finally:
        L.Trainer.fit = real
        writer.close()
    return seconds["fit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="overfit-bench-"))
    os.environ["OVERFIT_ROOT"] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    print(f"device={args.device} epochs={args.epochs} repeats={args.repeats} (medians, interleaved) "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'case':32s} {'bare loop s':>11s} {'Lightning floor s':>17s} {'overfit fit s':>13s} "
          f"{'ratio':>6s} {'floor ratio':>11s}")
    for name, overrides in CASES.items():
        overrides = [*overrides, f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={accelerator}"]
        ways = {"bare": lambda: bare(name, args.epochs, args.device),
                "floor": lambda: lightning_floor(name, args.epochs, args.device),
                "overfit": lambda: overfit_fit(overrides, root)}
        for way in ways.values():  # warm-up: kernels, lazy imports
            way()
        times: dict[str, list[float]] = {key: [] for key in ways}
        for _ in range(args.repeats):
            for key, way in ways.items():
                times[key].append(way())
        b, f, o = (statistics.median(times[key]) for key in ways)
        print(f"{name:32s} {b:11.3f} {f:17.3f} {o:13.3f} {o / b:6.2f} {f / b:11.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
