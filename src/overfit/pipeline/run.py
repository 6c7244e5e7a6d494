"""``overfit pipeline run``: the stages in order, recorded as one MLflow pipeline run.

The pipeline run is created through :func:`overfit.tracking.runs.create` (kind
``pipeline``), named after the study, its description the study's description,
the file as an artifact. Each sweep, search and evaluate stage is one
:func:`overfit.app.sweep` nested beneath it and named ``"<stage>: <what>"``; its
points reuse finished runs with the same reuse key. A select stage picks with
:func:`overfit.tracking.points.best`, the one rule for "the best point" — or, for a
sweep with replicates, among its cells by mean (``rule: min``) or by the one-standard-error
rule (``rule: one_se``, :mod:`overfit.tracking.replicates`). The result's metrics sit on the
pipeline run under keys of their own (``selected/test/error``, ``evaluated/test/error``);
with several reporting stages each key ends in ``_<stage>``. The run ends
FINISHED when every stage ran (diverged points are results, not failures),
FAILED with the reason when a stage raised, KILLED on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from overfit import app, paths
from overfit.errors import ConfigError
from overfit.interrupts import Interrupted, Signals
from overfit.pipeline import graph
from overfit.pipeline import report as pipeline_report
from overfit.pipeline.plan import Job, Planner, point_key, prepare
from overfit.pipeline.results import Evaluation, Result, Selection, SweepResult, point_label
from overfit.pipeline.spec import TAG, Pipeline, Stage
from overfit.sweeping.driver import launcher_config
from overfit.tracking import models, replicates, runs, ui
from overfit.tracking.points import SPLITS, Point, best
from overfit.tracking.replicates import Cell
from overfit.tracking.stats import summarize
from overfit.tracking.store import Store, StoreError, store_for
from overfit.tracking.sweeps import axes as swept, sweep_name

HEADLINE = re.compile(r"(train|val|test)/(error|acc)|generalization_gap")  # a result's metrics on the pipeline run


class Runner:
    """Runs the stages of a validated pipeline beneath one pipeline run; keeps each stage's result."""

    def __init__(self, pipeline: Pipeline, planner: Planner, store: Store, run_id: str) -> None:
        self.pipeline, self.planner, self.store, self.run_id = pipeline, planner, store, run_id
        self.results: dict[str, Result] = {}
        self.report: Path | None = None
        self.models: dict[str, str] = {}  # select stage → the registry URI of the model it chose
        stages = pipeline.ordered()
        self.headline = [s.name for s in stages if s.kind == "evaluate"] or [s.name for s in stages if s.kind == "select"]

    def chosen_for(self, stage: Stage) -> dict[str, Job]:
        return {n: r.job for n in stage.needs if isinstance(r := self.results[n], Selection)}

    def sweep(self, stage: Stage, index: int, count: int, what: str) -> SweepResult:
        """One ``overfit train -m`` beneath the pipeline run, named ``"<stage>: <what>"``."""
        start = time.monotonic()
        chosen = self.chosen_for(stage)
        jobs = self.planner.jobs(stage, chosen)
        _, axes = self.planner.stage_overrides(stage, chosen)
        keys = [point_key(a.key) for a in axes]
        order = {} if stage.kind == "search" else {k: [v.strip("'") for v in a.values] for k, a in zip(keys, axes)}
        outcome = app.sweep(self.planner.task_args(stage, chosen), nest_under=self.run_id, name=f"{stage.name}: {what}",
                            label=f"stage {index}/{count} '{stage.name}': ")
        result = SweepResult(stage, outcome.parent_run_id, keys, outcome.points, jobs, time.monotonic() - start, order,
                             outcome.comparison)
        trained = sum(not p.reused for p in result.points)
        extra = "".join(f", {len(x)} {w}" for x, w in ((result.diverged, "diverged"), (result.failed, "failed")) if x)
        print(f"[overfit] stage {index}/{count} '{stage.name}' done: {len(result.points)} points ({trained} ran, "
              f"{len(result.points) - trained} reused{extra}) in {result.seconds:.1f} s", flush=True)
        return result

    def axes_text(self, stage: Stage) -> str:
        """``features.order=1…12``: what a stage varies, as the sweep parent's name says it."""
        _, axes = self.planner.stage_overrides(stage, self.chosen_for(stage))
        return sweep_name(swept([a.override().text for a in axes]))

    def candidates(self, stage: Stage) -> list[tuple[str, Point | Cell]]:
        """What a select stage chooses among: each sweep's points, or with replicates its cells."""
        found: list[tuple[str, Point | Cell]] = []
        for n in stage.needs:
            result = self.results[n]
            assert isinstance(result, SweepResult)
            c = result.comparison
            found += [(n, cell) for cell in c.cells] if c is not None and c.replicated else [(n, p) for p in result.points]
        return found

    def choose(self, stage: Stage, candidates: list[tuple[str, Point | Cell]]) -> Point | Cell | None:
        """The stage's rule: the best (mean) metric, or the simplest cell within one standard error of it."""
        rows = [c for _, c in candidates]
        if not any(isinstance(c, Cell) for c in rows):
            return best(rows, stage.metric, stage.mode)  # type: ignore[arg-type]
        cells = [c for c in rows if isinstance(c, Cell)]
        if stage.rule == "min":
            return replicates.lowest(cells, stage.metric, stage.mode)
        simpler: dict[str, str] = {}
        for n in stage.needs:
            result = self.results[n]
            assert isinstance(result, SweepResult) and result.comparison is not None
            simpler.update(result.comparison.simpler)
        chosen = replicates.one_standard_error(cells, simpler, stage.metric, stage.mode)
        if chosen is None and replicates.lowest(cells, stage.metric, stage.mode) is not None:
            raise ConfigError(f"{stage.where}: stages.{stage.name}.rule", "one_se: no swept knob of "
                              f"{', '.join(stage.needs)} declares which way is simpler", "rule: min")
        return chosen

    def select(self, stage: Stage, index: int, count: int) -> Selection:
        candidates = self.candidates(stage)
        picked = self.choose(stage, candidates)
        if picked is None:
            raise ConfigError(f"{stage.where}: stages.{stage.name}",
                              f"no finished point of {', '.join(stage.needs)} has the metric {stage.metric!r}")
        sweep = next(n for n, p in candidates if p is picked)
        result = self.results[sweep]
        assert isinstance(result, SweepResult)
        cell = picked if isinstance(picked, Cell) else None
        chosen = (cell.finished or cell.replicates)[0] if cell is not None else picked  # the run that stands for it
        assert isinstance(chosen, Point)
        label = (cell.label if cell is not None and cell.values else point_label(chosen, result.keys)) or "the only point"
        if len(stage.needs) > 1:
            label = f"{sweep}: {label}"
        value = picked.metric(stage.metric)
        rule = stage.mode if cell is None else ("the one-standard-error rule on" if stage.rule == "one_se"
                                                else "lowest mean" if stage.mode == "min" else "highest mean")
        found = cell.stat(stage.metric) if cell is not None else None
        shown = found.text() + f" (mean ± 95 % CI, n = {found.n})" if found is not None else f"{value:.4g}"
        print(f"[overfit] stage {index}/{count} '{stage.name}' (select): {label} by {rule} {stage.metric} "
              f"= {shown} (run {chosen.run_id})", flush=True)
        self.store.call("set_tag", self.run_id, f"{stage.name}.selected", label)
        metrics = cell.means() if cell is not None else chosen.metrics
        self.log_headline(stage, {k: v for k, v in metrics.items() if HEADLINE.fullmatch(k)})
        registered = models.register(self.store, self.pipeline.name, chosen.run_id, onto=self.run_id)  # its model
        if registered is not None:
            self.models[stage.name] = registered.uri
            self.store.call("set_tag", self.run_id, f"{stage.name}.model", registered.uri)
            print(f"[overfit] stage {index}/{count} '{stage.name}': model {registered.uri}"
                  f"{'' if registered.new else ' (registered before)'}", flush=True)
        return Selection(stage, sweep, chosen, self.job_of(result, chosen), value, label, cell)

    def job_of(self, result: SweepResult, point: Point) -> Job:
        """The composed job behind a point: one of the sweep's jobs, or (a search's trial) composed now."""
        wanted = self.store.call("get_run", point.run_id).data.tags.get(runs.TAG_HASH)
        job = next((j for j in result.jobs if j.hash == wanted), None)
        if job is None and result.stage.kind == "search":
            job = self.planner.job_for(result.stage, self.chosen_for(result.stage), point.values)
        if job is None or job.hash != wanted:
            raise RuntimeError(f"stage {result.stage.name!r}: run {point.run_id} matches no job of the stage")
        return job

    def evaluate(self, stage: Stage, index: int, count: int) -> Evaluation:
        selection = self.results[graph.selections(self.pipeline, stage)[0]]
        assert isinstance(selection, Selection)
        varied = f" × {self.axes_text(stage)}" if stage.axes else ""
        result = self.sweep(stage, index, count, f"evaluate {selection.label}{varied}")
        finished = [p for p in result.points if p.finished]
        names = sorted({k for p in finished for k in p.metrics if k.split("/")[0] in SPLITS or HEADLINE.fullmatch(k)})
        summaries = {k: summarize([p.metrics[k] for p in finished if k in p.metrics]) for k in names}
        metrics = {k: s.mean for k, s in summaries.items()}
        spread = {k: s.half_width for k, s in summaries.items() if s.n > 1}
        shown = ", ".join(f"{k} {summaries[k].text()}" for k in names if k.startswith("test/"))
        shown += f" (mean ± 95 % CI over {len(finished)} seeds)" if len(finished) > 1 and shown else ""
        print(f"[overfit] stage {index}/{count} '{stage.name}' (evaluate): {selection.label} → "
              f"{shown or 'no finished run'}", flush=True)
        self.log_headline(stage, {k: v for k, v in metrics.items() if HEADLINE.fullmatch(k)})
        return Evaluation(stage, selection, result, metrics, spread)

    def log_headline(self, stage: Stage, metrics: dict[str, float]) -> None:
        """The study's result on the pipeline run: plain keys, or ``key_<stage>`` when several stages report one."""
        if stage.name not in self.headline or not metrics:
            return
        from mlflow.entities import Metric

        suffix = f"_{stage.name}" if len(self.headline) > 1 else ""
        prefix = "evaluated" if stage.kind == "evaluate" else "selected"  # never a point's own key
        now = int(time.time() * 1000)
        self.store.call("log_batch", self.run_id, metrics=[Metric(f"{prefix}/{k}{suffix}", v, now, 0)
                                                           for k, v in metrics.items()])

    def note(self) -> str:
        """The pipeline run's description once it ends: the study's prose, then what each stage found, linked."""
        experiment = self.store.call("get_run", self.run_id).info.experiment_id
        lines = [self.pipeline.description.strip(), "", "### Result"]
        for name, result in self.results.items():
            if isinstance(result, SweepResult):
                done = sum(p.finished for p in result.points)
                lines.append(f"- **{name}**: [sweep](#/experiments/{experiment}/runs/{result.parent_run_id}), "
                             f"{done} of {len(result.points)} runs finished")
            elif isinstance(result, Selection):
                found = result.cell.stat(result.stage.metric) if result.cell is not None else None
                value = f"{found.text()} (mean ± 95 % CI, n = {found.n})" if found else f"{result.value:.4g}"
                rule = "one-standard-error rule" if result.stage.rule == "one_se" else result.stage.mode
                run = f"[run](#/experiments/{experiment}/runs/{result.point.run_id})"
                model = self.models.get(name)
                shown = f", model `{model}` ([registry](#/models/{self.pipeline.name}))" if model else ""
                lines.append(f"- **{name}**: **{result.label}** by {rule} {result.stage.metric} = {value}: "
                             f"{run}{shown}")
            elif isinstance(result, Evaluation):
                tests = ", ".join(f"{k} {v:.4g}" + (f" ± {result.spread[k]:.2g}" if k in result.spread else "")
                                  for k, v in result.metrics.items() if k.startswith("test/"))
                lines.append(f"- **{name}**: {result.selection.label} on new seeds: {tests or 'no finished run'} "
                             f"([runs](#/experiments/{experiment}/runs/{result.result.parent_run_id}))")
        if self.report is not None:
            lines.append(f"- report: `report/{self.report.name}` in this run's artifacts (self-contained HTML)")
        return "\n".join(lines)

    def write_report(self, stage: Stage, index: int, count: int) -> Path:
        start = time.monotonic()
        out = paths.project_root() / "reports" / self.pipeline.name
        html = pipeline_report.write(self.pipeline, stage, self.results, out, self.store, self.run_id)
        self.store.call("log_artifacts", self.run_id, str(out), "report")
        print(f"[overfit] stage {index}/{count} '{stage.name}' (report): {html} ({time.monotonic() - start:.1f} s)",
              flush=True)
        self.report = html
        return html

    def run_all(self) -> None:
        stages = self.pipeline.ordered()
        for i, stage in enumerate(stages, 1):
            if stage.kind == "sweep":
                self.results[stage.name] = self.sweep(stage, i, len(stages), self.axes_text(stage))
            elif stage.kind == "search":
                what = f"search {self.axes_text(stage)}, {stage.n_trials} trials"
                self.results[stage.name] = self.sweep(stage, i, len(stages), what)
            elif stage.kind == "select":
                self.results[stage.name] = self.select(stage, i, len(stages))
            elif stage.kind == "evaluate":
                self.results[stage.name] = self.evaluate(stage, i, len(stages))
            else:
                self.write_report(stage, i, len(stages))


