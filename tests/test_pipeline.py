"""Declarative pipelines: the file format's errors, show, and small pipelines run end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import all_runs, run_cli
from overfit.pipeline import spec as pipeline
from overfit.errors import ConfigError
from overfit.tracking.sweeps import TAG_REUSED, TAG_SWEEP
from overfit.tracking.runs import TAG_HASH

REPO = Path(__file__).resolve().parents[1]
STUDIES = ("polynomial_order", "regularization", "learning_rate", "data_size", "digits_capacity", "mnist")

SMALL = """\
name: small
description: A tiny study for the tests.
experiment: small
overrides:
  - dataset=polynomial
  - features=polynomial
  - dataset.n_val=50
  - dataset.n_test=50
  - trainer.max_epochs=5
stages:
  orders:
    kind: sweep
    axes:
      features.order: [1, 3]
  best:
    kind: select
    needs: [orders]
  lambdas:
    kind: sweep
    needs: [best]
    overrides:
      - features.order=${best.features.order}
      - regularizer=l2
    axes:
      regularizer.strength: [0.0, 0.1]
  test:
    kind: evaluate
    needs: [best]
  report:
    kind: report
    needs: [orders, lambdas, best, test]
    history: [train/objective]
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        pipeline.load_and_plan(str(path), [])
    return info.value


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def training_runs(client: MlflowClient) -> list:
    return [r for r in all_runs(client) if TAG_HASH in r.data.tags]


# --- the format's errors: one ConfigError naming the file and the line -----------
def test_unknown_stage_kind_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("kind: select", "kind: choose"))
    exc = error_of(path)
    assert str(exc).startswith(f"{path}:{line_of(path, 'kind: choose')}: stages.best.kind: unknown stage kind 'choose'")
    assert "sweep, select, evaluate, report" in str(exc)


def test_cycle_is_rejected(tmp_path: Path) -> None:
    text = SMALL.replace("    kind: select\n    needs: [orders]", "    kind: select\n    needs: [orders, lambdas]")
    path = write(tmp_path, text)
    exc = error_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: stages\.\w+\.needs: needs form a cycle: ", str(exc))
    assert "best → lambdas → best" in str(exc) or "lambdas → best → lambdas" in str(exc)


@pytest.mark.parametrize("where", ["key", "override"])
def test_target_is_rejected(tmp_path: Path, where: str) -> None:
    if where == "key":
        text = SMALL.replace("    kind: select\n", "    kind: select\n    _target_: os.system\n")
        needle = "_target_"
    else:
        text = SMALL.replace("  - trainer.max_epochs=5", "  - model._target_=os.system")
        needle = "model._target_"
    path = write(tmp_path, text)
    exc = error_of(path)
    assert str(exc).startswith(f"{path}:{line_of(path, needle)}: ")
    assert "_target_ is not allowed" in str(exc)


def test_missing_stage_in_needs(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("needs: [orders]", "needs: [orders2]"))
    exc = error_of(path)
    assert str(exc).startswith(f"{path}:{line_of(path, 'orders2')}: stages.best.needs: unknown stage 'orders2'")
    assert "(allowed: orders, best, lambdas, test, report)" in str(exc)


def test_unknown_option_in_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("      - regularizer=l2", "      - regularizer=l2\n      - model=nope"))
    exc = error_of(path)
    assert str(exc) == (f"{path}:{line_of(path, 'model=nope')}: stages.lambdas.overrides[2]: "
                        "model: unknown option 'nope' (allowed: linear, mlp)")


