"""The 180-point polynomial study three ways, in one run: overfit vectorized, overfit one at a time, a plain loop.

    .venv/bin/python benchmarks/bench_sweep.py [--device cpu|cuda] [--orders 12]

orders 1–12 × λ ∈ {0, 1e-4, 1e-2, 1, 10} × lr ∈ {0.01, 0.1, 0.5}, polynomial data, L2, gradient
descent for 100 epochs. Each way runs as a user runs it: a fresh process, imports included, on a
fresh store; the end-to-end seconds are the parent's clock around that process. Training seconds
(inside ``Trainer.fit``, or the plain loop's own training) are reported by the child. The plain
loop is written here, with nothing from overfit: Legendre features whitened on the training
inputs, ``nn.Linear``, ``torch.optim.SGD``, train and validation error read every epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 100
LAMBDAS = (0.0, 1e-4, 1e-2, 1.0, 10.0)
RATES = (0.01, 0.1, 0.5)


def sweep_args(orders: int, vectorize: bool, device: str) -> list[str]:
    return ["train", "-m", "dataset=polynomial", "features=polynomial", "regularizer=l2",
            f"features.order={','.join(str(o) for o in range(1, orders + 1))}",
            f"regularizer.strength={','.join(str(v) for v in LAMBDAS)}",
            f"optimizer.lr={','.join(str(v) for v in RATES)}", f"trainer.max_epochs={EPOCHS}",
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"sweep.vectorize={str(vectorize).lower()}"]


# --- children: one way each, in its own process --------------------------------------------------
def child_overfit(args: list[str]) -> dict[str, float]:
    """Run the sweep as the CLI would, adding up the seconds spent inside Trainer.fit."""
    import lightning as L

    from overfit import cli

    spent = [0.0]
    real = L.Trainer.fit

    def timed(self, *a, **k):
        start = time.perf_counter()
        try:
            return real(self, *a, **k)
        finally:
            spent[0] += time.perf_counter() - start

    L.Trainer.fit = timed
    code = cli.main(args)
    return {"training": spent[0], "exit": code}


def child_plain(orders: int, device: str) -> dict[str, float]:
    """The same 180 points with a bare PyTorch loop, one model after another."""
    import torch
    from torch import nn

    spent = 0.0
    f = lambda x: 1.5 * x**3 - 0.5 * x**2 - x + 0.3  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    data = []
    for n in (20, 100, 1000):
        x = 2 * torch.rand(n, 1, generator=gen) - 1
        data.append((x, f(x) + 0.2 * torch.randn(n, 1, generator=gen)))
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = data
    low, high = x_tr.min(), x_tr.max()
    for order in range(1, orders + 1):

        def legendre(x: torch.Tensor) -> torch.Tensor:
            u = (2 * x - (low + high)) / (high - low)
            p = [torch.ones_like(u), u]
            for m in range(1, order):
                p.append(((2 * m + 1) * u * p[m] - m * p[m - 1]) / (m + 1))
            return torch.cat(p[1 : order + 1], 1)

        phi_tr = legendre(x_tr)
        mean = phi_tr.mean(0)
        e, v = torch.linalg.eigh(((phi_tr - mean).T @ (phi_tr - mean) / len(phi_tr)).double())
        keep = e > 1e-10 * e.max()
        whiten = (v[:, keep] / e[keep].sqrt()).float()
        feats = [((legendre(x) - mean) @ whiten).to(device) for x in (x_tr, x_va, x_te)]
        ys = [y.to(device) for y in (y_tr, y_va, y_te)]
        for lam in LAMBDAS:
            for lr in RATES:
                torch.manual_seed(0)
                start = time.perf_counter()
                model = nn.Linear(feats[0].shape[1], 1).to(device)
                opt = torch.optim.SGD(model.parameters(), lr=lr)
                history = []
                for _ in range(EPOCHS):
                    opt.zero_grad(set_to_none=True)
                    loss = ((model(feats[0]) - ys[0]) ** 2).mean() + lam * (model.weight**2).sum()
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        history.append(torch.stack([((model(feats[i]) - ys[i]) ** 2).mean() for i in (0, 1)]).tolist())
                with torch.no_grad():
                    ((model(feats[2]) - ys[2]) ** 2).mean().item()
                spent += time.perf_counter() - start
    return {"training": spent, "exit": 0}


# --- the parent ----------------------------------------------------------------------------------
def run_child(way: str, orders: int, device: str) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="overfit-bench-sweep-"))
    env = {**os.environ, "OVERFIT_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", way, "--orders", str(orders), "--device", device],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{way} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--orders", type=int, default=12)
    parser.add_argument("--child", choices=("vectorized", "one-at-a-time", "plain"))
    args = parser.parse_args()
    if args.child:
        result = (child_plain(args.orders, args.device) if args.child == "plain"
                  else child_overfit(sweep_args(args.orders, args.child == "vectorized", args.device)))
        print(json.dumps(result))
        return
    points = args.orders * len(LAMBDAS) * len(RATES)
    print(f"{points} points ({args.orders} orders × {len(LAMBDAS)} λ × {len(RATES)} lr), {EPOCHS} epochs, "
          f"device={args.device}, {os.cpu_count()} CPUs")
    results = {way: run_child(way, args.orders, args.device) for way in ("vectorized", "one-at-a-time", "plain")}
    print(f"{'way':16s} {'end to end s':>12s} {'s/point':>8s} {'training s':>10s} {'training s/point':>16s} {'exit':>4s}")
    for way, r in results.items():
        print(f"{way:16s} {r['wall']:12.1f} {r['wall'] / points:8.3f} {r['training']:10.2f} "
              f"{r['training'] / points:16.4f} {int(r['exit']):4d}")
    vec, one, plain = results["vectorized"], results["one-at-a-time"], results["plain"]
    print(f"vectorized vs one at a time: end to end {one['wall'] / vec['wall']:.1f}× faster, "
          f"training per point {one['training'] / vec['training']:.1f}× less")
    print(f"vectorized vs the plain loop: end to end {vec['wall'] / plain['wall']:.2f}×, "
          f"training {vec['training'] / plain['training']:.2f}×")


if __name__ == "__main__":
    main()
