"""``overfit pipeline run|show|list``: the stages in order, recorded as one MLflow run.

The pipeline run is created with :class:`~mlflow.tracking.MlflowClient` (not the
fluent API, whose active-run stack would nest runs implicitly), tagged
``overfit.pipeline=<name>``, with the pipeline file as an artifact. Each sweep
and evaluate stage is a Hydra multirun (:func:`overfit.sweeps.run_sweep`) whose
parent run carries ``mlflow.parentRunId`` = the pipeline run; its points reuse
FINISHED runs with the same config hash. The run ends FINISHED when every stage
ran (diverged points are results, not failures), FAILED with the reason when a
stage raised, KILLED on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback

from overfit.errors import ConfigError
from overfit.pipeline.spec import GROUPS, TAG, Job, Pipeline, Planner, Stage, load_and_plan, merge, parse, pipeline_dirs

if TYPE_CHECKING:
    from overfit.tracking.report import Point

SPLITS = ("train", "val", "test")


# --- read-only store lookups ----------------------------------------------------
class Store:
    """The store as it is: never creates a database, an experiment or a run."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: Any = None
        self._experiments: dict[str, str | None] = {}

    @property
    def exists(self) -> bool:
        return not self.uri.startswith("sqlite:///") or Path(self.uri.removeprefix("sqlite:///")).is_file()

    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def experiment_id(self, name: str) -> str | None:
        if not self.exists:
            return None
        if name not in self._experiments:
            found = self.client().get_experiment_by_name(name)
            self._experiments[name] = found.experiment_id if found is not None else None
        return self._experiments[name]

    def latest(self, job: Job) -> Any:
        """The newest run with the job's config hash in its experiment (any status), or None."""
        from overfit.tracking.runs import TAG_HASH

        experiment_id = self.experiment_id(job.cfg.experiment_name)
        if experiment_id is None:
            return None
        runs = self.client().search_runs([experiment_id], f"tags.`{TAG_HASH}` = '{job.hash}'",
                                         order_by=["attributes.start_time DESC"], max_results=20)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        return finished[0] if finished else (runs[0] if runs else None)


def status_of(run: Any) -> str:
    if run is None:
        return "would run"
    if run.info.status == "FINISHED":
        return f"finished {run.info.run_id[:8]} (reused)"
    kind = run.data.tags.get("failure", run.info.status.lower())
    return f"would run ({kind} before)"


# --- progress ---------------------------------------------------------------------
class Progress(Callback):
    """Hydra callback the runner adds to a stage's sweep: one line per finished point."""

    def __init__(self, stage: str, index: int, count: int, total: int, start: float) -> None:
        self.stage, self.index, self.count, self.total, self.start = stage, index, count, total, start

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        marker = Path(HydraConfig.get().sweep.dir) / "pipeline_progress"
        with marker.open("a") as f:
            f.write("1\n")
        done = len(marker.read_text().splitlines())
        print(f"[overfit] stage {self.index}/{self.count} '{self.stage}': {done}/{self.total} points done, "
              f"{time.time() - self.start:.1f} s", flush=True)