def test_bad_axis_value_points_at_the_axis(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("[0.0, 0.1]", "[0.0, -1.0]"))
    exc = error_of(path)
    assert str(exc).startswith(f"{path}:{line_of(path, 'regularizer.strength:')}: stages.lambdas.axes.regularizer.strength")


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("  orders:\n    kind: sweep\n", "  orders:\n    kind: sweep\n    axis: {}\n", "unknown key for a sweep stage"),
    ("experiment: small", "experiment: small\nexperiments: x", "experiments: unknown key"),
    ("  - trainer.max_epochs=5", "  - hydra.callbacks.x.y=1", "not an override of the project's config groups"),
    ("  - trainer.max_epochs=5", "  - +foo=1", "adding (+) or deleting (~) config keys is not allowed"),
    ("  - trainer.max_epochs=5", "  - experiment_name=other", "set by the pipeline's `experiment:`"),
    ("    needs: [best]\n    overrides:\n      - features.order=${best.features.order}",
     "    needs: [best, orders]\n    overrides:\n      - features.order=${orders.features.order}",
     "'orders' is a sweep stage; only a select stage has values"),
    ("    needs: [best]\n    overrides:", "    needs: [orders]\n    overrides:", "stage 'best' is not in needs"),
    ("    kind: evaluate\n    needs: [best]", "    kind: evaluate\n    needs: [orders]", "exactly one select stage"),
    ("  best:\n", "  orders:\n", "duplicate key"),
    ("[1, 3]", "[1, 3", "not valid YAML"),
])
def test_schema_errors(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in SMALL
    path = write(tmp_path, SMALL.replace(old, new, 1))
    exc = error_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+", str(exc)), str(exc)
    assert problem in str(exc)


def test_a_rejected_file_creates_no_run(root: Path, store: MlflowClient, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("kind: evaluate", "kind: evaluation"))
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 2
    assert f"{path}:{line_of(path, 'kind: evaluation')}: stages.test.kind: unknown stage kind" in err
    assert all_runs(store) == []
    assert [e.name for e in store.search_experiments()] == ["Default"]


def test_command_line_overrides_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL)
    with pytest.raises(ConfigError, match="command line: overrides\\[0\\]: .*_target_ is not allowed"):
        pipeline.load_and_plan(str(path), ["hydra.launcher._target_=os.system"])
    with pytest.raises(ConfigError, match="command line: overrides\\[0\\]: model: unknown option 'nope'"):
        pipeline.load_and_plan(str(path), ["model=nope"])


def test_allowed_groups_are_the_projects_config_groups() -> None:
    from overfit import config

    assert set(pipeline.GROUPS) == set(config.SCHEMAS)


def test_shipped_studies_parse_and_validate() -> None:
    for name in STUDIES:
        p = pipeline.load(str(REPO / "pipelines" / f"{name}.yaml"))
        assert p.name == name and len(p.description) > 200, name
        if name != "mnist":  # mnist needs its files (or dataset.download=true) to validate
            pipeline.load_and_plan(str(REPO / "pipelines" / f"{name}.yaml"), [])


# --- show: a dry run -----------------------------------------------------------------
def test_show_lists_jobs_and_creates_nothing(root: Path, store: MlflowClient,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "pipeline", "show", str(REPO / "pipelines" / "regularization.yaml"),
                           "hydra/launcher=joblib")
    assert code == 0
    for strength in ("0.0", "0.0001", "0.001", "0.01", "0.1", "1.0", "10.0"):
        assert re.search(rf"regularizer\.strength={re.escape(strength)}\s+would run\s+joblib", out), out
    assert "Nothing was run" in out
    assert all_runs(store) == []
    assert [e.name for e in store.search_experiments()] == ["Default"]


