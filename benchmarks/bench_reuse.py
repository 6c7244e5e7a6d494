"""What a rerun costs: a sweep and a pipeline, first on a fresh store, then with every point reused.

    .venv/bin/python benchmarks/bench_reuse.py

Each command runs as a user runs it (a fresh process, imports included), on a
fresh project root, twice; the ratio second / first is the figure of merit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "sweep orders 1,2,3,4,12": ["train", "-m", "dataset=polynomial", "model=linear", "loss=mse", "features=polynomial",
                                "features.order=1,2,3,4,12"],
    "pipeline polynomial_order": ["pipeline", "run", "pipelines/polynomial_order.yaml"],
}


def timed(args: list[str], root: Path) -> float:
    env = {**os.environ, "OVERFIT_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "overfit", *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    print(f"{'command':28s} {'first s':>8s} {'rerun s':>8s} {'ratio':>6s}")
    for name, args in COMMANDS.items():
        root = Path(tempfile.mkdtemp(prefix="overfit-reuse-"))
        first, second = timed(args, root), timed(args, root)
        print(f"{name:28s} {first:8.1f} {second:8.1f} {second / first:6.2f}")


if __name__ == "__main__":
    main()
