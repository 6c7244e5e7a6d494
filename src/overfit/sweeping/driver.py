"""A sweep's life around its jobs: every point validated, its parent opened, its plan written, then its report.

Every point is composed (once) and validated before the parent exists; a sweep whose
points all finished earlier launches nothing; the points become the jobs of a plan — one
job per group of points that train as one batched model (``sweep.vectorize``), one per point
otherwise — that every launcher runs (in-process, joblib, SLURM nodes). The parent is closed
with its report when the jobs end, KILLED (with its open points) after a signal.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from overfit import paths
from overfit.errors import ConfigError
from overfit.sweeping import record
from overfit.sweeping.session import Session
from overfit.tracking import runs
from overfit.tracking.store import CLOSE_SECONDS, Store, store_for
from overfit.tracking.sweeps import Outcome, close_parent, open_parent

if TYPE_CHECKING:
    from overfit.lifecycle.plan import Member


LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local")  # launchers whose jobs run on the submitting machine


def task_only(args: list[str]) -> list[str]:
    """The overrides that make a point (not the launcher's or the sweeper's)."""
    return [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def sweep_axes(task_args: list[str]) -> list[str]:
    """The keys a sweep varies (``model`` for ``model=linear,mlp``)."""
    from overfit.tracking.sweeps import axes

    return [k.removesuffix(".name") for k in axes(task_args)]


def simpler(task_args: list[str], jobs: list[DictConfig]) -> dict[str, str]:
    """The swept knobs the first point's components call capacity, and which way is simpler."""
    from overfit.training import parts

    return parts.simpler(jobs[0], sweep_axes(task_args))


def unique_dir(config: DictConfig, run_id: str, own: bool = True) -> Path:
    """The sweep's directory: as the user gave it, else Hydra's default one with the parent's id appended.

    Named for its run, no two sweeps share a default directory, whoever starts them and
    however close together. A directory given twice is shared safely: nothing in it is
    trusted to say which run a point is (:mod:`overfit.lifecycle.claim`), and the plan,
    checkpoints and ``point.json`` files in it name their sweep or their run. ``own=False``:
    another sweeper launches the jobs into Hydra's folder itself (timestamped to the microsecond).
    """
    base = Path(str(config.hydra.sweep.dir))
    given = any(o.split("=", 1)[0] == "hydra.sweep.dir" for o in config.hydra.overrides.hydra)
    folder = paths.resolve(base) if given or not own else paths.resolve(base) / run_id[:12]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("hydra.sweep.dir", f"cannot create {folder}: {exc.strerror or exc}",
                          "a folder this user can write") from exc
    return folder


def units_of(task_args: list[str], jobs: list[DictConfig]) -> list[list[Member]]:
    """The sweep's jobs: each group of batchable points one job, every other point one job of its own."""
    from overfit.compose import expand
    from overfit.lifecycle.plan import MAX_GROUP, Member
    from overfit.training.planning import plan_groups

    keys = sweep_axes(task_args)
    points = []
    for num, (args, job) in enumerate(zip(expand(task_args), jobs)):
        own = task_only(args)
        config = OmegaConf.to_container(job)
        config["sweep"]["axes"] = keys  # what the job's point varies in its sweep (a swept seed: a replicate)
        points.append(Member(num, own, runs.point_name(own, keys), config))
    if not all(job.sweep.vectorize for job in jobs):
        return [[p] for p in points]
    groups, alone = plan_groups(jobs)
    reasons: dict[str, list[str]] = {}
    for num, reason in alone:
        reasons.setdefault(reason, []).append(points[num].name)
    for reason, names in reasons.items():
        if reason != "nothing to batch with":
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            print(f"[overfit] {shown} train{'s' if len(names) == 1 else ''} one at a time: {reason}", flush=True)
    units = [[points[i] for i in group[start:start + MAX_GROUP]] for group in groups
             for start in range(0, len(group), MAX_GROUP)]
    return units + [[points[num]] for num, _ in alone]


