"""Declarative pipelines: the file format's errors and bounds, the stage graph, show, runs end to end, Optuna."""

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
from overfit.errors import ConfigError
from overfit.pipeline import graph, plan, spec
from overfit.tracking.runs import TAG_HASH, TAG_KIND, TAG_NAME, TAG_PARENT, TAG_REUSED

REPO = Path(__file__).resolve().parents[1]
STUDIES = tuple(sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "pipelines").glob("*.yaml")))
NEEDS_FILES = ("mnist", "fashion_mnist")  # image studies: their data (dataset.root, or a download) to validate
# The order-12 polynomial of the regularization study: L2 rescues it, λ is what a search looks for.
ORDER_12 = ["dataset=polynomial", "features=polynomial", "features.order=12", "features.basis=legendre",
            "optimizer=lbfgs", "regularizer=l2", "dataset.n_val=1000"]

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
    kind: search
    n_trials: 2
    needs: [best]
    overrides:
      - features.order=${best.features.order}
      - regularizer=l2
    axes:
      regularizer.strength: tag(log, interval(1e-3, 1))
  pick:
    kind: select
    needs: [lambdas]
  test:
    kind: evaluate
    needs: [pick]
  report:
    kind: report
    needs: [orders, lambdas, best, pick, test]
    history: [train/objective]
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        plan.prepare(str(path), [])
    return info.value


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def training_runs(client: MlflowClient) -> list:
    return [r for r in all_runs(client) if TAG_HASH in r.data.tags]


def rejected(capsys: pytest.CaptureFixture[str], store: MlflowClient, path: Path) -> str:
    """``pipeline run`` refuses the file: exit 2, one line, nothing in the store; returns the line."""
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert all_runs(store) == []
    assert [e.name for e in store.search_experiments()] == ["Default"]
    return err.strip()


# --- the format's errors: one ConfigError naming the file and the line -----------
def test_unknown_stage_kind_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("kind: select", "kind: choose"))
    exc = error_of(path)
    assert str(exc).startswith(f"{path}:{line_of(path, 'kind: choose')}: stages.best.kind: unknown stage kind 'choose'")
    assert "sweep, search, select, evaluate, report" in str(exc)


def test_cycle_is_rejected(tmp_path: Path) -> None:
    text = SMALL.replace("    kind: select\n    needs: [orders]", "    kind: select\n    needs: [orders, lambdas]")
    path = write(tmp_path, text)
    exc = error_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: stages\.\w+\.needs: needs form a cycle: ", str(exc))
    assert "best → lambdas → best" in str(exc) or "lambdas → best → lambdas" in str(exc)


def test_graph_orders_by_needs_then_file_order_and_names_a_longer_cycle() -> None:
    text = """\
    name: g
    description: order
    stages:
      report: {kind: report, needs: [b, a]}
      b: {kind: sweep, axes: {seed: [0]}}
      pick: {kind: select, needs: [a, b]}
      a: {kind: sweep, axes: {seed: [1]}}
    """
    p = graph.order(spec.parse(textwrap.dedent(text), "g.yaml"))
    assert list(p.stages) == ["b", "a", "report", "pick"]  # each after its needs; written order otherwise
    cyclic = """\
    name: g
    description: a cycle of three
    stages:
      x: {kind: sweep, needs: [z], axes: {seed: [0]}}
      y: {kind: sweep, needs: [x], axes: {seed: [0]}}
      z: {kind: sweep, needs: [y], axes: {seed: [0]}}
    """
    with pytest.raises(ConfigError, match=r"^g\.yaml:\d: stages\.[xyz]\.needs: needs form a cycle: (\w → ){3}\w$"):
        graph.order(spec.parse(textwrap.dedent(cyclic), "g.yaml"))


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
    assert "(allowed: orders, best, lambdas, pick, test, report)" in str(exc)


def test_unknown_option_in_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("      - regularizer=l2", "      - regularizer=l2\n      - model=nope"))
    exc = error_of(path)
    assert str(exc) == (f"{path}:{line_of(path, 'model=nope')}: stages.lambdas.overrides[2]: "
                        "model: unknown option 'nope' (allowed: linear, mlp)")


