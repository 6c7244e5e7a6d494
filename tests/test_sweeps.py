"""Sweeps: one MLflow parent per multirun, a child per point, reuse, failures, reports."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import all_runs, compose, parent_of, run_cli
from overfit.tracking import runs
from overfit.tracking.points import Point, best, collect
from overfit.tracking.reap import reap
from overfit.tracking.store import Store
from overfit.training.module import build_learner
from overfit.training.parts import build


ORDERS = ("dataset=polynomial", "model=linear", "loss=mse", "features=polynomial", "features.order=1,2,3,4,12",
          "trainer.max_epochs=40")


def children(store, parent_id: str) -> list:
    return [r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def points_of(root: Path, parent_id: str) -> tuple[dict[str, list[str]], list[Point]]:
    return collect(Store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"), parent_id)


def by_order(points: list[Point]) -> dict[int, Point]:
    return {int(p.values["features.order"]): p for p in points}


def test_order_sweep_is_one_parent_with_a_child_per_point(root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", *ORDERS)
    assert code == 0, err
    parent_id = parent_of(out)
    kids = children(store, parent_id)
    assert len(kids) == 5 and all(k.info.status == "FINISHED" for k in kids)
    parent = store.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.features.order"] == "1,2,3,4,12"
    assert parent.info.run_name == "sweep features.order=1…12"
    assert sorted(k.info.run_name for k in kids) == sorted(f"features.order={o}" for o in (1, 2, 3, 4, 12))
    files = {a.path for a in store.list_artifacts(parent_id, "report")}
    assert {"report/summary.csv", "report/summary.md", "report/curves_features_order.png"} <= files

    points = by_order(points_of(root, parent_id)[1])
    test = {k: p.error("test") for k, p in points.items()}
    train = {k: p.error("train") for k, p in points.items()}
    assert min(test, key=test.get) in (3, 4)
    assert train[12] < train[3] < train[1]
    assert test[12] > test[3]

    # The parent says who won, in its description and its own metrics (one clear name each).
    winner = best(list(points.values()))
    note = parent.data.tags["mlflow.note.content"]
    assert f"Best by validation error: [features.order={winner.values['features.order']}]" in note
    assert f"/runs/{winner.run_id})" in note and note.count("| [features.order=") == 5
    assert parent.data.tags["best.run_id"] == winner.run_id
    assert parent.data.metrics["best/test/error"] == pytest.approx(winner.error("test"))
    assert set(parent.data.metrics) == {f"best/{s}/error" for s in ("train", "val", "test")}  # never a point's key

    # The same sweep again trains nothing: a new parent links the finished runs.
    code, out, _ = run_cli(capsys, "train", "-m", *ORDERS)
    assert code == 0 and "every one of the 5 points finished earlier" in out
    again = parent_of(out)
    assert children(store, again) == []
    assert {p.run_id for p in points_of(root, again)[1]} == {k.info.run_id for k in kids}

    # sweep.rerun=true trains every point again.
    code, out, _ = run_cli(capsys, "train", "-m", *ORDERS, "sweep.rerun=true")
    assert code == 0 and len(children(store, parent_of(out))) == 5


def test_reuse_key_includes_the_code_that_computes_results(root: Path, store, capsys, tmp_path, monkeypatch) -> None:
    """Editing a loss formula retrains the same sweep; editing the README or the report code does not."""
    import shutil

    from overfit.tracking import fingerprint

    copy = tmp_path / "overfit"
    shutil.copytree(fingerprint.PACKAGE, copy)
    monkeypatch.setattr(fingerprint, "PACKAGE", copy)
    sweep = ("features=polynomial", "features.order=1,3", "trainer.max_epochs=5")

    def trained() -> int:
        fingerprint._fingerprint.cache_clear()
        code, out, err = run_cli(capsys, "train", "-m", *sweep)
        assert code == 0, err
        return len(children(store, parent_of(out)))

    assert trained() == 2
    (copy / "tracking" / "report.py").write_text((copy / "tracking" / "report.py").read_text() + "\n# a comment\n")
    (tmp_path / "README.md").write_text("unrelated")
    assert trained() == 0
    losses = copy / "maths" / "losses.py"
    assert "(y - s) ** 2" in losses.read_text()
    losses.write_text(losses.read_text().replace("(y - s) ** 2", "(s - y) ** 2"))
    assert trained() == 2


def test_a_finished_sweep_reruns_without_importing_pytorch(root: Path, capsys) -> None:
    """Every point reused: a parent linking them and the report, with neither PyTorch nor Lightning imported."""
    sweep = ["train", "-m", "features=polynomial", "features.order=1,2", "trainer.max_epochs=3"]
    code, _, err = run_cli(capsys, *sweep)
    assert code == 0, err
    probe = ("import sys; from overfit import cli; code = cli.main(sys.argv[1:]); "
             "print('imported:', sorted(m for m in ('torch', 'lightning') if m in sys.modules)); sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", probe, *sweep], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "every one of the 2 points finished earlier" in out.stdout
    assert "imported: []" in out.stdout


def _exact_objective(cfg) -> float:
    """min_w,b (1/N)·Σ(y − φw − b)² + λ‖w‖² in float64, with the run's own feature map."""
    parts = build(cfg)
    splits = parts.dataset.load(cfg.seed)
    net = build_learner(parts, cfg, splits).net.double()
    phi = net[:-1](splits.x_train.double())  # standardise → features
    y = splits.y_train.double()
    n, p = phi.shape
    design = torch.cat([phi, torch.ones(n, 1, dtype=torch.float64)], 1)
    lam = cfg.regularizer.strength
    penalty = torch.diag(torch.tensor([lam] * p + [0.0], dtype=torch.float64))  # the bias is not penalised
    w = torch.linalg.solve(design.T @ design / n + penalty, design.T @ y / n)
    return (((y - design @ w) ** 2).mean() + lam * (w[:-1] ** 2).sum()).item()