def test_show_and_list_do_not_import_lightning(tmp_path: Path) -> None:
    env = {**os.environ, "OVERFIT_ROOT": str(tmp_path)}
    for args in (["show", str(REPO / "pipelines" / "polynomial_order.yaml")], ["list"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "overfit", "pipeline", *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
        assert not {m for m in imported if m.split(".")[0] in ("lightning", "pytorch_lightning")}
    assert not (tmp_path / "mlruns").exists()  # nothing created, not even the store
    assert "polynomial_order" in done.stdout and "never run" in done.stdout


# --- running ---------------------------------------------------------------------------
def test_small_pipeline_end_to_end(root: Path, store: MlflowClient, capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    path = write(tmp_path, SMALL)
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    runs = all_runs(store)
    pipelines = [r for r in runs if r.data.tags.get(pipeline.TAG) == "small"]
    assert len(pipelines) == 1
    top = pipelines[0]
    assert top.info.status == "FINISHED"
    artifacts = {a.path for a in store.list_artifacts(top.info.run_id)}
    assert {"pipeline", "report"} <= artifacts
    assert [a.path for a in store.list_artifacts(top.info.run_id, "pipeline")] == ["pipeline/study.yaml"]
    logged = {a.path for a in store.list_artifacts(top.info.run_id, "report")}
    assert "report/report.html" in logged and "report/orders_curves.png" in logged

    # pipeline run → one sweep parent per sweep/evaluate stage → training children
    parents = [r for r in runs if r.data.tags.get(TAG_SWEEP) == "true"]
    assert len(parents) == 3
    assert all(r.data.tags.get("mlflow.parentRunId") == top.info.run_id for r in parents)
    children = {p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
                for p in parents}
    by_axis = {p.data.params.get("sweep.features.order", p.data.params.get("sweep.regularizer.strength", "")): p
               for p in parents}
    orders, lambdas = by_axis["1,3"], by_axis["0.0,0.1"]
    assert len(children[orders.info.run_id]) == 2 and len(children[lambdas.info.run_id]) == 2
    evaluate = next(p for p in parents if p not in (orders, lambdas))
    assert children[evaluate.info.run_id] == []  # the selected point is reused, not retrained

    # select feeds the later stages
    selected = top.data.tags["best.selected"]
    order = selected.removeprefix("features.order=")
    assert order in ("1", "3")
    assert {r.data.params["features.order"] for r in children[lambdas.info.run_id]} == {order}
    chosen = next(r for r in children[orders.info.run_id] if r.data.params["features.order"] == order)
    assert evaluate.data.tags[f"{TAG_REUSED}0"] == chosen.info.run_id
    assert top.data.metrics["test/test/error"] == pytest.approx(chosen.data.metrics["test/error"])

    # the report: one self-contained HTML file plus the PNGs, path and UI command printed at the end
    html_path = root / "reports" / "small" / "report.html"
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") >= 3  # two sweeps' curves and a training history
    assert (root / "reports" / "small" / "lambdas_curves.png").is_file()
    assert f"selected <b>{selected}</b>" in html
    tail = out.strip().splitlines()[-2:]
    assert tail[0] == f"[overfit] report: {html_path}"
    assert tail[1].startswith("[overfit] open the MLflow UI: ") and " ui --backend-store-uri sqlite:///" in tail[1]

    # show now knows every job is finished, and which point the selection takes
    code, out, _ = run_cli(capsys, "pipeline", "show", str(path))
    assert code == 0 and f"now: {selected}" in out
    assert "5 jobs: 5 finished (would be reused), 0 would run, 0 wait for a selection" in out

    # a second run reuses everything: no new training run
    trained = {r.info.run_id for r in training_runs(store)}
    assert len(trained) == 4
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    assert {r.info.run_id for r in training_runs(store)} == trained
    assert len([r for r in all_runs(store) if r.data.tags.get(pipeline.TAG) == "small"]) == 2

    # changing one stage re-runs only what the change touches
    write(tmp_path, SMALL.replace("[0.0, 0.1]", "[0.0, 0.1, 1.0]"))
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    new = [r for r in training_runs(store) if r.info.run_id not in trained]
    assert [(r.data.params["regularizer.strength"], r.data.params["features.order"]) for r in new] == [("1.0", order)]


def test_a_failing_stage_ends_the_pipeline_run_failed(root: Path, store: MlflowClient,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every point diverges: nothing to select from, so the run ends FAILED with the reason."""
    text = SMALL.replace("[1, 3]", "[3]").replace("  - trainer.max_epochs=5", "  - trainer.max_epochs=30\n  - optimizer.lr=5.0")
    path = write(tmp_path, text)
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 2
    assert "stages.best: no finished point of orders has the metric 'val/error'" in err
    top = next(r for r in all_runs(store) if r.data.tags.get(pipeline.TAG) == "small")
    assert top.info.status == "FAILED" and "no finished point" in top.data.tags["failure.reason"]


# --- the shipped studies (slow) ------------------------------------------------------------
def _cli(root: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OVERFIT_ROOT": str(root)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "overfit", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_polynomial_order_study(tmp_path: Path) -> None:
    done = _cli(tmp_path, "pipeline", "run", "pipelines/polynomial_order.yaml", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _cli(tmp_path, "pipeline", "run", "pipelines/polynomial_order.yaml", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(0 ran, 12 reused)" in done.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    points = [r for r in training_runs(client)]
    assert len(points) == 12
    lowest = min(points, key=lambda r: r.data.metrics["test/error"])
    assert lowest.data.params["features.order"] in ("3", "4")
    html = (tmp_path / "reports" / "polynomial_order" / "report.html").read_text()
    assert f"lowest test error {lowest.data.metrics['test/error']:.4g} at features.order=" in html


@pytest.mark.slow
def test_learning_rate_study_reports_diverged_points(tmp_path: Path) -> None:
    done = _cli(tmp_path, "pipeline", "run", "pipelines/learning_rate.yaml", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    diverged = {r.data.params["optimizer.lr"] for r in training_runs(client) if r.data.tags.get("failure") == "diverged"}
    assert diverged == {"1.5", "3.0"}
    html = (tmp_path / "reports" / "learning_rate" / "report.html").read_text()
    assert html.count(">diverged</span>") == 2 and "2 diverged" in html
