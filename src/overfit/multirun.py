"""``overfit train -m``: a Hydra multirun whose points share one MLflow parent run.

Every point is composed and validated before the parent exists; a sweep whose
points all finished earlier launches nothing; points that can train as one
batched model are planned into groups (``sweep.vectorize``); an adaptive sweeper
(Optuna) gets this project's defaults; ``--detach`` hands the sweep to a SLURM
driver job. The jobs themselves run :func:`overfit.app.task`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from overfit import paths
from overfit.app import hydra_session, task
from overfit.compose import compose_jobs, writable_dir
from overfit.config import check_groups
from overfit.interrupts import Signals
from overfit.tracking import runs
from overfit.tracking.store import CLOSE_SECONDS, Store, store_for
from overfit.tracking.sweeps import Outcome, close_parent, open_parent

if TYPE_CHECKING:
    from overfit.lifecycle.plan import Member


def sweep_axes(task_args: list[str]) -> list[str]:
    """The keys a sweep varies (``model`` for ``model=linear,mlp``)."""
    from overfit.tracking.sweeps import axes

    return [k.removesuffix(".name") for k in axes(task_args)]


def sweep_axes_override(task_args: list[str]) -> str:
    """``sweep.axes=[k1,k2]``: tells each point which of its overrides name it."""
    return f"sweep.axes=[{','.join(sweep_axes(task_args))}]"


def sweep_dir_of(task_args: list[str], run_id: str) -> Path:
    """The sweep's directory: as given, else under the project root, named for when it started and its run.

    Named for its run, no two sweeps share a default directory, whoever starts them and
    however close together. A directory given twice is shared safely: nothing in it is
    trusted to say which run a point is (:mod:`overfit.lifecycle.claim`), and the plan,
    checkpoints and ``point.json`` files in it name their sweep or their run.
    """
    given = next((a.split("=", 1)[1] for a in task_args if a.startswith("hydra.sweep.dir=")), None)
    if given:
        return paths.resolve(given)
    return paths.project_root() / "multirun" / time.strftime("%Y-%m-%d/%H-%M-%S") / run_id[:12]


def vectorized_units(task_args: list[str], jobs: list[DictConfig]) -> list[list[Member]] | None:
    """The sweep's jobs when its points train in groups: each group one job, the rest one job each.

    None when nothing batches, with ``sweep.vectorize=false``, or when an adaptive sweeper picks the points.
    """
    from overfit.compose import expand
    from overfit.lifecycle.plan import MAX_GROUP, Member
    from overfit.training.vectorized import plan_groups

    if adaptive(task_args) or not all(job.sweep.vectorize for job in jobs):
        return None
    groups, alone = plan_groups(jobs)
    keys = sweep_axes(task_args)
    points = []
    for num, (args, job) in enumerate(zip(expand(task_args), jobs)):
        own = [a for a in args if not a.startswith(("hydra.", "hydra/", "+hydra."))]
        points.append(Member(num, own, runs.point_name(own, keys), OmegaConf.to_container(job)))
    for num, reason in alone:
        print(f"[overfit] point {points[num].name} trains alone: {reason}", flush=True)
    if not groups:
        return None
    units = [[points[i] for i in group[start:start + MAX_GROUP]] for group in groups
             for start in range(0, len(group), MAX_GROUP)]
    return units + [[points[num]] for num, _ in alone]


def launcher_of(task_args: list[str]) -> str:
    return next((a.split("=", 1)[1] for a in task_args if a.startswith("hydra/launcher=")), "basic")


# ``hydra/sweeper=optuna`` as this project runs it (the plugin's own defaults otherwise: minimize, in-memory study):
# a seeded sampler, so a rerun asks the same trials and reuses them; one trial at a time, each learning from all
# before it; a diverged trial (NaN) is a result of the search, not a failure that stops it.
OPTUNA_DEFAULTS = ("hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_jobs=1", "hydra.sweeper.max_failure_rate=1.0")


def adaptive(task_args: list[str]) -> bool:
    """An adaptive sweeper (Optuna) picks its points as it goes: the composed jobs are only its search space's ends."""
    return any(a.startswith("hydra/sweeper=") and a != "hydra/sweeper=basic" for a in task_args)


def with_sweeper_defaults(task_args: list[str]) -> list[str]:
    """``task_args`` with :data:`OPTUNA_DEFAULTS` in front for an Optuna sweep, each unless the user set it."""
    if "hydra/sweeper=optuna" not in task_args:
        return task_args
    import optuna

    optuna.logging.disable_default_handler()  # its handler holds the stderr of the moment; Hydra's logging has ours
    optuna.logging.enable_propagation()
    given = {a.split("=", 1)[0] for a in task_args}
    return [*(d for d in OPTUNA_DEFAULTS if d.split("=", 1)[0] not in given), *task_args]


def planned(task_args: list[str], jobs: list[DictConfig]) -> int:
    """How many points the sweep will have: the grid's, or the adaptive sweeper's ``hydra.sweeper.n_trials``."""
    if not adaptive(task_args):
        return len(jobs)
    from hydra import compose

    with hydra_session():
        cfg = compose("train", [a for a in task_args if a.startswith(("hydra/sweeper=", "hydra.sweeper."))],
                      return_hydra_config=True)
    return int(cfg.hydra.sweeper.get("n_trials", len(jobs)))