def test_bad_axis_value_points_at_the_axis(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("interval(1e-3, 1)", "interval(-1.0, 1)"))
    exc = error_of(path)
    assert str(exc).startswith(f"{path}:{line_of(path, 'regularizer.strength:')}: stages.lambdas.axes.regularizer.strength")


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("  orders:\n    kind: sweep\n", "  orders:\n    kind: sweep\n    axis: {}\n", "unknown key for a sweep stage"),
    ("experiment: small", "experiment: small\nexperiments: x", "experiments: unknown key"),
    ("  - trainer.max_epochs=5", "  - hydra.callbacks.x.y=1", "not an override a pipeline may set"),
    ("  - trainer.max_epochs=5", "  - +foo=1", "adding (+) or deleting (~) config keys is not allowed"),
    ("  - trainer.max_epochs=5", "  - experiment_name=other", "set by the pipeline's `experiment:`"),
    ("    needs: [best]\n    overrides:\n      - features.order=${best.features.order}",
     "    needs: [best, orders]\n    overrides:\n      - features.order=${orders.features.order}",
     "'orders' is a sweep stage; only a select stage has values"),
    ("    needs: [best]\n    overrides:", "    needs: [orders]\n    overrides:", "stage 'best' is not in needs"),
    ("    kind: evaluate\n    needs: [pick]", "    kind: evaluate\n    needs: [orders]", "exactly one select stage"),
    ("    kind: select\n    needs: [lambdas]", "    kind: select\n    needs: [best]", "one or more sweep or search"),
    ("  best:\n", "  orders:\n", "duplicate key"),
    ("[1, 3]", "[1, 3", "not valid YAML"),
    ("[1, 3]", "interval(1, 3)", "an interval is searched, not swept"),
    ("    kind: sweep\n    axes:", "    kind: search\n    n_trials: 0\n    axes:", "n_trials: got 0"),
])
def test_schema_errors(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in SMALL
    path = write(tmp_path, SMALL.replace(old, new, 1))
    exc = error_of(path)
    assert re.match(rf"{re.escape(str(path))}:\d+", str(exc)), str(exc)
    assert problem in str(exc)


# --- what a file may not do: escape the store, send runs elsewhere, fetch data, blow up ------------
@pytest.mark.parametrize(("line", "problem"), [
    ("tracking.uri=http://elsewhere:5000", "may not set tracking.uri"),
    ("tracking.artifact_location=/tmp/elsewhere", "may not set tracking.artifact_location"),
    ("tracking=mlflow", "may not set tracking"),
    ("dataset.root=/elsewhere", "may not set dataset.root"),
    ("dataset.download=true", "may not set dataset.download"),
    ("hydra.run.dir=/elsewhere", "'hydra.run.dir' is not an override a pipeline may set"),
    ("hydra.sweep.dir=/elsewhere", "'hydra.sweep.dir' is not an override a pipeline may set"),
    ("hydra.sweeper.storage=sqlite:////elsewhere/optuna.db", "hydra.sweeper.storage is a path or a command"),
    ("hydra.launcher.submitit_folder=/elsewhere", "is a path or a command"),
])
def test_a_file_may_not_set_tracking_paths_or_downloads(root: Path, store: MlflowClient, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], line: str,
                                                        problem: str) -> None:
    path = write(tmp_path, SMALL.replace("  - trainer.max_epochs=5", f"  - {line}"))
    err = rejected(capsys, store, path)
    assert f"{path}:{line_of(path, line)}: overrides[4]: " in err and problem in err


def test_the_command_line_may_set_tracking_and_data(tmp_path: Path) -> None:
    """The operator, not the study, chooses the store and the data: allowed on the command line."""
    given = spec.cli_overrides(["tracking.uri=sqlite:///other.db", "dataset.root=/data", "dataset.download=true"])
    assert [o.key for o in given] == ["tracking.uri", "dataset.root", "dataset.download"]
    with pytest.raises(ConfigError, match="hydra.sweeper.custom_search_space is a path or a command"):
        spec.cli_overrides(["hydra.sweeper.custom_search_space=os.system"])