def reuse_all(store: Store, task_args: list[str], jobs: list[DictConfig], session: Session) -> Outcome | None:
    """When every point already has its result in the store: a parent linking them, nothing launched.

    Read-only until it knows: a store or experiment that does not exist yet is not created here.
    """
    if any(job.sweep.rerun for job in jobs) or session.scheduled:
        return None
    if len({job.experiment_name for job in jobs}) > 1 or not store.exists():
        return None
    experiment_id = store.find_experiment(jobs[0].experiment_name)
    if experiment_id is None:
        return None
    keys = [runs.Key.of(job) for job in jobs]
    lookup = runs.find_all(store, experiment_id, keys)
    found, parents = [], set()
    for key in keys:
        done = runs.finished(lookup[key])
        if done is None:
            return None
        found.append(done.info.run_id)
        parents.add(done.data.tags.get(runs.TAG_PARENT))
    parent = open_parent(store, experiment_id, task_args, "none (every point reused)", session.nest_under,
                         session.name, simpler=simpler(task_args, jobs))
    for num, run_id in enumerate(found):
        store.call("set_tag", parent, f"{runs.TAG_REUSED}{num}", run_id)
    from overfit.lifecycle.claim import close_abandoned

    close_abandoned(store, {p for p in parents if p}, parent)
    what = "the one point" if len(found) == 1 else f"every one of the {len(found)} points"
    print(f"[overfit] {what} finished earlier: reused, nothing launched", flush=True)
    return close_parent(store, parent)


class Progress(threading.Thread):
    """A line whenever more of a sweep's points have ended, read from the jobs' ``point.json`` files.

    The sweep directory is where every launcher (in-process, joblib, SLURM nodes) writes its jobs,
    so reading it costs a directory walk, not a store query that grows with the sweep.
    """

    def __init__(self, sweep_dir: Path, parent: str, total: int, label: str) -> None:
        super().__init__(daemon=True, name="overfit-progress")
        self.sweep_dir, self.parent, self.total, self.label = sweep_dir, parent, total, label
        self.stopped = threading.Event()
        self.start_time = time.monotonic()
        self._read: dict[Path, tuple[tuple[int, int] | None, bool]] = {}  # per point file: (inode, mtime), ended

    def run(self) -> None:
        shown = 0
        while not self.stopped.wait(2.0):
            done = self.count()
            if done > shown:
                shown = done
                print(f"[overfit] {self.label}{done}/{self.total} points done, "
                      f"{time.monotonic() - self.start_time:.0f} s", flush=True)

    def count(self) -> int:
        """How many of the sweep's points have ended. A file is read again only when it has changed, so a
        10,000-point sweep costs a directory walk per look, not 10,000 reads."""
        from overfit.tracking.pointfile import POINT_FILE, read_point

        for folder, _, names in os.walk(self.sweep_dir):
            if POINT_FILE not in names:
                continue
            path = Path(folder) / POINT_FILE
            try:
                found = path.stat()
            except OSError:
                continue
            changed = (found.st_ino, found.st_mtime_ns)  # a point file is replaced, never written in place
            if self._read.get(path, (None, False))[0] != changed:
                point = read_point(path.parent, self.parent)
                self._read[path] = (changed, point is not None and point.status in ("FINISHED", "FAILED", "KILLED"))
        return sum(ended for _, ended in self._read.values())


@dataclass
class Prepared:
    """A sweep ready to launch: its store, parent, directory and jobs (None: every point was reused)."""

    store: Store
    parent: str
    sweep_dir: Path | None
    jobs: list[list[str]] | None
    total: int
    outcome: Outcome | None = None


