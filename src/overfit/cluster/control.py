"""``overfit sweep status|cancel RUN_ID``: a sweep or a pipeline as MLflow and SLURM see it, and stopping it.

``status`` lists every point of a sweep, planned ones included, as pending,
running, finished, failed or killed: from the point's run when it has one, else
from its SLURM job (still queued, or cancelled before it started), else pending
(the driver or the array has not started yet). A pipeline run lists its stages
in order: each started stage by its sweep, a stage not started yet by the plan
recorded when the pipeline was submitted.

``cancel`` cancels the driver and array jobs, waits for them to end (a running
point closes its own run at an epoch end), then ends whatever is still open
KILLED: points, sweep parents (with their report), the pipeline run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from overfit.cluster import slurm
from overfit.errors import ConfigError
from overfit.lifecycle.plan import TAG_PLAN, read_units
from overfit.tracking import runs
from overfit.tracking.store import Store, StoreError, resolve_uri, sqlite_file, store_for

if TYPE_CHECKING:
    from mlflow.entities import Run

OPEN = ("RUNNING", "SCHEDULED")
CANCEL_WAIT_SECONDS = 60.0  # a running point checkpoints at its epoch end; SLURM kills it after KillWait (30 s)
PLAN = "plan"  # artifact folder of a pipeline run: <stage>.txt, the task overrides of each stage known at submission


@dataclass
class Row:
    """One point as ``status`` shows it."""

    name: str
    state: str  # pending | running | finished | failed | killed
    detail: str = ""
    run_id: str = ""
    job: str = ""


def _text(store: Store, run_id: str, path: str) -> str | None:
    """An artifact's text, or None when the run has no such artifact."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return Path(store.call_within(10, "download_artifacts", run_id, path, tmp)).read_text()
        except (StoreError, OSError):
            return None


def planned(task_args: list[str]) -> list[str] | None:
    """The names of a sweep's points in job-number order (None for an adaptive sweeper: it picks them as it goes)."""
    from overfit.compose import expand
    from overfit.tracking.sweeps import axes

    if any(a.startswith("hydra/sweeper=") and a != "hydra/sweeper=basic" for a in task_args):
        return None
    keys = [k.removesuffix(".name") for k in axes(task_args)]
    return [runs.point_name([a for a in job if not a.startswith(("hydra.", "hydra/", "+hydra."))], keys)
            for job in expand(task_args)]


def _arrays(tags: dict[str, str]) -> list[tuple[str, int, int]]:
    """``[(array id, first job number, jobs)]`` from the parent's tag."""
    out = []
    for item in filter(None, tags.get(slurm.TAG_ARRAYS, "").split(",")):
        array, _, span = item.partition("@")
        first, _, count = span.partition(":")
        out.append((array, int(first or 0), int(count or 0)))
    return out


def _job_of(num: int, tags: dict[str, str]) -> str:
    """The SLURM job that runs point ``num``: its unit's task in a vectorized sweep, else its own."""
    plan = Path(tags.get(TAG_PLAN, ""))
    if tags.get(TAG_PLAN) and plan.is_file():
        units = read_units(plan)
        num = next((u for u, unit in enumerate(units) if any(m.num == num for m in unit)), num)
    arrays = [(a, first, count) for a, first, count in _arrays(tags) if first <= num]
    if not arrays:
        return ""
    array, first, count = max(arrays, key=lambda afc: afc[1])
    return array if count == 1 else f"{array}_{num - first}"


def _point_state(run: Run | None, job_state: str | None, parent_open: bool) -> tuple[str, str]:
    """(pending|running|finished|failed|killed, detail) from the point's run, else its job, else its parent."""
    if run is not None:
        status, tags = run.info.status, run.data.tags
        attempt = f"attempt {tags[runs.TAG_ATTEMPTS]}" if runs.TAG_ATTEMPTS in tags else ""
        if status == "FINISHED":
            return "finished", attempt
        if status in ("FAILED", "KILLED"):
            why = tags.get(runs.TAG_FAILURE, "")
            return status.lower(), f"{why}: {tags.get(runs.TAG_REASON, '')[:100]}" if why else ""
        if status == "SCHEDULED":
            return "pending", "requeued, resumes from its checkpoint"
        if job_state is not None and not slurm.is_active(job_state):
            return "killed", f"run still RUNNING but its job ended {job_state} (overfit runs reap closes it)"
        return "running", attempt
    if job_state in ("RUNNING", "COMPLETING", "CONFIGURING"):
        return "running", "starting"
    if job_state is not None and not slurm.is_active(job_state):
        return ("killed" if job_state in ("CANCELLED", "PREEMPTED") else "failed"), f"job {job_state} before its run"
    return ("pending", "") if parent_open else ("killed", "never started")