def ending(exc: BaseException) -> tuple[str, str]:
    """The pipeline run's status and failure kind for what stopped it."""
    if isinstance(exc, (Interrupted, KeyboardInterrupt)):
        return "KILLED", "killed"
    return "FAILED", "store" if isinstance(exc, StoreError) else "error"


def run(name: str, args: list[str], detach: bool = False, begin: str | None = None,
        scheduled: str | None = None, config_dir: str | None = None) -> int:
    """Validate everything, then run the stages; prints the report path and the MLflow UI command.

    ``detach`` (or a ``begin`` time): the pipeline run is created SCHEDULED and a SLURM driver job runs the
    stages (:mod:`overfit.cluster.detach`); detached, the command returns at once, else it follows the driver.
    ``scheduled``: that driver, reopening the run.
    """
    from overfit.cluster import detach as driver

    start = time.monotonic()
    if detach or begin:
        args = driver.slurm_args(args, None, "--detach" if detach else "--begin")
    pipeline, planner, static = prepare(name, args, config_dir)
    cfg = planner.any_job().cfg
    print(f"[overfit] pipeline {pipeline.name!r} ({pipeline.shown}): {len(pipeline.stages)} stages, every job "
          f"validated in {time.monotonic() - start:.1f} s", flush=True)
    store = store_for(cfg.tracking.uri)
    tags = {TAG: pipeline.name, runs.TAG_NOTE: pipeline.description, "overfit.pipeline.file": pipeline.shown,
            "overrides": " ".join(args), "stages": " ".join(f"{s.name}({s.kind})" for s in pipeline.ordered())}
    if scheduled:
        run_id = scheduled
        runs.reopen(store, store.call("get_run", run_id))
    else:
        run_id = runs.create(store, store.experiment(pipeline.experiment), "pipeline", pipeline.name, tags,
                             status="SCHEDULED" if detach or begin else "RUNNING")
    print(f"[overfit] pipeline run {run_id} in experiment {pipeline.experiment!r}", flush=True)
    if detach or begin:  # each stage known now, for `overfit sweep status` before its sweep starts
        for stage in pipeline.ordered():
            if stage.name in static:
                store.call("log_text", run_id, "\n".join(planner.task_args(stage, {})) + "\n", f"plan/{stage.name}.txt")
        directory = paths.project_root() / "multirun" / time.strftime("%Y-%m-%d/%H-%M-%S") / f"pipeline-{run_id[:8]}"
        own = ["--config-dir", str(Path(config_dir).resolve())] if config_dir else []
        job, log = driver.schedule(store, run_id, ["pipeline", "run", name, *own, *args], launcher_config(args),
                                   directory, begin, "pipeline")
        return 0 if detach else driver.follow(job, log)
    runner = Runner(pipeline, planner, store, run_id)
    try:
        with Signals():
            store.call("log_text", run_id, pipeline.text, f"pipeline/{pipeline.file.name}")
            runner.run_all()
    except BaseException as exc:
        status, failure = ending(exc)
        runs.end(store, run_id, status, failure, f"{type(exc).__name__}: {exc}")
        print(f"[overfit] pipeline {pipeline.name!r} {status} after {time.monotonic() - start:.1f} s: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise
    sweeps = [r.result if isinstance(r, Evaluation) else r for r in runner.results.values()
              if isinstance(r, (SweepResult, Evaluation))]
    failed = [(r.stage.name, p) for r in sweeps for p in r.failed]
    store.call("set_tag", run_id, "diverged_points", str(sum(len(r.diverged) for r in sweeps)))
    store.call("set_tag", run_id, "failed_points", str(len(failed)))
    store.call("set_tag", run_id, runs.TAG_NOTE, runner.note())
    runs.end(store, run_id, "FINISHED")
    print(f"[overfit] pipeline {pipeline.name!r} FINISHED in {time.monotonic() - start:.1f} s: run {run_id}, "
          f"experiment {pipeline.experiment!r}", flush=True)
    for stage_name, p in failed:
        print(f"[overfit] stage {stage_name!r}: point {p.label or p.run_id} {p.status}: {p.reason}", flush=True)
    if runner.report is not None:
        print(f"[overfit] report: {runner.report}")
    print(f"[overfit] open the MLflow UI: {ui.command(store.uri)}", flush=True)
    return 1 if failed else 0