def open_sweep(config: DictConfig, task_args: list[str], jobs: list[DictConfig], session: Session,
               launcher: str, total: int | None = None, own: bool = True,
               resources: ExitStack | None = None) -> tuple[Store, str, Path]:
    """The parent (new, or the SCHEDULED one a driver reopens) and the sweep's directory with its record.

    ``resources``: where a sweep whose jobs run in this process keeps its writers, started once its points are
    valid and before this process imports PyTorch, so they open (or create) the store on another core meanwhile.
    """
    from overfit.config import check_groups
    from overfit.tracking.recorder import sweep_writers
    from overfit.training.trainer import check_machine

    for job in jobs:  # what will train: every point checked before the parent exists
        check_groups(job)
    store = store_for(jobs[0].tracking.uri, jobs[0].tracking.retry_seconds)  # not opened yet: no client
    if resources is not None:
        resources.enter_context(sweep_writers(store.uri, len(jobs), launcher == "basic"))
    if launcher in LOCAL_LAUNCHERS:  # the jobs run on this machine: it must have what they ask for
        for trainer in {OmegaConf.to_yaml(job.trainer): job.trainer for job in jobs}.values():
            check_machine(trainer)
    experiment_id = store.experiment(jobs[0].experiment_name)
    if session.scheduled:  # its points reuse finished runs one by one, in their jobs
        runs.reopen(store, store.call("get_run", session.scheduled))
    parent = session.scheduled or open_parent(store, experiment_id, task_args, launcher, session.nest_under,
                                              session.name, simpler=simpler(task_args, jobs))
    session.store, session.parent = store, parent
    print(f"[overfit] sweep parent run {parent} in experiment {jobs[0].experiment_name!r}: "
          f"{total if total is not None else len(jobs)} points", flush=True)
    sweep_dir = unique_dir(config, parent, own)
    store.call("set_tag", parent, "sweep_dir", str(sweep_dir))
    record.write(sweep_dir, parent, store.uri, sweep_axes(task_args))
    return store, parent, sweep_dir


def prepare(config: DictConfig, task_args: list[str], session: Session, resources: ExitStack) -> Prepared:
    """Compose and validate every point, reuse what finished, open the parent, write the plan.

    A sweep that will train in this process starts its writers (``resources`` closes them with the sweep) before
    it opens the parent: they import MLflow and open, or create, the store on the other cores meanwhile.
    """
    from overfit.compose import compose_jobs, replicated
    from overfit.lifecycle.plan import TAG_PLAN, plan_file, write_plan

    task_args = replicated(task_args)  # sweep.replicates=N: the seed axis it stands for
    searched = [o for o in config.hydra.overrides.hydra if o.startswith("hydra.searchpath=")]
    jobs = compose_jobs([*task_args, *searched], multirun=True, checked=False)  # finished runs first: they were valid
    launcher = config.hydra.runtime.choices.get("hydra/launcher", "basic")
    if launcher == "slurm":
        from overfit.cluster.detach import need_slurm

        need_slurm("hydra/launcher=slurm")
    store = store_for(jobs[0].tracking.uri, jobs[0].tracking.retry_seconds)
    reused = reuse_all(store, task_args, jobs, session)
    if reused is not None:
        return Prepared(store, reused.parent_run_id, None, None, len(jobs), reused)
    store, parent, sweep_dir = open_sweep(config, task_args, jobs, session, launcher, resources=resources)
    try:
        units = units_of(task_args, jobs)
        plan = sweep_dir / plan_file(parent)
        write_plan(plan, units)
        store.call("set_tag", parent, TAG_PLAN, str(plan))
    except BaseException as exc:  # the parent exists: it ends with what stopped it
        abort(store, parent, exc)
        raise
    if len(units) < len(jobs):
        print(f"[overfit] vectorized: {len(jobs)} points in {len(units)} job(s)", flush=True)
    overrides = [[f"sweep.plan={plan}", f"sweep.unit={u}", f"sweep.parent_run_id={parent}",
                  f"hydra.sweep.dir={sweep_dir}"] for u in range(len(units))]
    return Prepared(store, parent, sweep_dir, overrides, len(jobs))