@pytest.mark.parametrize("experiment", ["/elsewhere/x", "../../x", ".hidden", "a/b", "x" * 201, "'a\\\\b'"])
def test_experiment_must_be_a_plain_name(root: Path, store: MlflowClient, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], experiment: str) -> None:
    path = write(tmp_path, SMALL.replace("experiment: small", f"experiment: {experiment}"))
    err = rejected(capsys, store, path)
    assert f"{path}:3: experiment: " in err and "is not a plain experiment name" in err
    assert not (tmp_path / "elsewhere").exists() and not (root.parent / "x").exists()


def test_alias_bomb_is_one_line(root: Path, store: MlflowClient, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    layers = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    layers += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]  # 9**10 leaves
    path = write(tmp_path, SMALL.replace("stages:\n", "\n".join(layers) + "\nstages:\n"))
    err = rejected(capsys, store, path)
    assert f"{path}:{line_of(path, 'a0: &a0')}: YAML anchors and aliases" in err


def test_a_nul_byte_is_one_line_naming_its_line(root: Path, store: MlflowClient, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SMALL.replace("experiment: small", "experiment: sm\x00all"))
    err = rejected(capsys, store, path)
    assert f"{path}:3: not valid YAML: character U+0000 is not allowed" in err


def test_yaml_tags_and_deep_nesting_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("name: small", "name: !!python/name:os.system small"))
    assert "YAML tags (tag:yaml.org,2002:python/name:os.system) are not allowed" in str(error_of(path))
    path = write(tmp_path, SMALL.replace("experiment: small", "experiment: small\nx: " + "[" * 40 + "]" * 40))
    assert f"{path}:4: nested more than {spec.MAX_DEPTH} levels deep" == str(error_of(path))


def test_oversized_file_is_one_line(root: Path, store: MlflowClient, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SMALL + "# " + "x" * spec.MAX_BYTES + "\n")
    err = rejected(capsys, store, path)
    assert err == f"overfit: error: {path}: 256 KiB is too large for a pipeline file (allowed: at most 256 KiB)"


def test_a_rejected_file_creates_no_run(root: Path, store: MlflowClient, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    path = write(tmp_path, SMALL.replace("kind: evaluate", "kind: evaluation"))
    err = rejected(capsys, store, path)
    assert f"{path}:{line_of(path, 'kind: evaluation')}: stages.test.kind: unknown stage kind" in err


def test_command_line_overrides_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL)
    with pytest.raises(ConfigError, match="command line: overrides\\[0\\]: .*_target_ is not allowed"):
        plan.prepare(str(path), ["hydra.launcher._target_=os.system"])
    with pytest.raises(ConfigError, match="command line: overrides\\[0\\]: model: unknown option 'nope'"):
        plan.prepare(str(path), ["model=nope"])


def test_allowed_groups_are_the_projects_config_groups() -> None:
    from overfit import config
    from overfit.training import parts

    assert set(spec.GROUPS) == {*parts.GROUPS, *config.SCHEMAS}


def test_shipped_studies_parse_and_validate() -> None:
    assert {"polynomial_order", "regularization", "learning_rate", "data_size", "digits_capacity", *NEEDS_FILES} <= \
        set(STUDIES)
    for name in STUDIES:
        p = spec.load(str(REPO / "pipelines" / f"{name}.yaml"))
        assert p.name == name and len(p.description) > 200, name
        if name not in NEEDS_FILES:
            plan.prepare(str(REPO / "pipelines" / f"{name}.yaml"), [])


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


def test_show_on_an_unreachable_store_is_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "pipeline", "show", str(REPO / "pipelines" / "learning_rate.yaml"),
                           "tracking.uri=http://127.0.0.1:9")
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("overfit: error: MLflow tracking server http://127.0.0.1:9 does not "
                                                   "answer ([Errno 111] Connection refused)")


