"""What the commands that train nothing cost, against Python's own start-up floors.

    .venv/bin/python benchmarks/bench_reuse.py [--repeats 3]

Every command runs as a user runs it: a fresh process, imports included, on a fresh
project root. The floors are `python -c "import torch"`, `python -c "import mlflow"`
and `python -c "import mlflow, torch"`; a rerun of a sweep whose every point finished
must not cost much more than importing what it needs. Medians of the repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["train", "-m", "dataset=polynomial", "model=linear", "loss=mse", "features=polynomial",
         "features.order=1,2,3,4,12"]
PIPELINE = ["pipeline", "run", "pipelines/polynomial_order.yaml"]


def timed(command: list[str], root: Path) -> float:
    env = {**os.environ, "OVERFIT_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    py, overfit = [sys.executable], [sys.executable, "-m", "overfit"]
    root = Path(tempfile.mkdtemp(prefix="overfit-reuse-"))
    rows: dict[str, float] = {}

    def median(name: str, command: list[str], where: Path = root) -> float:
        rows[name] = statistics.median(timed(command, where) for _ in range(args.repeats))
        return rows[name]

    floor = median('python -c "import mlflow, torch"', [*py, "-c", "import mlflow, torch"])
    median('python -c "import torch"', [*py, "-c", "import torch"])
    median('python -c "import mlflow"', [*py, "-c", "import mlflow"])
    median("overfit --help", [*overfit, "--help"])
    median("overfit pipeline show polynomial_order", [*overfit, "pipeline", "show", "pipelines/polynomial_order.yaml"])
    for name, command in (("5-point order sweep", SWEEP), ("pipeline polynomial_order", PIPELINE)):
        fresh = Path(tempfile.mkdtemp(prefix="overfit-reuse-"))
        rows[f"{name}, first run"] = timed([*overfit, *command], fresh)
        median(f"{name}, rerun (all reused)", [*overfit, *command], fresh)
    print(f"{'command':48s} {'seconds':>8s} {'× floor':>8s}   (floor: import mlflow, torch)")
    for name, seconds in rows.items():
        print(f"{name:48s} {seconds:8.2f} {seconds / floor:8.2f}")


if __name__ == "__main__":
    main()