# --- show and list -----------------------------------------------------------------
def show(name: str, args: list[str]) -> int:
    """Every job a run would launch, whether it is already finished, on which launcher. Runs nothing."""
    from overfit.tracking import runs as tracking

    pipeline, planner, static = load_and_plan(name, args)
    store = Store(tracking.tracking_uri(planner.any_job().cfg.tracking))
    stages = pipeline.ordered()
    chosen: dict[str, Job | None] = {}
    pool_of: dict[str, list[Job]] = {}
    jobs_of: dict[str, list[Job] | None] = dict(static)
    rows: list[tuple[str, str, str, str]] = []
    counts = {"finished": 0, "run": 0, "later": 0}
    for i, stage in enumerate(stages, 1):
        label = f"{i}/{len(stages)} {stage.name} ({stage.kind})"
        if stage.kind == "select":
            pool = pool_of[stage.name] = [j for n in stage.needs for j in (jobs_of.get(n) or [])]
            known = all(jobs_of.get(n) for n in stage.needs)
            picked = chosen[stage.name] = _select_from_store(store, pool, stage) if known else None
            state = f"now: {_point_label(picked, pool)}" if picked else "decided when it runs"
            rows.append((label, f"{stage.mode} {stage.metric} over {', '.join(stage.needs)}", state, ""))
            continue
        if stage.kind == "report":
            rows.append((label, "over " + ", ".join(stage.needs), f"reports/{pipeline.name}/report.html", ""))
            continue
        needed = [n for n in stage.needs if pipeline.stages[n].kind == "select"]
        if stage.name not in static:
            if any(chosen.get(n) is None for n in needed):
                jobs_of[stage.name] = None
                n_jobs = 1
                for a in stage.axes:
                    n_jobs *= len(a.values)
                what = " ".join(a.override().text for a in stage.axes) or f"the config {needed[0]} selects"
                launcher = merge(pipeline.overrides, stage.overrides, planner.cli).get("hydra/launcher")
                rows.append((label, what, f"{n_jobs} job(s), after {', '.join(needed)}",
                             launcher.value if launcher else "basic"))
                counts["later"] += n_jobs
                continue
            jobs_of[stage.name] = planner.jobs(stage, {n: chosen[n] for n in needed})  # type: ignore[misc]
        jobs = jobs_of[stage.name] or []
        keys = [k for k in jobs[0].overrides if len({j.overrides.get(k) for j in jobs}) > 1]
        pools = [pool_of[n] for n in needed if n in pool_of]
        for j, job in enumerate(jobs):
            state = status_of(store.latest(job))
            counts["finished" if state.startswith("finished") else "run"] += 1
            shown = " ".join(job.overrides[k] for k in keys)
            if stage.kind == "evaluate" and pools:
                shown = " ".join(x for x in (_point_label(job, pools[0]), shown) if x)
            shown = shown or _point_label(job, [])
            rows.append((label if j == 0 else "", shown, state, job.launcher))
    print(f"pipeline {pipeline.name} ({pipeline.shown}): {len(stages)} stages, experiment "
          f"{pipeline.experiment!r}, store {store.uri}")
    base = " ".join(o.text for o in merge(pipeline.overrides, planner.cli).values())
    print(f"overrides for every job: {base or '(none)'}")
    header = ("stage", "job", "status", "launcher")
    widths = [max(len(r[c]) for r in [*rows, header]) for c in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    total = counts["finished"] + counts["run"] + counts["later"]
    print(f"{total} jobs: {counts['finished']} finished (would be reused), {counts['run']} would run, "
          f"{counts['later']} wait for a selection. Nothing was run.")
    return 0


def _point_label(job: Job, pool: list[Job]) -> str:
    """The overrides that tell this job from the others in ``pool`` (all but the experiment if alone)."""
    varying = [k for k in job.overrides if len({p.overrides.get(k) for p in pool}) > 1]
    return " ".join(job.overrides[k] for k in varying) or " ".join(
        t for k, t in job.overrides.items() if k != "experiment_name")


def _select_from_store(store: Store, pool: list[Job], stage: Stage) -> Job | None:
    """The selection a run would make now, when every candidate has a run in the store."""
    import math

    scored = []
    for job in pool:
        run = store.latest(job)
        if run is None or (run.info.status != "FINISHED" and run.data.tags.get("failure") != "diverged"):
            return None
        value = run.data.metrics.get(stage.metric, math.nan) if run.info.status == "FINISHED" else math.nan
        if math.isfinite(value):
            scored.append((value if stage.mode == "min" else -value, len(scored), job))
    return min(scored)[2] if scored else None


def list_pipelines() -> int:
    """The studies in ``pipelines/`` and the latest run of each in the store."""
    from overfit.tracking import runs as tracking

    store = Store(tracking.tracking_uri())
    found = False
    for d in pipeline_dirs():
        for file in sorted(d.glob("*.yaml")):
            found = True
            try:
                p = parse(file.read_text(), str(file), file)
            except ConfigError as exc:
                print(f"{file.stem:<18} INVALID: {exc}")
                continue
            kinds = " → ".join(f"{s.name}({s.kind})" for s in p.ordered())
            last = "never run"
            experiment_id = store.experiment_id(p.experiment)
            if experiment_id is not None:
                runs = store.client().search_runs([experiment_id], f"tags.`{TAG}` = '{p.name}'",
                                                  order_by=["attributes.start_time DESC"], max_results=1)
                if runs:
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(runs[0].info.start_time / 1000))
                    last = f"last run {runs[0].info.status} {when} ({runs[0].info.run_id[:8]})"
            first_sentence = p.description.split(". ")[0].rstrip(".") + "."
            print(f"{p.name:<18} {file}\n    {first_sentence}\n    stages: {kinds}\n    {last}")
    if not found:
        print("no pipelines found in " + " or ".join(str(d) for d in pipeline_dirs()))
    return 0