def test_show_list_and_help_do_not_import_torch(tmp_path: Path) -> None:
    """Commands that train nothing stay at the import floor: no PyTorch, no Lightning (seconds each)."""
    env = {**os.environ, "OVERFIT_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = ("import sys\nfrom overfit import cli\n"
              f"codes = cli.main(['pipeline', 'show', {str(REPO / 'pipelines' / 'polynomial_order.yaml')!r}]), "
              "cli.main(['pipeline', 'list']), cli.main(['--help'])\n"
              "print('imported:', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'torchvision'}))\n"
              "sys.exit(max(codes))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imported: []" in done.stdout
    assert not (tmp_path / "mlruns").exists()  # nothing created, not even the store
    assert "polynomial_order" in done.stdout and "never run" in done.stdout


# --- running ---------------------------------------------------------------------------
def test_small_pipeline_end_to_end(root: Path, store: MlflowClient, capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    """sweep → select → Optuna search (its order from the selection) → select → evaluate → report; rerun; change."""
    path = write(tmp_path, SMALL)
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    runs = all_runs(store)
    pipelines = [r for r in runs if r.data.tags.get(spec.TAG) == "small"]
    assert len(pipelines) == 1
    top = pipelines[0]
    assert top.info.status == "FINISHED" and top.data.tags[TAG_KIND] == "pipeline"
    assert top.info.run_name == "small"  # named after the study, described by it
    note = top.data.tags["mlflow.note.content"]  # the study's prose, then what each stage found, linked
    assert note.startswith("A tiny study for the tests.\n\n### Result\n")
    assert f"- **best**: **{top.data.tags['best.selected']}** by min val/error" in note
    assert f"runs/{store.get_model_version('small', '1').run_id})" in note and "`models:/small/1`" in note
    assert "- **test**: " in note and "test/error" in note
    artifacts = {a.path for a in store.list_artifacts(top.info.run_id)}
    assert {"pipeline", "report"} <= artifacts
    assert [a.path for a in store.list_artifacts(top.info.run_id, "pipeline")] == ["pipeline/study.yaml"]
    logged = {a.path for a in store.list_artifacts(top.info.run_id, "report")}
    assert {"report/report.html", "report/orders_curves.png", "report/lambdas_curves.png"} <= logged

    # pipeline run → one parent per sweep/search/evaluate stage, named "<stage>: ..." → training children
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == "sweep"]
    assert len(parents) == 3
    assert all(r.data.tags.get(TAG_PARENT) == top.info.run_id for r in parents)
    children = {p.info.run_id: [r for r in runs if r.data.tags.get(TAG_PARENT) == p.info.run_id] for p in parents}
    by_stage = {p.data.tags[TAG_NAME].split(":")[0]: p for p in parents}
    orders, lambdas, evaluate = by_stage["orders"], by_stage["lambdas"], by_stage["test"]
    assert orders.data.tags[TAG_NAME] == "orders: features.order=1,3"
    assert lambdas.data.tags[TAG_NAME] == "lambdas: search λ=0.001…1 log, 2 trials"
    assert len(children[orders.info.run_id]) == 2
    assert children[evaluate.info.run_id] == []  # the selected point is reused, not retrained

    # the first selection feeds the search; the search's trials are chosen by Optuna within the interval
    order = top.data.tags["best.selected"].removeprefix("features.order=")
    assert order in ("1", "3")
    trials = children[lambdas.info.run_id]
    assert len(trials) == 2 and len({r.info.run_name for r in trials}) == 2
    assert {r.data.params["features.order"] for r in trials} == {order}
    assert all(1e-3 <= float(r.data.params["regularizer.strength"]) <= 1 for r in trials)

    # the second selection picks the search's trial with the lowest validation error; evaluate reuses it
    winner = min(trials, key=lambda r: r.data.metrics["val/error"])
    assert lambdas.data.tags["best.run_id"] == winner.info.run_id
    selected = top.data.tags["pick.selected"]
    assert selected == f"regularizer.strength={winner.data.params['regularizer.strength']}"
    assert evaluate.data.tags[TAG_NAME] == f"test: evaluate {selected}"
    assert evaluate.data.tags[f"{TAG_REUSED}0"] == winner.info.run_id

    # the pipeline run's result under keys of its own: sorting the runs table by val/error ranks points only
    assert top.data.metrics["evaluated/test/error"] == pytest.approx(winner.data.metrics["test/error"])
    assert top.data.metrics["evaluated/val/error"] == pytest.approx(winner.data.metrics["val/error"])
    assert "evaluated/generalization_gap" in top.data.metrics
    points = {k for r in runs if r.data.tags.get("overfit.kind") == "point" for k in r.data.metrics}
    assert not points & {k for r in runs if r.data.tags.get("overfit.kind") != "point" for k in r.data.metrics}
    assert all(r.info.run_name and r.info.run_name.strip() not in ("sweep", "") for r in runs)  # no empty parent

    # the report: one self-contained HTML file plus the PNGs, path and UI command printed at the end
    html_path = root / "reports" / "small" / "report.html"
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") >= 3  # two sweeps' curves and a training history
    assert len(list(html_path.parent.glob("orders_fit_features.order=*.png"))) == 2  # the points' own pictures
    assert f"selected <b>{selected}</b>" in html
    tail = out.strip().splitlines()[-2:]
    assert tail[0] == f"[overfit] report: {html_path}"
    assert tail[1].startswith("[overfit] open the MLflow UI: ") and " ui --backend-store-uri sqlite:///" in tail[1]

    # show knows which jobs are finished and which order the first selection takes; a search picks as it runs
    code, out, _ = run_cli(capsys, "pipeline", "show", str(path))
    assert code == 0 and f"now: features.order={order}" in out and "2 trials, chosen as it runs" in out
    assert "2 finished (would be reused), 0 would run, 1 wait for a selection, 2 picked by a search" in out

    # a second run reuses everything (the seeded search asks for the same trials): no new training run
    trained = {r.info.run_id for r in training_runs(store)}
    assert len(trained) == 4
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    assert {r.info.run_id for r in training_runs(store)} == trained
    assert len([r for r in all_runs(store) if r.data.tags.get(spec.TAG) == "small"]) == 2

    # one more trial re-runs only that trial
    write(tmp_path, SMALL.replace("n_trials: 2", "n_trials: 3"))
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 0, err[-3000:]
    new = [r for r in training_runs(store) if r.info.run_id not in trained]
    assert len(new) == 1 and new[0].data.params["features.order"] == order


def test_a_failing_stage_ends_the_pipeline_run_failed(root: Path, store: MlflowClient,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Every point diverges: nothing to select from, so the run ends FAILED with the reason."""
    text = SMALL.replace("[1, 3]", "[3]").replace("  - trainer.max_epochs=5", "  - trainer.max_epochs=30\n  - optimizer.lr=5.0")
    path = write(tmp_path, text)
    code, out, err = run_cli(capsys, "pipeline", "run", str(path))
    assert code == 2
    assert "stages.best: no finished point of orders has the metric 'val/error'" in err
    top = next(r for r in all_runs(store) if r.data.tags.get(spec.TAG) == "small")
    assert top.info.status == "FAILED" and "no finished point" in top.data.tags["failure.reason"]


# --- adaptive search from the command line ---------------------------------------------------
def test_optuna_sweep_records_diverged_trials(root: Path, store: MlflowClient,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Each trial a named child of one parent; a diverged trial is a result (the worst value), not a crash."""
    code, out, err = run_cli(capsys, "train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                             "optimizer.lr=0.1,3.0", "dataset=polynomial", "features=polynomial",
                             "features.order=3", "optimizer=gd", "trainer.max_epochs=30", "dataset.n_test=50")
    runs = all_runs(store)  # the command returned: a NaN from a diverged trial no longer crashes Optuna's sweeper
    (parent,) = [r for r in runs if r.data.tags.get(TAG_KIND) == "sweep"]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep lr=0.1,3.0"
    kids = [r for r in runs if r.data.tags.get(TAG_PARENT) == parent.info.run_id]
    # Named and numbered by trial, in the order Optuna proposed them: "trial 0: lr=3.0".
    assert sorted(r.info.run_name.split(": ")[0] for r in kids) == ["trial 0", "trial 1"]
    assert all(r.info.run_name == f"trial {r.data.tags['trial']}: lr={r.data.params['optimizer.lr']}" for r in kids)
    trials = {r.info.run_name.split(": ")[1]: r for r in kids}
    assert set(trials) == {"lr=0.1", "lr=3.0"}  # the seeded sampler's two picks
    assert trials["lr=3.0"].info.status == "FAILED" and trials["lr=3.0"].data.tags["failure"] == "diverged"
    assert trials["lr=0.1"].info.status == "FINISHED"
    assert code == 1 and "1 of 2 points did not finish" in out
    assert parent.data.tags["best.run_id"] == trials["lr=0.1"].info.run_id
    report = {a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    assert {"report/curves_optimizer_lr.png", "report/optimization_history.png"} <= report


# --- adaptive search against the grid (slow) ---------------------------------------------------
@pytest.mark.slow
def test_optuna_sweep_finds_lambda_as_good_as_the_grid(root: Path, store: MlflowClient,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """12 Optuna trials over λ: one parent, 12 children, the report; its best λ tests within 10 % of the grid's best."""
    code, out, err = run_cli(capsys, "train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=12",
                             "regularizer.strength=tag(log,interval(1e-5,10))", *ORDER_12)
    assert code == 0, err[-3000:]
    runs = all_runs(store)
    (parent,) = [r for r in runs if r.data.tags.get(TAG_KIND) == "sweep"]
    trials = [r for r in runs if r.data.tags.get(TAG_PARENT) == parent.info.run_id]
    assert len(trials) == 12 and len({r.info.run_name for r in trials}) == 12
    assert parent.info.run_name == "sweep λ=1e-05…10 log"  # the searched range, not the override's grammar
    assert all(len(r.info.run_name.split("λ=")[1]) <= 10 for r in trials)  # "λ=0.004222", not 17 digits
    assert {"report/summary.md", "report/curves_regularizer_strength.png"} <= {
        a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    best = next(r for r in trials if r.info.run_id == parent.data.tags["best.run_id"])
    assert best.data.metrics["val/error"] == min(r.data.metrics["val/error"] for r in trials)

    code, out, err = run_cli(capsys, "train", "-m", "regularizer.strength=0,1e-5,1e-4,1e-3,1e-2,0.1,1,10", *ORDER_12)
    assert code == 0, err[-3000:]
    grid = [r for r in all_runs(store) if r.data.tags.get(TAG_KIND) == "sweep" and r.info.run_id != parent.info.run_id]
    grid_best = store.get_run(grid[0].data.tags["best.run_id"])
    with capsys.disabled():
        print(f"\noptuna: best λ={best.data.params['regularizer.strength']}, test error "
              f"{best.data.metrics['test/error']:.4g}; grid: best λ={grid_best.data.params['regularizer.strength']}, "
              f"test error {grid_best.data.metrics['test/error']:.4g}")
    assert best.data.metrics["test/error"] <= 1.1 * grid_best.data.metrics["test/error"]


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
    assert "(0 ran, 120 reused)" in done.stdout and "(0 ran, 10 reused)" in done.stdout  # 12 orders × 10 seeds, 10 new
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    points = [r for r in training_runs(client)]
    assert len(points) == 130
    by_order: dict[str, list[float]] = {}  # the sweep's seeds 0-9 per order (evaluate drew seeds 10-19)
    for r in points:
        if int(r.data.params["seed"]) < 10:
            by_order.setdefault(r.data.tags["point"], []).append(r.data.metrics["test/error"])
    assert len(by_order) == 12 and all(len(v) == 10 for v in by_order.values())
    sweep = {k: sum(v) / 10 for k, v in by_order.items()}
    assert min(sweep, key=sweep.get) in ("features.order=3", "features.order=4")
    html = (tmp_path / "reports" / "polynomial_order" / "report.html").read_text()
    assert "lowest mean test error" in html and "by the one-standard-error rule" in html


@pytest.mark.slow
def test_learning_rate_study_reports_diverged_points(tmp_path: Path) -> None:
    done = _cli(tmp_path, "pipeline", "run", "pipelines/learning_rate.yaml", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    diverged = {r.data.params["optimizer.lr"] for r in training_runs(client) if r.data.tags.get("failure") == "diverged"}
    assert diverged == {"1.5", "3.0"}
    html = (tmp_path / "reports" / "learning_rate" / "report.html").read_text()
    assert html.count(">diverged</span>") == 2 and "2 diverged" in html
