"""What replicates cost: a point trained on 20 seeds as one batched model, against the same point trained once.

    .venv/bin/python benchmarks/bench_replicates.py [--replicates 20] [--repeats 3] [--device cpu|cuda]

Replicates differ in their data (each seed redraws the training and validation sets), their
initialisation and their shuffling, not in shape, so a sweep's seeds train as one batched
model with a leading data dimension (:mod:`overfit.training.vectorized`). The figure is the
wall time of ``train_group`` on R seeds over the time of the one-point path
(:func:`overfit.training.fit.fit`) on one seed, both without MLflow, medians of interleaved
runs in one process. Before timing, every replicate of a float64 group is checked against
the same replicate trained alone: the relative difference of the final train objective must
stay within 1e-5 (the vectorized path's exactness guarantee).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "polynomial order 12, GD full batch": ["dataset=polynomial", "features=polynomial", "features.order=12"],
    "digits MLP [64], Adam batch 64": ["dataset=digits", "model=mlp", "model.hidden=[64]", "loss=log_likelihood",
                                       "trainer.max_epochs=20"],
}


def configs(case: str, seeds: range, *extra: str) -> list:
    from overfit.compose import compose_jobs

    return compose_jobs([*CASES[case], f"seed=range({seeds.start},{seeds.stop})", *extra], multirun=True)


def exactness(case: str, replicates: int, device: str) -> float:
    """The largest relative difference in the final train objective between a group's replicate and it alone."""
    from overfit.training.fit import fit
    from overfit.training.vectorized import train_group

    cfgs = configs(case, range(replicates), "trainer.precision=64-true", "trainer.max_epochs=5",
                   f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}")
    group = train_group(cfgs, device=device)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for cfg, result in zip(cfgs, group):
            alone = fit(cfg, Path(tmp) / "checkpoints").metrics["train/objective"]
            worst = max(worst, abs(result.metrics["train/objective"] - alone) / abs(alone))
    return worst


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    os.environ.setdefault("OVERFIT_ROOT", tempfile.mkdtemp(prefix="bench-replicates-"))
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from overfit.training.fit import fit
    from overfit.training.vectorized import train_group

    accelerator = f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"
    print(f"{args.replicates} replicates against one point, {args.device}, {os.cpu_count()} cores; "
          f"medians of {args.repeats} interleaved runs")
    print(f"{'case':<36} {'max rel diff':>12} {'one point s':>12} {f'{args.replicates} seeds s':>12} {'ratio':>7}")
    worst_ratio = 0.0
    for case in CASES:
        diff = exactness(case, min(args.replicates, 5), args.device)
        one = configs(case, range(1), accelerator)[0]
        many = configs(case, range(args.replicates), accelerator)
        fit(one, Path(tempfile.mkdtemp()) / "warm")  # first use of each path: imports and kernels
        train_group(many[:2], device=args.device)
        single, batched = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                single.append(timed(lambda: fit(one, Path(tmp) / "checkpoints")))
            batched.append(timed(lambda: train_group(many, device=args.device)))
        ratio = statistics.median(batched) / statistics.median(single)
        worst_ratio = max(worst_ratio, ratio)
        print(f"{case:<36} {diff:>12.1e} {statistics.median(single):>12.2f} {statistics.median(batched):>12.2f} "
              f"{ratio:>7.2f}")
        if diff > 1e-5:
            print(f"  a replicate differs from itself trained alone by {diff:.1e} (> 1e-5)", file=sys.stderr)
            return 1
    print(f"worst ratio {worst_ratio:.2f} (target ≤ 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