@pytest.mark.parametrize(
    "extra",
    [(), ("features.basis=legendre", "optimizer=lbfgs", "regularizer=l2", "regularizer.strength=0.01")],
    ids=["defaults", "legendre-lbfgs-ridge"],
)
def test_every_point_reaches_its_least_squares_optimum(extra: tuple[str, ...], root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", *ORDERS, *extra)
    assert code == 0, err
    for point in points_of(root, parent_of(out))[1]:
        cfg = compose(*[o for o in ORDERS if not o.startswith("features.order=")],
                      f"features.order={point.values['features.order']}", *extra)
        exact = _exact_objective(cfg)
        assert point.metrics["train/objective"] <= exact * 1.01 + 1e-9, point.label


def test_lambda_sweep_at_order_12_falls_then_rises(root: Path, store, capsys) -> None:
    code, out, err = run_cli(
        capsys, "train", "-m", "features=polynomial", "features.order=12", "features.basis=legendre",
        "optimizer=lbfgs", "regularizer=l2", "regularizer.strength=0,0.001,0.1,10",
    )
    assert code == 0, err
    points = points_of(root, parent_of(out))[1]
    test = {float(p.values["regularizer.strength"]): p.error("test") for p in points}
    assert test[0.1] < test[0.001] < test[0.0]
    assert test[10.0] > test[0.1]
    assert best(points).values["regularizer.strength"] == "0.1"
    assert sorted(p.name for p in points) == ["λ=0", "λ=0.001", "λ=0.1", "λ=10"]


def test_a_diverging_point_fails_alone_and_the_sweep_says_so(root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", "optimizer.lr=0.01,1e6", "trainer.max_epochs=20")
    assert code == 1
    kids = {r.data.params["optimizer.lr"]: r for r in children(store, parent_of(out))}
    assert kids["0.01"].info.status == "FINISHED"
    assert kids["1000000.0"].info.status == "FAILED"
    assert kids["1000000.0"].data.tags["failure"] == "diverged"
    assert "did not finish" in out and "optimizer.lr=1000000.0: FAILED" in out and "diverged" in out


def test_a_raising_point_fails_with_its_reason_and_the_others_run(root: Path, store, capsys, monkeypatch) -> None:
    import overfit.training.module as training

    real = training.build_learner

    def flaky(parts, cfg, splits):
        if cfg.optimizer.lr == 0.3:
            raise RuntimeError("boom at lr 0.3")
        return real(parts, cfg, splits)

    monkeypatch.setattr(training, "build_learner", flaky)
    code, out, _ = run_cli(capsys, "train", "-m", "optimizer.lr=0.1,0.3,0.2", "trainer.max_epochs=3",
                           "sweep.vectorize=false")
    assert code == 1
    kids = {k.data.params["optimizer.lr"]: k for k in children(store, parent_of(out))}
    assert kids["0.1"].info.status == kids["0.2"].info.status == "FINISHED"
    assert kids["0.3"].info.status == "FAILED"
    assert kids["0.3"].data.tags["failure"] == "error"
    assert kids["0.3"].data.tags["failure.reason"] == "RuntimeError: boom at lr 0.3"
    assert "optimizer.lr=0.3: FAILED (error) — RuntimeError: boom at lr 0.3" in out


def test_training_set_size_is_a_sweep_axis(root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", "features=polynomial", "dataset.n_train=10,40,160",
                             "trainer.max_epochs=30")
    assert code == 0, err
    axes, points = points_of(root, parent_of(out))
    assert axes == {"dataset.n_train": ["10", "40", "160"]}
    assert all(p.status == "FINISHED" for p in points)
    assert {a.path for a in store.list_artifacts(parent_of(out), "report")} >= {
        "report/curves_dataset_n_train.png"
    }


def test_two_axes_give_one_curve_per_value_of_the_other(root: Path, store, capsys, tmp_path) -> None:
    code, out, err = run_cli(capsys, "train", "-m", "features=polynomial", "features.order=1,3",
                             "optimizer.lr=0.1,0.3", "trainer.max_epochs=5")
    assert code == 0, err
    parent = parent_of(out)
    assert store.get_run(parent).info.run_name == "sweep features.order=1,3 × lr=0.1,0.3"
    assert sorted(k.info.run_name for k in children(store, parent)) == [
        "features.order=1 lr=0.1", "features.order=1 lr=0.3", "features.order=3 lr=0.1", "features.order=3 lr=0.3"]
    # `overfit report` rebuilds the same files from the store alone.
    code, out, err = run_cli(capsys, "report", parent, "--out", str(tmp_path / "rebuilt"))
    assert code == 0, err
    built = {p.name for p in (tmp_path / "rebuilt").iterdir()}
    assert built == {"summary.csv", "summary.md", "curves_features_order.png", "curves_optimizer_lr.png"}
    rows = (tmp_path / "rebuilt" / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 4


def test_bad_sweep_value_stops_before_any_run(root: Path, store, capsys) -> None:
    code, _, err = run_cli(capsys, "train", "-m", "optimizer.lr=0.1,-1")
    assert code == 2 and err.strip().startswith("overfit: error: optimizer.lr:")
    assert all_runs(store) == []


def test_reap_marks_runs_of_dead_processes_killed(root: Path, store) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    experiment = store.create_experiment("reap")
    host = socket.gethostname()
    orphan = store.create_run(experiment, tags={"host": host, "pid": str(dead.pid)}).info.run_id
    alive = store.create_run(experiment, tags={"host": host, "pid": str(os.getpid())}).info.run_id
    remote = store.create_run(experiment, tags={"host": "elsewhere", "pid": str(dead.pid)}).info.run_id
    assert reap(Store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")) == [orphan]
    assert store.get_run(orphan).info.status == "KILLED"
    assert store.get_run(orphan).data.tags["failure"] == "killed"
    assert store.get_run(alive).info.status == "RUNNING"
    assert store.get_run(remote).info.status == "RUNNING"


@pytest.mark.slow
def test_sigterm_ends_the_running_point_killed(root: Path, store) -> None:
    cmd = [sys.executable, "-m", "overfit", "train", "dataset=line", "optimizer=gd", "trainer.max_epochs=1000000"]
    proc = subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(r.info.status == "RUNNING" for r in all_runs(store)):
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    (run,) = all_runs(store)
    assert run.info.status == "KILLED"
    assert proc.returncode != 0


@pytest.mark.slow
def test_joblib_workers_on_a_fresh_store(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OVERFIT_ROOT", str(tmp_path))  # no template: the store does not exist yet
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = subprocess.run(
        [sys.executable, "-m", "overfit", "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *ORDERS],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = (out.stdout + out.stderr).lower()
    assert "already exists" not in log and "database is locked" not in log and "traceback" not in log
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    found = all_runs(client)
    (parent,) = [r for r in found if r.data.tags.get(runs.TAG_KIND) == "sweep"]
    kids = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 5 and all(k.info.status == "FINISHED" for k in kids)
    assert all(not math.isnan(k.data.metrics.get("test/error", math.nan)) for k in kids)


@pytest.mark.slow
def test_submitit_jobs_find_their_parent(root: Path, store) -> None:
    """submitit's local executor runs each point as its own job, as on SLURM nodes."""
    out = subprocess.run(
        [sys.executable, "-m", "overfit", "train", "-m", "hydra/launcher=submitit_local", "features=polynomial",
         "features.order=1,3", "trainer.max_epochs=20"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (parent,) = [r for r in all_runs(store) if r.data.tags.get(runs.TAG_KIND) == "sweep"]
    assert parent.data.tags["launcher"] == "submitit_local"
    kids = children(store, parent.info.run_id)
    assert sorted(k.data.params["features.order"] for k in kids) == ["1", "3"]
    assert all(k.info.status == "FINISHED" for k in kids)
    assert {k.data.tags["pid"] for k in kids}.isdisjoint({parent.data.tags["pid"]})  # other processes


def test_progress_counts_ended_points_and_reads_a_file_again_only_when_it_changed(tmp_path: Path, monkeypatch) -> None:
    from overfit.sweeping import driver
    from overfit.tracking import pointfile
    from overfit.tracking.pointfile import PointResult

    for num in range(3):
        PointResult(f"r{num}", "RUNNING", parent="p").save(tmp_path / "0" / str(num))
    PointResult("x", "FINISHED", parent="another sweep").save(tmp_path / "1" / "0")  # not this sweep's
    reads: list[Path] = []
    real = pointfile.read_point
    monkeypatch.setattr(pointfile, "read_point", lambda d, p=None: reads.append(d) or real(d, p))
    progress = driver.Progress(tmp_path, "p", 3, "")
    assert progress.count() == 0 and len(reads) == 4
    PointResult("r1", "FINISHED", parent="p").save(tmp_path / "0" / "1")
    PointResult("r2", "KILLED", parent="p").save(tmp_path / "0" / "2")
    reads.clear()
    assert progress.count() == 2
    assert sorted(reads) == [tmp_path / "0" / "1", tmp_path / "0" / "2"]  # the two that changed, nothing else
    reads.clear()
    assert progress.count() == 2 and reads == []