@dataclass
class SweepResult:
    """A sweep (or evaluate) stage's outcome: its parent run, points and jobs."""

    stage: Stage
    parent_run_id: str
    keys: list[str]  # the points' swept keys in the file's axis order (group axes as ``loss.name``)
    points: list[Point]
    jobs: list[Job]
    seconds: float
    order: dict[str, list[str]] = field(default_factory=dict)  # key → values in the file's order

    @property
    def diverged(self) -> list[Point]:
        return [p for p in self.points if p.status != "FINISHED" and p.reason.startswith("diverged")]

    @property
    def failed(self) -> list[Point]:
        return [p for p in self.points if p.status != "FINISHED" and not p.reason.startswith("diverged")]


@dataclass
class Selection:
    """The point a select stage chose, the sweep it came from and its job."""

    stage: Stage
    sweep: str
    point: Point
    job: Job
    value: float
    label: str


@dataclass
class Evaluation:
    """The selected config's runs (one per evaluate point) and their mean metrics."""

    stage: Stage
    selection: Selection
    result: SweepResult
    metrics: dict[str, float]
    spread: dict[str, float]


Result = SweepResult | Selection | Evaluation


def point_label(point: Point, keys: list[str]) -> str:
    return " ".join(f"{k.removesuffix('.name')}={point.values.get(k, '?')}" for k in keys)


def _axis_keys(planner: Planner, stage: Stage, chosen: dict[str, Job]) -> tuple[list[str], dict[str, list[str]]]:
    _, axes = planner.stage_overrides(stage, chosen)
    keys = [f"{a.key}.name" if a.key in GROUPS else a.key for a in axes]
    order = {k: [v.strip("'") for v in a.values] for k, a in zip(keys, axes)}
    return keys, order


def _progress_args(stage: Stage, index: int, count: int, total: int, start: float) -> list[str]:
    cb = "+hydra.callbacks.overfit_pipeline_progress"
    return [f"{cb}._target_=overfit.pipeline.run.Progress", f"{cb}.stage={stage.name}", f"{cb}.index={index}",
            f"{cb}.count={count}", f"{cb}.total={total}", f"{cb}.start={start}"]


def _run_sweep(args: list[str]) -> Any:
    from overfit.tracking import sweeps

    saved = sys.argv
    try:
        return sweeps.run_sweep(args)
    finally:
        sys.argv = saved


