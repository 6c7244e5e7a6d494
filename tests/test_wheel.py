"""Installable: a wheel built from the checkout, installed (not editable) in a fresh venv, used from an empty folder.

The configs and studies ship inside the package; the project root of an installed package
is the folder the command runs in, where its store (``mlruns/``) and outputs land.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import all_runs

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_a_wheel_installed_in_a_fresh_venv_runs_from_an_empty_folder(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OVERFIT_ROOT", "MLFLOW_TRACKING_URI", "PYTHONPATH",
                                                            "VIRTUAL_ENV")}
    source = tmp_path / "source"  # the tracked files only: what a clean clone holds
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=CHECKOUT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (CHECKOUT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((CHECKOUT / name).read_bytes())
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("overfit-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path, env, timeout=1800)
    overfit = str(venv / "bin" / "overfit")
    empty = tmp_path / "empty"
    empty.mkdir()
    single = run([overfit, "train", "trainer.max_epochs=5"], empty, env)
    assert "FINISHED" in single.stdout
    sweep = run([overfit, "train", "-m", "features=polynomial", "features.order=1,2,3", "trainer.max_epochs=5"],
                empty, env)
    assert "3 points finished" in sweep.stdout
    study = run([overfit, "pipeline", "run", "polynomial_order"], empty, env)
    assert "pipeline 'polynomial_order' FINISHED" in study.stdout
    listed = run([overfit, "pipeline", "list"], empty, env)
    assert "polynomial_order" in listed.stdout and "regularization" in listed.stdout
    found = all_runs(MlflowClient(f"sqlite:///{empty / 'mlruns' / 'mlflow.db'}"))
    assert found and all(r.info.status == "FINISHED" for r in found)
    assert (empty / "reports" / "polynomial_order" / "report.html").is_file()
    assert not list(venv.glob("lib/python*/site-packages/mlruns"))  # nothing written beside the package