def abort(store: Store, parent: str, exc: BaseException) -> None:
    """End a sweep that did not run to its end: KILLED by a signal (with its open points), FAILED by a bug.

    A store that is gone cannot be told anything; after a signal the store gets a few seconds, not its deadline.
    """
    from overfit.interrupts import Interrupted
    from overfit.tracking.store import StoreError

    if isinstance(exc, StoreError):
        return
    if not isinstance(exc, (Interrupted, KeyboardInterrupt)):
        runs.end(store, parent, "FAILED", "error", f"{type(exc).__name__}: {exc}")
        return
    store.hurry(CLOSE_SECONDS)
    try:
        close_open_points(store, parent)
        outcome = close_parent(store, parent, "KILLED")
    except StoreError:
        summary = f"the store did not answer: sweep {parent} stays open (`overfit runs reap` closes it)"
    else:
        counts: dict[str, int] = {}
        for p in outcome.points:
            counts[p.status] = counts.get(p.status, 0) + 1
        shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no point run yet"
        summary = (f"sweep {parent} closed KILLED ({shown}); the same command reuses what finished and resumes "
                   "the rest")
    if isinstance(exc, Interrupted):
        exc.outcome = summary


def close_open_points(store: Store, parent: str) -> int:
    """End KILLED the parent's point runs still RUNNING whose owner is gone (or is this process); how many."""
    from overfit.tracking import owners

    experiment = store.call("get_run", parent).info.experiment_id
    running = store.call("search_runs", [experiment], f"tags.`{runs.TAG_PARENT}` = '{parent}' and "
                         "attributes.status = 'RUNNING'", max_results=50_000)
    states = owners.job_states(r.data.tags for r in running)
    stale = [r for r in running if owners.is_me(r.data.tags) or not owners.alive(r.data.tags, states)]
    for run in stale:
        runs.end(store, run.info.run_id, "KILLED", "killed", "its sweep was interrupted")
    return len(stale)


def launcher_config(args: list[str]) -> DictConfig:
    """``hydra.launcher`` as ``args`` (their launcher choice and settings) compose it."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("overfit.conf", version_base="1.3", job_name="train"):
        return compose("train", [a for a in args if a.startswith(("hydra/launcher=", "hydra.launcher.",
                                                                   "trainer.accelerator="))],
                       return_hydra_config=True).hydra.launcher


def detach(task_args: list[str], begin: str | None) -> str:
    """``overfit train -m ARGS --detach [--begin TIME]``: every point validated now, the parent created SCHEDULED,
    a SLURM driver job runs the sweep attached when its time comes (:mod:`overfit.cluster.detach`); returns at once."""
    from overfit.cluster import detach as slurm_driver
    from overfit.compose import compose_jobs, replicated
    from overfit.sweeping.options import with_sweeper_defaults

    task_args = replicated(with_sweeper_defaults(slurm_driver.slurm_args(task_args, None, "--detach")))
    jobs = compose_jobs(task_args, multirun=True)
    store = store_for(jobs[0].tracking.uri, jobs[0].tracking.retry_seconds)
    experiment_id = store.experiment(jobs[0].experiment_name)
    launcher = next((a.split("=", 1)[1] for a in task_args if a.startswith("hydra/launcher=")), "basic")
    parent = open_parent(store, experiment_id, task_only(task_args), launcher, status="SCHEDULED",
                         simpler=simpler(task_only(task_args), jobs))
    given = next((a.split("=", 1)[1] for a in task_args if a.startswith("hydra.sweep.dir=")), None)
    sweep_dir = paths.resolve(given) if given else paths.project_root() / "multirun" / time.strftime(
        "%Y-%m-%d/%H-%M-%S") / parent[:12]
    task_args = [*(a for a in task_args if not a.startswith("hydra.sweep.dir=")), f"hydra.sweep.dir={sweep_dir}"]
    slurm_driver.schedule(store, parent, ["train", "-m", *task_args], launcher_config(task_args), sweep_dir, begin,
                          "sweep")
    return parent