class Runner:
    def __init__(self, pipeline: Pipeline, planner: Planner, run_id: str, client: Any, store: Store) -> None:
        self.pipeline, self.planner, self.run_id, self.client, self.store = pipeline, planner, run_id, client, store
        self.results: dict[str, Result] = {}
        self.report: Path | None = None

    def chosen_for(self, stage: Stage) -> dict[str, Job]:
        return {n: r.job for n in stage.needs if isinstance(r := self.results[n], Selection)}

    def sweep(self, stage: Stage, index: int, count: int) -> SweepResult:
        start = time.time()
        chosen = self.chosen_for(stage)
        jobs = self.planner.jobs(stage, chosen)
        runs = [self.store.latest(j) for j in jobs]
        done = [r for r in runs if r is not None and r.info.status == "FINISHED"]
        print(f"[overfit] stage {index}/{count} '{stage.name}' ({stage.kind}): {len(jobs)} point(s), "
              f"{len(done)} finished earlier (reused), {len(jobs) - len(done)} to run", flush=True)
        fixed, axes = self.planner.stage_overrides(stage, chosen)
        task = [*(o.text for o in fixed.values()), *(a.override().text for a in axes), f"sweep.parent_run_id={self.run_id}"]
        outcome = _run_sweep(["-m", *task, *_progress_args(stage, index, count, len(jobs), start)])
        keys, order = _axis_keys(self.planner, stage, chosen)
        points = outcome.points
        for p in points:  # a top-level knob (seed) is not in the sweep's own axes: read it from the run
            missing = [k for k in keys if p.values.get(k, "?") == "?"]
            if missing:
                params = self.client.get_run(p.run_id).data.params
                p.values.update({k: params[k] for k in missing if k in params})
        keys = [k for k in keys if points and all(k in p.values for p in points)]
        result = SweepResult(stage, outcome.parent_run_id, keys, points, jobs, time.time() - start, order)
        trained = sum(not p.reused for p in points)
        extra = "".join(f", {len(x)} {w}" for x, w in ((result.diverged, "diverged"), (result.failed, "failed")) if x)
        print(f"[overfit] stage {index}/{count} '{stage.name}' done: {len(points)} points ({trained} ran, "
              f"{len(points) - trained} reused{extra}) in {result.seconds:.1f} s", flush=True)
        return result

    def select(self, stage: Stage, index: int, count: int) -> Selection:
        from overfit.errors import ConfigError
        from overfit.tracking.runs import TAG_HASH

        scored = []
        for n in stage.needs:
            result = self.results[n]
            assert isinstance(result, SweepResult)
            for p in result.points:
                value = p.metrics.get(stage.metric, math.nan) if p.status == "FINISHED" else math.nan
                if math.isfinite(value):
                    scored.append((value if stage.mode == "min" else -value, len(scored), n, p))
        if not scored:
            raise ConfigError(f"{stage.where}: stages.{stage.name}",
                              f"no finished point of {', '.join(stage.needs)} has the metric {stage.metric!r}")
        _, _, sweep, point = min(scored, key=lambda s: s[:2])
        result = self.results[sweep]
        assert isinstance(result, SweepResult)
        wanted = self.client.get_run(point.run_id).data.tags.get(TAG_HASH)
        job = next((j for j in result.jobs if j.hash == wanted), None)
        if job is None:
            raise RuntimeError(f"stage {stage.name!r}: run {point.run_id} matches no job of {sweep!r}")
        label = point_label(point, result.keys) or "the only point"
        if len(stage.needs) > 1:
            label = f"{sweep}: {label}"
        value = point.metrics[stage.metric]
        print(f"[overfit] stage {index}/{count} '{stage.name}' (select): {label} by {stage.mode} {stage.metric} "
              f"= {value:.4g} (run {point.run_id})", flush=True)
        self.client.set_tag(self.run_id, f"{stage.name}.selected", label)
        self.client.log_metric(self.run_id, f"{stage.name}/{stage.metric}", value)
        return Selection(stage, sweep, point, job, value, label)

    def evaluate(self, stage: Stage, index: int, count: int) -> Evaluation:
        selection = next(r for n in stage.needs if isinstance(r := self.results[n], Selection))
        result = self.sweep(stage, index, count)
        finished = [p for p in result.points if p.status == "FINISHED"]
        names = sorted({k for p in finished for k in p.metrics if k.split("/")[0] in SPLITS or k == "generalization_gap"})
        metrics, spread = {}, {}
        for k in names:
            values = [p.metrics[k] for p in finished if k in p.metrics]
            metrics[k] = statistics.fmean(values)
            spread[k] = statistics.stdev(values) if len(values) > 1 else 0.0
        shown = ", ".join(f"{k} {metrics[k]:.4g}" + (f" ± {spread[k]:.2g}" if len(finished) > 1 else "")
                          for k in names if k.startswith("test/"))
        print(f"[overfit] stage {index}/{count} '{stage.name}' (evaluate): {selection.label} → {shown or 'no finished run'}",
              flush=True)
        for k, v in metrics.items():
            if k.startswith("test/") or k == "generalization_gap":
                self.client.log_metric(self.run_id, f"{stage.name}/{k}", v)
        return Evaluation(stage, selection, result, metrics, spread)

    def write_report(self, stage: Stage, index: int, count: int) -> Path:
        from overfit import paths
        from overfit.pipeline import report as pipeline_report
        from overfit.tracking import runs as tracking

        start = time.time()
        out = paths.project_root() / "reports" / self.pipeline.name
        html = pipeline_report.write(self.pipeline, stage, self.results, out, {
            "run_id": self.run_id,
            "experiment": self.pipeline.experiment,
            "store": self.store.uri,
            "ui": tracking.ui_command(self.store.uri),
        })
        self.client.log_artifacts(self.run_id, str(out), "report")
        print(f"[overfit] stage {index}/{count} '{stage.name}' (report): {html} ({time.time() - start:.1f} s)", flush=True)
        self.report = html
        return html

    def run_all(self) -> None:
        stages = self.pipeline.ordered()
        for i, stage in enumerate(stages, 1):
            if stage.kind == "sweep":
                self.results[stage.name] = self.sweep(stage, i, len(stages))
            elif stage.kind == "select":
                self.results[stage.name] = self.select(stage, i, len(stages))
            elif stage.kind == "evaluate":
                self.results[stage.name] = self.evaluate(stage, i, len(stages))
            else:
                self.write_report(stage, i, len(stages))


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(name: str, args: list[str]) -> int:
    """Validate everything, then run the stages; prints the report path and the MLflow UI command."""
    start = time.time()
    from mlflow.entities import RunStatus
    from mlflow.tracking import MlflowClient

    from overfit.tracking import runs as tracking

    pipeline, planner, _ = load_and_plan(name, args)
    cfg = planner.any_job().cfg
    print(f"[overfit] pipeline {pipeline.name!r} ({pipeline.shown}): {len(pipeline.stages)} stages, every job "
          f"validated in {time.time() - start:.1f} s", flush=True)
    experiment_id = tracking.connect(cfg)
    uri = tracking.tracking_uri(cfg.tracking)
    client = MlflowClient(uri)
    tags = {
        TAG: pipeline.name,
        "mlflow.runName": f"pipeline {pipeline.name}",
        "mlflow.note.content": pipeline.description,
        "overfit.pipeline.file": pipeline.shown,
        "overrides": " ".join(args),
        "stages": " ".join(f"{s.name}({s.kind})" for s in pipeline.ordered()),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_text(run_id, pipeline.text, f"pipeline/{pipeline.file.name}")
    print(f"[overfit] pipeline run {run_id} in experiment {pipeline.experiment!r}", flush=True)
    runner = Runner(pipeline, planner, run_id, client, Store(uri))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    if previous is signal.SIG_DFL:  # a scheduler's or `kill`'s SIGTERM ends the runs KILLED, like Ctrl-C
        signal.signal(signal.SIGTERM, _terminated)
    try:
        runner.run_all()
    except BaseException as exc:
        status, kind = tracking.failure_of(exc)
        client.set_tag(run_id, tracking.TAG_FAILURE, "error" if kind == "diverged" else kind)
        client.set_tag(run_id, tracking.TAG_REASON, f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, status)
        print(f"[overfit] pipeline {pipeline.name!r} {status} after {time.time() - start:.1f} s: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    sweeps = [r.result if isinstance(r, Evaluation) else r for r in runner.results.values()
              if isinstance(r, (SweepResult, Evaluation))]
    failed = [(r.stage.name, p) for r in sweeps for p in r.failed]
    client.set_tag(run_id, "diverged_points", str(sum(len(r.diverged) for r in sweeps)))
    client.set_tag(run_id, "failed_points", str(len(failed)))
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    print(f"[overfit] pipeline {pipeline.name!r} FINISHED in {time.time() - start:.1f} s: run {run_id}, "
          f"experiment {pipeline.experiment!r}", flush=True)
    for stage_name, p in failed:
        print(f"[overfit] stage {stage_name!r}: point {p.label or p.run_id} {p.status}: {p.reason}", flush=True)
    if runner.report is not None:
        print(f"[overfit] report: {runner.report}")
    print(f"[overfit] open the MLflow UI: {tracking.ui_command(uri)}", flush=True)
    return 1 if failed else 0