def _reuse_all(store: Store, task_args: list[str], jobs: list[DictConfig], nest_under: str | None,
               name: str | None) -> Outcome | None:
    """When every point already has its result in the store: a parent linking them, nothing launched.

    Read-only until it knows: a store or experiment that does not exist yet is not created here.
    """
    if any(job.sweep.rerun for job in jobs) or adaptive(task_args):
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
    shown = [a for a in task_args if not a.startswith(("hydra.", "hydra/", "+hydra."))]
    parent = open_parent(store, experiment_id, shown, "none (every point reused)", nest_under, name)
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

    def run(self) -> None:
        from overfit.tracking.pointfile import POINT_FILE, read_point

        shown = 0
        while not self.stopped.wait(2.0):
            ended = [read_point(f.parent, self.parent) for f in self.sweep_dir.rglob(POINT_FILE)]
            done = sum(p is not None and p.status in ("FINISHED", "FAILED", "KILLED") for p in ended)
            if done > shown:
                shown = done
                print(f"[overfit] {self.label}{done}/{self.total} points done, "
                      f"{time.monotonic() - self.start_time:.0f} s", flush=True)


def sweep(task_args: list[str], nest_under: str | None = None, name: str | None = None,
          label: str = "", scheduled: str | None = None) -> Outcome:
    """``overfit train -m ARGS``: validate every point, open the parent, launch, publish the report.

    A sweep whose every point already finished launches nothing. A signal or Ctrl-C
    ends the parent KILLED, with the report of what finished, and propagates.
    ``scheduled``: the parent :func:`detach` created, reopened by its driver job.
    """
    task_args = with_sweeper_defaults(task_args)
    jobs = compose_jobs(task_args, multirun=True, checked=False)  # finished runs first: they were valid
    if launcher_of(task_args) == "slurm":
        from overfit.cluster.detach import need_slurm

        need_slurm("hydra/launcher=slurm")
    store = store_for(jobs[0].tracking.uri, jobs[0].tracking.retry_seconds)
    reused = None if scheduled else _reuse_all(store, task_args, jobs, nest_under, name)
    if reused is not None:
        return reused
    for job in jobs:  # what will train: every point checked before the parent exists
        check_groups(job)
    writable_dir(task_args, "hydra.sweep.dir", paths.project_root() / "multirun")
    experiment_id = store.experiment(jobs[0].experiment_name)
    if scheduled:  # its points reuse finished runs one by one, in their jobs
        runs.reopen(store, store.call("get_run", scheduled))
    parent = scheduled or open_parent(store, experiment_id, task_args, launcher_of(task_args), nest_under, name)
    total = planned(task_args, jobs)
    print(f"[overfit] sweep parent run {parent} in experiment {jobs[0].experiment_name!r}: {total} points",
          flush=True)
    with Signals() as signals:
        signals.hooks.append(lambda stop: store.hurry(CLOSE_SECONDS, stop))
        try:
            sweep_dir = sweep_dir_of(task_args, parent)
            store.call("set_tag", parent, "sweep_dir", str(sweep_dir))
            overrides = _job_overrides(store, task_args, jobs, parent, sweep_dir)
            progress = Progress(sweep_dir, parent, total, label)
            progress.start()
            try:
                with hydra_session() as hydra:
                    hydra.multirun(config_name="train", task_function=task,
                                   overrides=[*overrides, "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}",
                                              f"sweep.parent_run_id={parent}"])
            finally:
                progress.stopped.set()
        except BaseException as exc:
            _abort(store, parent, exc)
            raise
    return close_parent(store, parent)


def _job_overrides(store: Store, task_args: list[str], jobs: list[DictConfig], parent: str, sweep_dir: Path) -> list[
        str]:
    """What Hydra launches: every point, or (vectorized) one job per unit of the plan written now."""
    units = vectorized_units(task_args, jobs)
    if units is None:
        return [*task_args, sweep_axes_override(task_args)]
    from overfit.lifecycle.plan import TAG_PLAN, plan_file, write_plan

    plan = sweep_dir / plan_file(parent)
    write_plan(plan, units)
    store.call("set_tag", parent, TAG_PLAN, str(plan))
    print(f"[overfit] vectorized: {len(jobs)} points in {len(units)} job(s)", flush=True)
    return [*(a for a in task_args if a.startswith(("hydra.", "hydra/", "+hydra."))),
            f"sweep.plan={plan}", f"sweep.unit=range(0,{len(units)})"]


def _abort(store: Store, parent: str, exc: BaseException) -> None:
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


def detach(task_args: list[str], begin: str | None) -> str:
    """``overfit train -m ARGS --detach [--begin TIME]``: every point validated now, the parent created SCHEDULED,
    a SLURM driver job runs the sweep attached when its time comes (:mod:`overfit.cluster.detach`); returns at once."""
    from overfit.cluster import detach as driver

    task_args = with_sweeper_defaults(driver.slurm_args(task_args, None, "--detach"))
    jobs = compose_jobs(task_args, multirun=True)
    store = store_for(jobs[0].tracking.uri, jobs[0].tracking.retry_seconds)
    experiment_id = store.experiment(jobs[0].experiment_name)
    parent = open_parent(store, experiment_id, task_args, launcher_of(task_args), status="SCHEDULED")
    sweep_dir = sweep_dir_of(task_args, parent)
    task_args = [*(a for a in task_args if not a.startswith("hydra.sweep.dir=")), f"hydra.sweep.dir={sweep_dir}"]
    driver.schedule(store, parent, ["train", "-m", *task_args], launcher_config(task_args), sweep_dir, begin, "sweep")
    return parent


def launcher_config(args: list[str]) -> DictConfig:
    """``hydra.launcher`` as ``args`` (their launcher choice and settings) compose it."""
    from hydra import compose

    with hydra_session():
        return compose("train", [a for a in args if a.startswith(("hydra/launcher=", "hydra.launcher.",
                                                                   "trainer.accelerator="))],
                       return_hydra_config=True).hydra.launcher
