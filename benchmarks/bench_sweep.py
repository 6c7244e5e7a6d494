"""The 180-point polynomial study against its floors, in one run: overfit vectorized and one at a time, a plain
loop, an MLflow-only program writing the same runs, the import floor; and how the cost grows with the points.

    .venv/bin/python benchmarks/bench_sweep.py [--device cpu|cuda] [--orders 12] [--series]

orders 1–12 × λ ∈ {0, 1e-4, 1e-2, 1, 10} × lr ∈ {0.01, 0.1, 0.5}, polynomial data, L2, gradient
descent for 100 epochs. Each way runs as a user runs it: a fresh process, imports included, on a
fresh store; the end-to-end seconds are the parent's clock around that process. Training seconds
(inside ``Trainer.fit``, or the plain loop's own training) are reported by the child. The plain
loop is written here, with nothing from overfit: Legendre features whitened on the training
inputs, ``nn.Linear``, ``torch.optim.SGD``, train and validation error read every epoch.

The MLflow-only floor (``child_floor``) is what tracking alone costs: MLflow's public client
writing exactly what overfit writes for the sweep — a parent, and per point a run with the same
params, tags, per-epoch metric rows, files, two images, datasets and its end — from forked
writer processes, as fast as the client goes, with no training at all. ``--series`` adds the
vectorized sweep at 12, 48, 180 and 720 points run as the ``overfit`` command itself (the slope is
the cost of one more point; 12 points are set against ``import mlflow, torch, lightning``); ``--large`` a 10,080-point one (12 orders × 35 λ
× 24 lr), its minutes and the peak memory of the sweep's process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 100
LAMBDAS = (0.0, 1e-4, 1e-2, 1.0, 10.0)
RATES = (0.01, 0.1, 0.5)


RATES_720 = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
LAMBDAS_10K = (0.0, *(round(10 ** (k / 5 - 6), 8) for k in range(34)))  # 0 and 34 values from 1e-6 to ~4
RATES_10K = tuple(round(0.02 * k, 2) for k in range(1, 25))  # 0.02 … 0.48
# points → (λ values, lr values, seeds): 12 orders each; every size one seed, so each has 12 distinct datasets
SIZES = {12: ((0.0,), (0.1,), 1), 48: (LAMBDAS[:4], RATES[:1], 1), 180: (LAMBDAS, RATES, 1), 720: (LAMBDAS, RATES_720, 1),
         10_080: (LAMBDAS_10K, RATES_10K, 1)}
WRITERS = 2  # the floor's forked writer processes


def sweep_args(orders: int, vectorize: bool, device: str, points: int = 180) -> list[str]:
    lambdas, rates, seeds = SIZES[points]
    return ["train", "-m", "dataset=polynomial", "features=polynomial", "regularizer=l2",
            f"features.order={','.join(str(o) for o in range(1, orders + 1))}",
            f"regularizer.strength={','.join(str(v) for v in lambdas)}",
            f"optimizer.lr={','.join(str(v) for v in rates)}", f"trainer.max_epochs={EPOCHS}",
            *([f"seed=range({seeds})"] if seeds > 1 else []),
            *([f"sweep.max_points={points}"] if points > 10_000 else []),  # beyond the default limit, on purpose
            f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"sweep.vectorize={str(vectorize).lower()}"]


# --- children: one way each, in its own process --------------------------------------------------
def child_overfit(args: list[str]) -> dict[str, float]:
    """Run the sweep as the CLI would, adding up the seconds spent inside Trainer.fit."""
    from overfit import cli

    cli.own_process()  # as the `overfit` command starts (overfit.cli.run), before any heavy import
    import lightning as L

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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the sweep's process, MiB (Linux: KiB)
    return {"training": spent[0], "exit": code, "peak_mib": peak}


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


def _floor_picture():
    """A picture like a point's (a 600×430 line plot), as RGB pixels: what the floor encodes per run."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(6, 4.3))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.linspace(-1, 1, 400)
    ax.plot(x, 1.5 * x**3 - 0.5 * x**2 - x + 0.3, "--k")
    ax.scatter(np.random.default_rng(0).uniform(-1, 1, 20), np.random.default_rng(1).normal(0, 0.5, 20))
    ax.set_title("features.order=3 λ=0.01 lr=0.1 · test error 0.04373")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _floor_write(uri: str, experiment: str, parent: str, points: list[int]) -> None:
    """One writer's share of the floor's runs (a forked process with a store of its own)."""
    import json as js
    import tempfile as tf

    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    rgb = _floor_picture()
    keys = ("train/loss", "train/objective", "train/error", "val/loss", "val/error")
    for num in points:
        tags = {"mlflow.parentRunId": parent, "overfit.kind": "point", "overfit.config_hash": f"{num:016x}",
                "overfit.code": "0" * 16, "overfit.owner": "0" * 12, "overfit.checkpoint": "/tmp/x", "host": "h",
                "pid": "1", "point": f"point {num}", "overrides": f"features.order={num % 12 + 1}",
                **{g: "x" for g in ("dataset", "features", "model", "loss", "regularizer", "optimizer")}}
        run_id = client.create_run(experiment, run_name=f"point {num}", tags=tags).info.run_id
        params = [Param(f"param.{i}", str(num * i)) for i in range(22)]
        now = int(time.time() * 1000)
        rows = [Metric(k, 1.0 / (e + 1), now, e) for e in range(1, EPOCHS + 1) for k in keys]
        rows += [Metric(k, 0.1, now, EPOCHS) for k in ("test/loss", "test/error", "generalization_gap")]
        client.log_batch(run_id, params=params, metrics=rows[:1000])
        for i in range(1000, len(rows), 1000):
            client.log_batch(run_id, metrics=rows[i:i + 1000])
        with tf.TemporaryDirectory() as tmp:
            for name, content in {"config.yaml": b"x" * 1200, "overrides.txt": b"x" * 80,
                                  "model/network.pt": b"x" * 6500, "model/model.json": b"x" * 300}.items():
                Path(tmp, name).parent.mkdir(parents=True, exist_ok=True)
                Path(tmp, name).write_bytes(content)
            client.log_artifacts(run_id, tmp)
        for key in ("fit", "learning_curve"):
            client.log_image(run_id, rgb, key=key, step=EPOCHS)
        client.log_inputs(run_id, [DatasetInput(Dataset("polynomial", f"{split:8s}"[:8], "code", js.dumps({"s": split}),
                                                        "{}", "{}"), [InputTag("mlflow.data.context", split)])
                                   for split in ("train", "validation", "test")])
        client.set_terminated(run_id)


