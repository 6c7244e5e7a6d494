"""Vectorized sweeps as a user sees them: one batched job, yet every point its own complete MLflow run."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import all_runs, parent_of, run_cli
from overfit.tracking import runs

GRID = ("features=polynomial", "features.order=1,3,12", "regularizer=l2", "regularizer.strength=0,1",
        "optimizer.lr=0.1,3", "trainer.max_epochs=30")


def children(store, parent_id: str) -> list:
    return [r for r in all_runs(store) if r.data.tags.get(runs.TAG_PARENT) == parent_id]


def test_a_grid_trains_as_one_batched_job_and_each_point_is_its_own_run(root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", *GRID)
    assert "vectorized: 12 points in 1 job(s)" in out
    parent = store.get_run(parent_of(out))
    kids = children(store, parent.info.run_id)
    names = [k.info.run_name for k in kids]
    assert len(kids) == 12 and len(set(names)) == 12
    assert "features.order=12 λ=1 lr=3" in names and "features.order=1 λ=0 lr=0.1" in names
    assert parent.info.run_name == "sweep features.order=1,3,12 × λ=0,1 × lr=0.1,3"
    note = parent.data.tags[runs.TAG_NOTE]
    assert note.startswith("**Best by validation error: [") and note.count("| [features.order=") == 12

    # lr 3 overshoots gradient descent on the whitened features (curvature 2): those points diverge alone.
    diverged = [k for k in kids if k.data.tags.get("failure") == "diverged"]
    assert diverged and all(k.info.status == "FAILED" and k.data.params["optimizer.lr"] == "3.0" for k in diverged)
    assert "at epoch" in diverged[0].data.tags["failure.reason"]
    assert code == 1 and "did not finish" in out  # diverged points are reported, as one at a time
    finished = [k for k in kids if k.info.status == "FINISHED"]
    assert all(k.data.params["optimizer.lr"] == "0.1" for k in finished) and len(finished) == 6
    for kid in finished:  # each a complete run: history stepped by epoch, test metrics, picture, key
        history = store.get_metric_history(kid.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(1, 31))
        assert {"test/error", "generalization_gap", "val/error"} <= set(kid.data.metrics)
        assert "config.yaml" in {a.path for a in store.list_artifacts(kid.info.run_id)}
        images = [a.path for a in store.list_artifacts(kid.info.run_id, "images")]
        assert [p for p in images if p.startswith("images/fit+step+30+") and p.endswith(".png")]
        assert [p for p in images if p.startswith("images/learning_curve+step+30+") and p.endswith(".png")]
        assert kid.data.tags[runs.TAG_HASH] and kid.data.tags[runs.TAG_CODE]

    # The same points one at a time: every point reused (same key), the same numbers.
    code, out, _ = run_cli(capsys, "train", "-m", *GRID, "sweep.vectorize=false")
    assert "every one of the 12 points finished earlier" in out


def test_vectorized_and_one_at_a_time_land_on_the_same_numbers(root: Path, store, capsys) -> None:
    grid = ("features=polynomial", "features.order=2,5", "optimizer.lr=0.05,0.2", "trainer.max_epochs=20",
            "trainer.precision=64-true")
    code, out, err = run_cli(capsys, "train", "-m", *grid)
    assert code == 0, err
    batched = {k.info.run_name: k for k in children(store, parent_of(out))}
    code, out, err = run_cli(capsys, "train", "-m", *grid, "sweep.vectorize=false", "experiment_name=alone")
    assert code == 0, err
    alone = {k.info.run_name: k for k in children(store, parent_of(out))}
    assert batched.keys() == alone.keys() and len(alone) == 4
    for name, run in batched.items():
        for key in ("train/objective", "val/error", "test/error"):
            assert run.data.metrics[key] == pytest.approx(alone[name].data.metrics[key], rel=1e-9)


def test_points_that_cannot_batch_train_alone_and_say_why(root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", "features=polynomial", "features.order=3",
                             "optimizer=gd,lbfgs", "trainer.max_epochs=5")
    assert code == 0, err
    assert "optimizer=lbfgs trains one at a time: L-BFGS searches a step length" in out
    assert len(children(store, parent_of(out))) == 2
