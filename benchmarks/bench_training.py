"""What one point costs in overfit against a bare PyTorch loop doing the same work, on the project's defaults.

    .venv/bin/python benchmarks/bench_training.py [--device cpu|cuda] [--epochs N] [--repeats R]

The bare loops are written here, independently of the project: scikit-learn's
data, `nn.Linear` / `nn.Sequential`, `torch.optim`, PyTorch's own losses, the
polynomial features computed once as a plain Legendre basis. Each does what an
overfit run does per epoch — train, then evaluate loss and error on the
training and validation sets and read them on the host (they would be logged) —
and tests at the end. overfit's side is `overfit.training.task.fit` with its
MLflow logger on (a real run in a private store); the figure is the time inside
`Trainer.fit`. Runs are interleaved and the medians compared, in one process.
"""

from __future__ import annotations

import argparse
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


def bare(case: str, epochs: int, device: str) -> float:
    """Seconds of the training loop (data prepared outside, as overfit's fit receives it)."""
    torch.manual_seed(0)
    regression = case.startswith("polynomial")
    x_tr, x_va, x_te, y_tr, y_va, y_te = _polynomial(0, device) if regression else _digits(0, device)
    width = x_tr.shape[1]
    if case.startswith("digits MLP"):
        net = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        batch = 64
    else:
        net = nn.Linear(width, 1 if regression else 10).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.1 if regression else 0.5)
        batch = len(x_tr)
    loss_fn: Callable = F.mse_loss if regression else F.cross_entropy
    gen = torch.Generator(device).manual_seed(0)

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        scores = net(x)
        error = loss_fn(scores, y) if regression else (scores.argmax(1) != y).float().mean()
        return [loss_fn(scores, y), error]

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    history = []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x_tr), device=device, generator=gen) if batch < len(x_tr) else None
        for idx in (order.split(batch) if order is not None else [slice(None)]):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            history.append(torch.stack([*evaluate(x_tr, y_tr), *evaluate(x_va, y_va)]).tolist())  # read, to log
    with torch.no_grad():
        torch.stack(evaluate(x_te, y_te)).tolist()
    return time.perf_counter() - start


# --- overfit -----------------------------------------------------------------------------------
def overfit_fit(overrides: list[str], root: Path) -> float:
    """Seconds inside Trainer.fit of a real overfit run (logger on, private store)."""
    import lightning as L

    from overfit.compose import compose_jobs
    from overfit.tracking import runs
    from overfit.tracking.store import store_for
    from overfit.training.task import fit

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
    try:
        fit(cfg, root / run_id / "checkpoints", store, run_id, name="bench")
    finally:
        L.Trainer.fit = real
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
    print(f"{'case':32s} {'bare loop s':>11s} {'overfit fit s':>13s} {'ratio':>6s}")
    for name, overrides in CASES.items():
        overrides = [*overrides, f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={accelerator}"]
        bare(name, args.epochs, args.device), overfit_fit(overrides, root)  # warm-up: kernels, lazy imports
        times: dict[str, list[float]] = {"bare": [], "overfit": []}
        for _ in range(args.repeats):
            times["bare"].append(bare(name, args.epochs, args.device))
            times["overfit"].append(overfit_fit(overrides, root))
        b, o = statistics.median(times["bare"]), statistics.median(times["overfit"])
        print(f"{name:32s} {b:11.3f} {o:13.3f} {o / b:6.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