def child_floor(points: int) -> dict[str, float]:
    """What tracking alone costs: the sweep's runs written with MLflow's client by forked writers, no training."""
    import multiprocessing

    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # as fast as the client goes: no usage reports either
    root = Path(os.environ["OVERFIT_ROOT"])
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(WRITERS) as pool:  # forked before any store is open
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.create_experiment("floor", artifact_location=str(root / "artifacts"))
        parent = client.create_run(experiment, run_name="sweep", tags={"overfit.kind": "sweep"}).info.run_id
        pool.starmap(_floor_write, [(uri, experiment, parent, list(range(w, points, WRITERS)))
                                    for w in range(WRITERS)])
        client.log_batch(parent, tags=[RunTag("mlflow.note.content", "a table " * 200)])
        client.log_image(parent, _floor_picture(), artifact_file="report/curves.png")
        client.set_terminated(parent)
    return {"training": 0.0, "exit": 0}


def child_imports() -> dict[str, float]:
    """The import floor: what any PyTorch + MLflow + Lightning program pays before its first line."""
    import lightning  # noqa: F401
    import mlflow  # noqa: F401
    import torch  # noqa: F401

    return {"training": 0.0, "exit": 0}


# --- the parent ----------------------------------------------------------------------------------
def run_child(way: str, orders: int, device: str, points: int = 180) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="overfit-bench-sweep-"))
    env = {**os.environ, "OVERFIT_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", way, "--orders", str(orders), "--device", device,
                          "--points", str(points)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{way} failed:\n{out.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "wall": wall}


def run_command(orders: int, device: str, points: int) -> float:
    """The vectorized sweep as a user types it (``python -m overfit train -m ...``): its seconds, end to end."""
    root = Path(tempfile.mkdtemp(prefix="overfit-bench-sweep-"))
    env = {**os.environ, "OVERFIT_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "overfit", *sweep_args(orders, True, device, points)], cwd=REPO,
                         env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if f"{points} points" not in out.stdout:
        raise RuntimeError(f"the {points}-point sweep failed:\n{out.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--orders", type=int, default=12)
    parser.add_argument("--child", choices=("vectorized", "one-at-a-time", "plain", "floor", "imports"))
    parser.add_argument("--points", type=int, default=180, choices=sorted(SIZES))
    parser.add_argument("--series", action="store_true", help="also the overfit command at 12 / 48 / 180 / 720 points")
    parser.add_argument("--large", action="store_true", help="also a 10,080-point sweep: its minutes and memory")
    args = parser.parse_args()
    if args.child:
        if args.child == "plain":
            result = child_plain(args.orders, args.device)
        elif args.child == "floor":
            result = child_floor(args.points)
        elif args.child == "imports":
            result = child_imports()
        else:
            result = child_overfit(sweep_args(args.orders, args.child == "vectorized", args.device, args.points))
            gc.freeze()  # and ends as the `overfit` command does (overfit.cli.run)
        print(json.dumps(result))
        return
    points = args.orders * len(LAMBDAS) * len(RATES)
    print(f"{points} points ({args.orders} orders × {len(LAMBDAS)} λ × {len(RATES)} lr), {EPOCHS} epochs, "
          f"device={args.device}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    results = {way: run_child(way, args.orders, args.device)
               for way in ("vectorized", "floor", "one-at-a-time", "plain", "imports")}
    print(f"{'way':16s} {'end to end s':>12s} {'s/point':>8s} {'training s':>10s} {'training s/point':>16s} {'exit':>4s}")
    for way, r in results.items():
        print(f"{way:16s} {r['wall']:12.1f} {r['wall'] / points:8.3f} {r['training']:10.2f} "
              f"{r['training'] / points:16.4f} {int(r['exit']):4d}")
    vec, one, plain = results["vectorized"], results["one-at-a-time"], results["plain"]
    print(f"vectorized vs one at a time: end to end {one['wall'] / vec['wall']:.1f}× faster, "
          f"training per point {one['training'] / vec['training']:.1f}× less")
    print(f"vectorized vs the plain loop: end to end {vec['wall'] / plain['wall']:.2f}×, "
          f"training {vec['training'] / plain['training']:.2f}×")
    floor = results["floor"]
    print(f"vectorized vs the MLflow-only floor ({WRITERS} forked writers): {vec['wall'] / floor['wall']:.2f}× "
          f"({vec['wall']:.1f} s vs {floor['wall']:.1f} s)")
    if args.large:
        large = run_child("vectorized", args.orders, args.device, 10_080)
        print(f"vectorized, 10080 points: {large['wall'] / 60:.1f} min end to end, "
              f"{1000 * (large['wall'] - vec['wall']) / (10_080 - 180):.0f} ms per point over 180, "
              f"peak memory of the sweep's process {large['peak_mib']:.0f} MiB")
    if not args.series:
        return
    series = {n: run_command(args.orders, args.device, n) for n in (12, 48, 180, 720)}  # the command itself
    floor_720 = run_child("floor", args.orders, args.device, 720)
    for n in (12, 48, 180, 720):
        print(f"vectorized (the overfit command), {n:4d} points: {series[n]:6.1f} s end to end")
    slope = (series[720] - series[180]) / (720 - 180)
    floor_slope = (floor_720["wall"] - floor["wall"]) / (720 - 180)
    print(f"each extra point (180 → 720): {1000 * slope:.0f} ms; a 10,000-point study ≈ "
          f"{(series[180] + slope * (10_000 - 180)) / 60:.1f} min")
    print(f"the MLflow-only floor: 720 points {floor_720['wall']:.1f} s, each extra point {1000 * floor_slope:.0f} ms; "
          f"overfit's extra point is {slope / floor_slope:.2f}× the floor's")
    imports = results["imports"]
    print(f"12-point sweep vs `import mlflow, torch, lightning`: {series[12] / imports['wall']:.2f}× "
          f"({series[12]:.1f} s vs {imports['wall']:.1f} s)")


if __name__ == "__main__":
    main()
