"""``overfit pipeline show`` and ``list``: what a run would do and what ran, read from the store, nothing written.

Neither creates a store, an experiment or a run, and neither imports Lightning
(the runner does): ``show`` composes every job, looks each up by its reuse key,
and says which are finished (a run would reuse them), which would run, and which
selection a run would make now, by the same rule the runner uses
(:func:`overfit.tracking.points.best`). An HTTP store that does not answer is one
line within seconds (the store probes it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from overfit.errors import ConfigError
from overfit.pipeline import graph
from overfit.pipeline.plan import Job, merge, prepare
from overfit.pipeline.spec import TAG, Stage, pipeline_dirs, read
from overfit.tracking import runs
from overfit.tracking.points import best, point_of
from overfit.tracking.store import Store, resolve_uri, sqlite_file, store_for

if TYPE_CHECKING:
    from mlflow.entities import Run


class Lookup:
    """The store as it is: an absent SQLite file is an empty store, not one to create."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        db = sqlite_file(uri)
        self.store: Store | None = None if db is not None and not db.is_file() else store_for(uri)

    def experiment_id(self, name: str) -> str | None:
        return None if self.store is None else self.store.find_experiment(name)

    def runs_of(self, job: Job) -> list[Run]:
        """The runs with the job's reuse key, newest first."""
        experiment_id = self.experiment_id(job.cfg.experiment_name)
        if self.store is None or experiment_id is None:
            return []
        return runs.find(self.store, experiment_id, runs.Key.of(job.cfg))

    def latest_pipeline_run(self, name: str, experiment: str) -> Run | None:
        experiment_id = self.experiment_id(experiment)
        if self.store is None or experiment_id is None:
            return None
        found = self.store.call("search_runs", [experiment_id], f"tags.`{TAG}` = '{name}'",
                                order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None


def status_of(found: list[Run]) -> tuple[str, bool]:
    """What a run would do with a job, and whether it is finished (reused)."""
    done = runs.finished(found)
    if done is not None:
        word = "finished" if done.info.status == "FINISHED" else "diverged"
        return f"{word} {done.info.run_id[:8]} (reused)", True
    if found:
        latest = found[0]
        return f"would run ({latest.data.tags.get(runs.TAG_FAILURE, latest.info.status.lower())} before)", False
    return "would run", False


def _point_label(job: Job, pool: list[Job]) -> str:
    """The overrides that tell this job from the others in ``pool`` (all but the experiment if alone)."""
    varying = [k for k in job.overrides if len({p.overrides.get(k) for p in pool}) > 1]
    return " ".join(job.overrides[k] for k in varying) or " ".join(
        t for k, t in job.overrides.items() if k != "experiment_name")


def _would_select(lookup: Lookup, pool: list[Job], stage: Stage) -> Job | None:
    """The job a select stage would choose now, when every candidate has its result in the store."""
    points, jobs = [], []
    for job in pool:
        done = runs.finished(lookup.runs_of(job))
        if done is None:
            return None
        points.append(point_of(done, []))
        jobs.append(job)
    chosen = best(points, stage.metric, stage.mode)
    return None if chosen is None else jobs[points.index(chosen)]


def show(name: str, args: list[str], config_dir: str | None = None) -> int:
    """Every job a run would launch, whether it is already finished, on which launcher. Runs nothing."""
    pipeline, planner, static = prepare(name, args, config_dir)
    lookup = Lookup(resolve_uri(planner.any_job().cfg.tracking.uri))
    stages = pipeline.ordered()
    chosen: dict[str, Job | None] = {}
    pool_of: dict[str, list[Job]] = {}
    jobs_of: dict[str, list[Job] | None] = dict(static)
    rows: list[tuple[str, str, str, str]] = []
    counts = {"finished": 0, "run": 0, "later": 0, "search": 0}
    for i, stage in enumerate(stages, 1):
        label = f"{i}/{len(stages)} {stage.name} ({stage.kind})"
        launcher = merge(pipeline.overrides, stage.overrides, planner.cli).get("hydra/launcher")
        launcher_name = launcher.value if launcher else "basic"
        if stage.kind == "select":
            known = all(jobs_of.get(n) and pipeline.stages[n].kind != "search" for n in stage.needs)
            pool = pool_of[stage.name] = [j for n in stage.needs for j in (jobs_of.get(n) or [])]
            picked = chosen[stage.name] = _would_select(lookup, pool, stage) if known else None
            state = f"now: {_point_label(picked, pool)}" if picked else "decided when it runs"
            rows.append((label, f"{stage.mode} {stage.metric} over {', '.join(stage.needs)}", state, ""))
            continue
        if stage.kind == "report":
            rows.append((label, "over " + ", ".join(stage.needs), f"reports/{pipeline.name}/report.html", ""))
            continue
        needed = graph.selections(pipeline, stage)
        if stage.kind == "search":
            axes = " ".join(a.override().text for a in stage.axes)
            wait = f", after {', '.join(needed)}" if stage.name not in static else ""
            rows.append((label, f"Optuna over {axes}", f"{stage.n_trials} trials, chosen as it runs{wait}",
                         launcher_name))
            counts["search"] += stage.n_trials
            continue
        if stage.name not in static:
            if any(chosen.get(n) is None for n in needed):
                jobs_of[stage.name] = None
                n_jobs = 1
                for a in stage.axes:
                    n_jobs *= len(a.values)
                what = " ".join(a.override().text for a in stage.axes) or f"the config {needed[0]} selects"
                rows.append((label, what, f"{n_jobs} job(s), after {', '.join(needed)}", launcher_name))
                counts["later"] += n_jobs
                continue
            jobs_of[stage.name] = planner.jobs(stage, {n: chosen[n] for n in needed})  # type: ignore[misc]
        jobs = jobs_of[stage.name] or []
        keys = [k for k in jobs[0].overrides if len({j.overrides.get(k) for j in jobs}) > 1]
        pools = [pool_of[n] for n in needed if n in pool_of]
        for j, job in enumerate(jobs):
            state, done = status_of(lookup.runs_of(job))
            counts["finished" if done else "run"] += 1
            shown = " ".join(job.overrides[k] for k in keys)
            if stage.kind == "evaluate" and pools:
                shown = " ".join(x for x in (_point_label(job, pools[0]), shown) if x)
            rows.append((label if j == 0 else "", shown or _point_label(job, []), state, job.launcher))
    print(f"pipeline {pipeline.name} ({pipeline.shown}): {len(stages)} stages, experiment "
          f"{pipeline.experiment!r}, store {lookup.uri}")
    base = " ".join(o.text for o in merge(pipeline.overrides, planner.cli).values())
    print(f"overrides for every job: {base or '(none)'}")
    header = ("stage", "job", "status", "launcher")
    widths = [max(len(r[c]) for r in [*rows, header]) for c in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    searched = f", {counts['search']} picked by a search as it runs" if counts["search"] else ""
    print(f"{sum(counts.values())} jobs: {counts['finished']} finished (would be reused), {counts['run']} would run, "
          f"{counts['later']} wait for a selection{searched}. Nothing was run.")
    return 0


def list_pipelines() -> int:
    """The studies in ``pipelines/`` and the latest run of each in the store."""
    lookup = Lookup(resolve_uri())
    files = [file for d in pipeline_dirs() for file in sorted(d.glob("*.yaml"))]
    for file in files:
        try:
            p = graph.order(read(file, str(file)))
        except ConfigError as exc:
            print(f"{file.stem:<18} INVALID: {exc}")
            continue
        kinds = " → ".join(f"{s.name}({s.kind})" for s in p.ordered())
        last_run = lookup.latest_pipeline_run(p.name, p.experiment)
        last = "never run"
        if last_run is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last_run.info.start_time / 1000))
            last = f"last run {last_run.info.status} {when} ({last_run.info.run_id[:8]})"
        first_sentence = p.description.split(". ")[0].rstrip(".") + "."
        print(f"{p.name:<18} {file}\n    {first_sentence}\n    stages: {kinds}\n    {last}")
    if not files:
        print("no pipelines found in " + " or ".join(str(d) for d in pipeline_dirs()))
    return 0
