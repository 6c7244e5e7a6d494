"""Replicates: the seed as a sweep axis, reports over it (mean ± 95 % CI, the one-SE rule), bias–variance.

The statistics themselves are tested in test_stats.py; here, what a user sees: the runs a
replicated sweep makes, the numbers its parent and report carry (recomputed from the
store), the rules that choose, the decomposition on the syllabus's cubic, and pipelines.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from helpers import all_runs, parent_of, run_cli
from overfit.tracking.points import Point
from overfit.tracking.replicates import Cell, cells, lowest, one_standard_error
from overfit.tracking.stats import Summary
from overfit.tracking.store import Store

FAST = ("dataset=polynomial", "features=polynomial", "trainer.max_epochs=30")


def children(store, parent_id: str) -> list:
    return [r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def download(store, run_id: str, path: str, tmp_path: Path) -> Path:
    return Path(store.download_artifacts(run_id, path, str(tmp_path)))


# --- the replicate axis --------------------------------------------------------------------------------------------
def test_replicates_are_a_seed_axis_each_seed_its_own_run_grouped_by_a_point_tag(root: Path, store, capsys) -> None:
    code, out, err = run_cli(capsys, "train", "-m", *FAST, "features.order=1,3", "sweep.replicates=3", "seed=5")
    assert code == 0, err
    parent = store.get_run(parent_of(out))
    assert parent.data.params["sweep.seed"] == "5,6,7"  # from the command's seed on
    kids = children(store, parent.info.run_id)
    assert len(kids) == 6 and all(k.info.status == "FINISHED" for k in kids)
    assert sorted(k.info.run_name for k in kids) == sorted(f"features.order={o} seed={s}" for o in (1, 3)
                                                           for s in (5, 6, 7))
    # MLflow's "Group by" on the point tag gathers a point's replicates: one tag value per point.
    groups: dict[str, set[str]] = {}
    for k in kids:
        groups.setdefault(k.data.tags["point"], set()).add(k.data.params["seed"])
    assert groups == {"features.order=1": {"5", "6", "7"}, "features.order=3": {"5", "6", "7"}}
    # Replicates redraw the training data, never the test set: every seed is scored on the same points.
    trains = {k.data.params["seed"]: k.data.metrics["train/error"] for k in kids if k.data.tags["point"].endswith("3")}
    assert len(set(trains.values())) == 3


@pytest.mark.parametrize(("args", "key", "allowed"), [
    (("-m", "sweep.replicates=0"), "sweep.replicates", "a whole number ≥ 1"),
    (("-m", "sweep.replicates=two"), "sweep.replicates", "a whole number ≥ 1"),
    (("-m", "sweep.replicates=3", "seed=0,1"), "sweep.replicates", "one of sweep.replicates=N or seed=..."),
    (("sweep.replicates=3",), "sweep.replicates", "with -m"),
])
def test_bad_replicates_are_one_line_before_any_run(root: Path, store, capsys, args, key, allowed) -> None:
    code, out, err = run_cli(capsys, "train", *args, *FAST)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"overfit: error: {key}:") and allowed in line, line
    assert all_runs(store) == []


# --- the report over replicates -------------------------------------------------------------------------------------
def test_the_report_aggregates_replicates_and_its_numbers_are_the_stores(root: Path, store, capsys,
                                                                        tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "train", "-m", *FAST, "features.order=1,3,8", "sweep.replicates=4")
    assert code == 0, err
    parent = store.get_run(parent_of(out))
    kids = children(store, parent.info.run_id)
    by_point: dict[str, list] = {}
    for k in kids:
        by_point.setdefault(k.data.params["features.order"], []).append(k)

    def interval(order: str, split: str) -> tuple[float, float, float]:
        values = np.array([k.data.metrics[f"{split}/error"] for k in by_point[order]])
        low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                           scale=values.std(ddof=1) / math.sqrt(len(values)))
        return values.mean(), low, high

    rows = {r["features.order"]: r for r in csv.DictReader(download(store, parent.info.run_id, "report/summary.csv",
                                                                    tmp_path).open())}
    assert set(rows) == {"1", "3", "8"}
    for order, row in rows.items():
        assert row["n"] == "4"
        for split in ("train", "val", "test"):
            mean, low, high = interval(order, split)
            assert float(row[f"{split}/error_mean"]) == pytest.approx(mean, rel=1e-3)
            assert float(row[f"{split}/error_ci95_low"]) == pytest.approx(low, rel=1e-3, abs=1e-6)
            assert float(row[f"{split}/error_ci95_high"]) == pytest.approx(high, rel=1e-3, abs=1e-6)
        assert float(row["bias2"]) + float(row["variance"]) + float(row["noise"]) > 0
    runs_csv = list(csv.DictReader(download(store, parent.info.run_id, "report/runs.csv", tmp_path).open()))
    assert len(runs_csv) == 12 and {r["seed"] for r in runs_csv} == {"0", "1", "2", "3"}

    # The winner is the lowest mean validation error; the parent says so under keys of its own.
    means = {o: interval(o, "val")[0] for o in rows}
    winner = min(means, key=means.get)
    assert parent.data.tags["best.point"] == f"features.order={winner}"
    assert parent.data.metrics["best/val/error"] == pytest.approx(means[winner], rel=1e-9)
    half = interval(winner, "test")
    assert parent.data.metrics["best/test/error_ci95"] == pytest.approx(half[2] - half[0], rel=1e-6)
    note = parent.data.tags["mlflow.note.content"]
    assert f"Lowest mean validation error: [features.order={winner}]" in note
    assert "One-standard-error rule: [features.order=" in note and "n = 4 seeds" in note
    assert "one_se/val/error" in parent.data.metrics and parent.data.tags["one_se.point"].startswith("features.order=")
    artifacts = {a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    assert {"report/curves_features_order.png", "report/bias_variance_features_order.png"} <= artifacts


def point(order: int, seed: int, val: float, status: str = "FINISHED") -> Point:
    return Point(f"run-{order}-{seed}", f"features.order={order} seed={seed}",
                 {"features.order": str(order), "seed": str(seed)}, status, "", "", False,
                 {"val/error": val, "test/error": val})


def test_one_se_chooses_the_simplest_point_the_noise_cannot_tell_from_the_best() -> None:
    """Order 6 has the lowest mean; order 3 is within one standard error of it, order 1 is not."""
    vals = {1: [0.30, 0.32, 0.31], 3: [0.105, 0.115, 0.11], 6: [0.09, 0.12, 0.105], 12: [0.2, 0.4, 0.3]}
    points = [point(o, s, v) for o, vs in vals.items() for s, v in enumerate(vs)]
    axes = {"features.order": [str(o) for o in vals], "seed": ["0", "1", "2"]}
    kept, grouped = cells(axes, points)
    assert kept == {"features.order": ["1", "3", "6", "12"]} and [c.n for c in grouped] == [3, 3, 3, 3]
    assert lowest(grouped).values == {"features.order": "6"}
    assert one_standard_error(grouped, {"features.order": "lower"}).values == {"features.order": "3"}
    # λ: higher is simpler. With no declared capacity knob the rule does not apply.
    assert one_standard_error(grouped, {"features.order": "higher"}).values == {"features.order": "6"}
    assert one_standard_error(grouped, {}) is None


def test_a_cell_is_its_finished_replicates() -> None:
    c = Cell({"features.order": "3"}, [point(3, 0, 0.1), point(3, 1, 0.3), point(3, 2, math.nan, "FAILED")])
    assert c.n == 2 and c.error("val") == pytest.approx(0.2) and c.status == "FINISHED"
    low, high = c.band("val")
    assert (low, high) == pytest.approx(scipy_stats.t.interval(0.95, 1, loc=0.2, scale=np.std([0.1, 0.3], ddof=1)
                                                               / math.sqrt(2)))


# --- bias and variance ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_decomposition_on_the_cubic_bias_falls_variance_rises_and_adds_up(root: Path, store, capsys) -> None:
    """The issue's sweep: orders 1-12 × 20 seeds, 20 training points, a test set of 1000 (σ² within ±4.5 %)."""
    code, out, err = run_cli(capsys, "train", "-m", "dataset=polynomial", "features=polynomial",
                             "features.order=1,2,3,4,6,8,10,12", "seed=range(20)")
    assert code == 0, err
    parent = store.get_run(parent_of(out))
    kids = children(store, parent.info.run_id)
    assert len(kids) == 160 and all(k.info.status == "FINISHED" for k in kids)
    from overfit.tracking.report import compare

    c = compare(Store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"), parent.info.run_id)
    assert c.replicated and c.decomposed and [cell.n for cell in c.cells] == [20] * 8
    by_order = {int(cell.values["features.order"]): cell for cell in c.cells}
    bias = {o: cell.decomposition.bias2 for o, cell in by_order.items()}
    variance = {o: cell.decomposition.variance for o, cell in by_order.items()}
    print("\norder  bias²      variance   σ²     sum        mean test error")
    for o, cell in by_order.items():
        d = cell.decomposition
        print(f"{o:5d}  {d.bias2:.3e}  {d.variance:.3e}  {d.noise:.3f}  {d.total:.3e}  {cell.error('test'):.3e}")
    # Bias falls to nothing once the cubic is in the model (order 3); the unbiased estimate then scatters around
    # zero by about variance/√20. Variance grows with every order from there; a straight line through 20 random
    # points of a cubic also varies (order 1 above order 3), far less than the high orders.
    assert bias[1] > bias[2] > bias[3] and all(bias[o] < bias[1] / 10 for o in by_order if o >= 3)
    assert variance[12] > variance[1] and all(variance[a] < variance[b] for a, b in zip((3, 4, 6, 8, 10), (4, 6, 8, 10, 12)))
    for o, cell in by_order.items():  # the sum is the mean test error, up to the test set's own noise
        assert cell.decomposition.total == pytest.approx(cell.error("test"), rel=0.10), o
    assert c.one_se is not None and c.one_se.values["features.order"] in ("3", "4")
    assert "bias_variance_features_order.png" in {a.path.rsplit("/", 1)[-1]
                                                  for a in store.list_artifacts(parent.info.run_id, "report")}


# --- pipelines ------------------------------------------------------------------------------------------------------
REPLICATED = """\
name: replicated
description: Orders over seeds, the one-standard-error choice, its test error on new seeds.
experiment: replicated
overrides: [dataset=polynomial, features=polynomial, dataset.n_val=200, trainer.max_epochs=40]
stages:
  orders:
    kind: sweep
    replicates: 4
    axes:
      features.order: [1, 3, 9]
  best:
    kind: select
    needs: [orders]
    rule: one_se
  test:
    kind: evaluate
    needs: [best]
    replicates: 3
  report:
    kind: report
    needs: [orders, best, test]
"""


def test_a_pipeline_with_replicates_selects_by_one_se_and_evaluates_on_new_seeds(root: Path, store, capsys,
                                                                                 tmp_path: Path) -> None:
    path = tmp_path / "replicated.yaml"
    path.write_text(REPLICATED)
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    runs = all_runs(store)
    top = next(r for r in runs if r.data.tags.get("overfit.kind") == "pipeline")
    sweeps = {r.info.run_name.split(":")[0]: r for r in runs if r.data.tags.get("overfit.kind") == "sweep"}
    orders, test = sweeps["orders"], sweeps["test"]
    kids = children(store, orders.info.run_id)
    assert len(kids) == 12 and {k.data.params["seed"] for k in kids} == {"0", "1", "2", "3"}
    evaluated = children(store, test.info.run_id)
    assert {k.data.params["seed"] for k in evaluated} == {"4", "5", "6"}  # new draws, never the selection's

    # The selection is the sweep's one-SE point, recomputed here from the store.
    by_order: dict[str, list[float]] = {}
    for k in kids:
        by_order.setdefault(k.data.params["features.order"], []).append(k.data.metrics["val/error"])
    means = {o: float(np.mean(v)) for o, v in by_order.items()}
    best = min(means, key=means.get)
    se = float(np.std(by_order[best], ddof=1) / 2)
    expected = min(int(o) for o, m in means.items() if m <= means[best] + se)
    assert top.data.tags["best.selected"] == f"features.order={expected}"
    assert orders.data.tags["one_se.point"] == f"features.order={expected}"
    assert f"'best' (select): features.order={expected} by the one-standard-error rule on val/error = " in out

    # The evaluation's mean test error on the pipeline run is the mean over its new seeds.
    tests = [k.data.metrics["test/error"] for k in evaluated]
    assert top.data.metrics["evaluated/test/error"] == pytest.approx(float(np.mean(tests)), rel=1e-9)
    page = download(store, top.info.run_id, "report/report.html", tmp_path).read_text()
    low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(tests), scale=np.std(tests, ddof=1) / math.sqrt(3))
    assert f"± {(high - low) / 2:.2g}" in page  # the headline sentence carries the interval
    assert "one-standard-error rule" in page and "bias–variance decomposition: orders" in page
    vals = by_order[str(expected)]
    chosen = scipy_stats.t.interval(0.95, 3, loc=np.mean(vals), scale=np.std(vals, ddof=1) / 2)
    shown = Summary(4, float(np.mean(vals)), math.nan, math.nan, (chosen[1] - chosen[0]) / 2).text()
    assert f"val/error = {shown} (mean ± 95 % CI over 4 seeds)" in page  # the selection, from the store's runs


@pytest.mark.parametrize(("edit", "message"), [
    (("replicates: 4", "replicates: 0"), "stages.orders.replicates: got 0"),
    (("rule: one_se", "rule: simplest"), "stages.best.rule: unknown rule 'simplest'"),
    (("    replicates: 4\n", ""), "stages.best.rule: one_se needs replicates, but 'orders' trains each point once"),
])
def test_bad_replicates_in_a_pipeline_name_the_line(root: Path, store, capsys, tmp_path: Path, edit, message) -> None:
    path = tmp_path / "replicated.yaml"
    path.write_text(REPLICATED.replace(*edit))
    code, out, err = run_cli(capsys, "pipeline", "show", str(path))
    assert code == 2 and message in err, err
    assert all_runs(store) == []