def sweep_rows(store: Store, parent: Run) -> list[Row]:
    """Every point of a sweep: planned points first in job order, then any other child (an adaptive sweep's)."""
    tags = parent.data.tags
    text = _text(store, parent.info.run_id, "sweep/overrides.txt")
    names = (planned(text.splitlines()) or []) if text else []
    children = store.call("search_runs", [parent.info.experiment_id],
                          filter_string=f"tags.`{runs.TAG_PARENT}` = '{parent.info.run_id}'",
                          order_by=["attributes.start_time DESC"], max_results=50_000)
    by_name: dict[str, Run] = {}
    for run in children:
        by_name.setdefault(run.data.tags.get(runs.TAG_NAME, run.info.run_id), run)  # newest first
    reused = {int(k.removeprefix(runs.TAG_REUSED)): v for k, v in tags.items() if k.startswith(runs.TAG_REUSED)}
    jobs = {num: _job_of(num, tags) for num in range(len(names))}
    states = slurm.states([a for a, _, _ in _arrays(tags)]) if _arrays(tags) else {}
    parent_open = parent.info.status in OPEN
    rows = []
    for num, name in enumerate(names):
        if num in reused:
            rows.append(Row(name, "finished", "reused", reused[num]))
            continue
        run = by_name.pop(name, None)
        job = run.data.tags.get(runs.TAG_SLURM_JOB, jobs[num]) if run is not None else jobs[num]
        state, detail = _point_state(run, states.get(job), parent_open)
        rows.append(Row(name, state, detail, run.info.run_id if run else "", job))
    for name, run in by_name.items():
        job = run.data.tags.get(runs.TAG_SLURM_JOB, "")
        state, detail = _point_state(run, states.get(job), parent_open)
        rows.append(Row(name, state, detail, run.info.run_id, job))
    return rows


def _jobs_line(run: Run) -> str:
    """``driver job 41 RUNNING; array 42; begin now+60``: a run's SLURM side."""
    tags = run.data.tags
    parts = []
    driver = tags.get(slurm.TAG_DRIVER)
    if driver:
        parts.append(f"driver job {driver} {slurm.states([driver]).get(driver, 'unknown to SLURM')}")
    arrays = [a for a, _, _ in _arrays(tags)]
    if arrays:
        parts.append("array " + ",".join(arrays))
    if tags.get(slurm.TAG_BEGIN):
        parts.append(f"begin {tags[slurm.TAG_BEGIN]}")
    if run.info.status == "SCHEDULED" or tags.get(slurm.TAG_STATE) == "cancelled":
        parts.append(tags.get(slurm.TAG_STATE, ""))
    return "; ".join(filter(None, parts)) or "no SLURM jobs"


