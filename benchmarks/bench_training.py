"""How much does the pipeline cost over a bare PyTorch loop doing the same work?

Both sides train the same network (standardise → model) on the same
device-resident tensors with the same optimizer, batch size and epochs, and
evaluate train + validation error every epoch. The bare loop has no Lightning,
no MLflow, no Hydra. Reported: seconds for each and their ratio, in one run on
one machine, so the ratio is meaningful where absolute times are not.

    .venv/bin/python benchmarks/bench_training.py [--device cpu|cuda] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

CASES = {
    # name: overrides; the bare loop reads the same composed config
    "digits-mlp-minibatch": ["dataset=digits", "model=mlp", "loss=log_likelihood", "optimizer=sgd", "optimizer.batch_size=64"],
    "digits-linear-fullbatch": ["dataset=digits", "model=linear", "loss=log_likelihood", "optimizer=gd", "optimizer.lr=0.5"],
    "polynomial-order12-gd": ["dataset=polynomial", "features=polynomial", "features.order=12"],
}


def bare_loop(cfg, device: str) -> float:
    """The same work written by hand: the reference the pipeline is measured against."""
    from overfit.data import datasets
    from overfit.training.task import build_learner

    torch.manual_seed(cfg.seed)
    splits = datasets.load(cfg.dataset, cfg.seed).to(device)
    learner = build_learner(cfg, splits)
    net, loss_fn = learner.net.to(device), learner.loss
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optimizer.lr)
    n, bs = len(splits.x_train), cfg.optimizer.batch_size or len(splits.x_train)
    errors = []
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        net.train()
        for idx in torch.randperm(n, device=device).split(bs):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(splits.x_train[idx]), splits.y_train[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for x, y in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val)):
                scores = net(x)
                errors.append(loss_fn(scores, y))
                errors.append((loss_fn.predict(scores) != y).float().mean() if splits.task == "classification" else ((scores - y) ** 2).mean())
    torch.stack(errors).cpu()  # one sync at the end, as metrics would be read
    return time.perf_counter() - start


def pipeline_fit(cfg, device: str, root: Path) -> tuple[float, float]:
    """(seconds in trainer.fit, seconds for the whole run incl. MLflow, test and picture)."""
    import lightning as L

    from overfit.training import task as training

    fit_time = {}
    real_fit = L.Trainer.fit

    def timed_fit(self, *args, **kwargs):
        start = time.perf_counter()
        real_fit(self, *args, **kwargs)
        fit_time["s"] = time.perf_counter() - start

    L.Trainer.fit = timed_fit
    try:
        start = time.perf_counter()
        training.train(cfg, [], root / "out")
        total = time.perf_counter() - start
    finally:
        L.Trainer.fit = real_fit
    return fit_time["s"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--case", choices=list(CASES), action="append")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="overfit-bench-"))
    os.environ["OVERFIT_ROOT"] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from overfit.config import compose_jobs

    accelerator = "gpu" if args.device == "cuda" else "cpu"
    print(f"device={args.device} epochs={args.epochs} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'case':26s} {'bare loop s':>12s} {'overfit fit s':>14s} {'ratio':>7s} {'whole run s':>12s}")
    for name in args.case or CASES:
        overrides = [*CASES[name], f"trainer.max_epochs={args.epochs}", f"trainer.accelerator={accelerator}",
                     "trainer.checkpoint=false"]
        cfg = compose_jobs(overrides, multirun=False)[0]
        bare_loop(cfg, args.device)  # warm-up: kernels, allocator, lazy imports
        bare = min(bare_loop(cfg, args.device) for _ in range(3))
        fit, total = pipeline_fit(cfg, args.device, root)
        print(f"{name:26s} {bare:12.3f} {fit:14.3f} {fit / bare:7.2f} {total:12.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