def _print_rows(rows: list[Row], indent: str) -> None:
    width = max((len(r.name) for r in rows), default=0)
    for r in rows:
        run = f"run {r.run_id[:8]}" if r.run_id else ""
        job = f"job {r.job}" if r.job else ""
        print(f"{indent}{r.name:<{width}}  {r.state:<8}  {run:<12}  {job:<12}  {r.detail}".rstrip())
    counts = {s: sum(r.state == s for r in rows) for s in ("finished", "running", "pending", "failed", "killed")}
    print(f"{indent}{len(rows)} points: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))


def _stages(run: Run) -> list[tuple[str, str]]:
    """``[(stage, kind)]`` in order, from a pipeline run's ``stages`` tag (``orders(sweep) best(select) ...``)."""
    out = []
    for item in run.data.tags.get("stages", "").split():
        name, _, kind = item.partition("(")
        out.append((name, kind.rstrip(")")))
    return out


def stage_sweeps(store: Store, pipeline: Run) -> list[Run]:
    """The sweep parents beneath a pipeline run, oldest first."""
    return store.call("search_runs", [pipeline.info.experiment_id],
                      filter_string=f"tags.`{runs.TAG_PARENT}` = '{pipeline.info.run_id}'",
                      order_by=["attributes.start_time ASC"], max_results=1000)


def status(store: Store, run_id: str) -> None:
    """Print a sweep's points, or a pipeline's stages and their points."""
    run = _get(store, run_id)
    kind = run.data.tags.get(runs.TAG_KIND)
    name = run.data.tags.get(runs.TAG_NAME, run_id)
    print(f"[overfit] {kind} {run_id} {name!r} {run.info.status} ({_jobs_line(run)})")
    if kind == "sweep":
        _print_rows(sweep_rows(store, run), "  ")
        return
    sweeps = {s.data.tags.get(runs.TAG_NAME, "").split(":")[0]: s for s in stage_sweeps(store, run)}
    for stage, stage_kind in _stages(run) or [(n, "sweep") for n in sweeps]:
        found = sweeps.get(stage)
        if found is not None:
            print(f"  stage {stage} ({stage_kind}): sweep {found.info.run_id} {found.info.status} "
                  f"({_jobs_line(found)})")
            _print_rows(sweep_rows(store, found), "    ")
            continue
        plan = _text(store, run_id, f"{PLAN}/{stage}.txt") if stage_kind in ("sweep", "evaluate", "search") else None
        done = f"{stage}.selected" in run.data.tags or run.info.status == "FINISHED"
        print(f"  stage {stage} ({stage_kind}): " + ("done" if done else "not started"))
        if plan is not None and run.info.status in OPEN:
            _print_rows([Row(n, "pending") for n in planned(plan.splitlines()) or []], "    ")


def _get(store: Store, run_id: str) -> Run:
    """A sweep's parent or a pipeline run; anything else is one line."""
    try:
        run = store.call_within(10, "get_run", run_id)
    except StoreError as exc:
        raise StoreError(f"no run {run_id!r} in {store.uri}: overfit sweep takes the id a sweep or pipeline "
                         "printed") from exc
    kind = run.data.tags.get(runs.TAG_KIND)
    if kind not in ("sweep", "pipeline"):
        raise ConfigError("RUN_ID", f"run {run_id} is a {kind or 'run not made by overfit'}, not a sweep or pipeline",
                          "the id `overfit train -m` or `overfit pipeline run` printed")
    return run


def cancel(store: Store, run_id: str) -> tuple[list[str], int]:
    """Cancel a sweep's or pipeline's SLURM jobs; end its open runs KILLED. Returns the jobs and how many runs
    this command ended (a driver ends most itself, on its SIGTERM)."""
    from overfit.tracking.sweeps import close_parent

    run = _get(store, run_id)
    pipeline = run.data.tags.get(runs.TAG_KIND) == "pipeline"

    def sweeps() -> list[Run]:
        return stage_sweeps(store, run) if pipeline else [store.call("get_run", run_id)]

    ids = [t for r in [run, *sweeps()] for t in [r.data.tags.get(slurm.TAG_DRIVER, ""),
                                                 *(a for a, _, _ in _arrays(r.data.tags))] if t]
    slurm.cancel(ids)
    if not slurm.wait_inactive(ids, CANCEL_WAIT_SECONDS):
        print(f"[overfit] SLURM jobs {', '.join(ids)} still ending after {CANCEL_WAIT_SECONDS:.0f} s; "
              "closing their runs now", flush=True)
    reason = "cancelled by overfit sweep cancel"
    ended = 0
    for parent in sweeps():  # again: a driver may have started a stage meanwhile
        children = store.call("search_runs", [parent.info.experiment_id],
                              filter_string=f"tags.`{runs.TAG_PARENT}` = '{parent.info.run_id}'", max_results=50_000)
        for child in children:
            if child.info.status in OPEN:
                runs.end(store, child.info.run_id, "KILLED", "killed", reason)
                ended += 1
        if store.call("get_run", parent.info.run_id).info.status in OPEN:
            close_parent(store, parent.info.run_id, "KILLED")
            ended += 1
        store.call("set_tag", parent.info.run_id, slurm.TAG_STATE, "cancelled")
    if pipeline:
        if store.call("get_run", run_id).info.status in OPEN:
            runs.end(store, run_id, "KILLED", "killed", reason)
            ended += 1
        store.call("set_tag", run_id, slurm.TAG_STATE, "cancelled")
    return ids, ended


def main(argv: list[str]) -> int:
    """``overfit sweep status|cancel RUN_ID [--tracking-uri URI]``"""
    parser = argparse.ArgumentParser(prog="overfit sweep", description="A sweep or pipeline on SLURM: its points "
                                     "from MLflow and sacct, or cancelling its jobs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (("status", "each point: pending, running, finished, failed or killed"),
                          ("cancel", "cancel the SLURM jobs; the open runs (points, parents) end KILLED")):
        p = sub.add_parser(command, help=text)
        p.add_argument("run_id", help="a sweep's parent run id, or a pipeline run id")
        p.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    db = sqlite_file(resolve_uri(args.tracking_uri))
    if db is not None and not db.is_file():  # reading a store never creates one
        raise StoreError(f"no MLflow store at {db}: point --tracking-uri or MLFLOW_TRACKING_URI at the sweep's store")
    store = store_for(args.tracking_uri)
    if args.command == "status":
        status(store, args.run_id)
        return 0
    ids, ended = cancel(store, args.run_id)
    print(f"[overfit] cancelled {args.run_id}: SLURM job(s) {', '.join(ids) or '(none)'} cancelled, every open run "
          f"of it KILLED ({ended} closed here, the rest by its jobs)")
    return 0
