"""``overfit train``: a plain Hydra app (``@hydra.main``) with overfit's task function.

Hydra parses the command line as it documents it (``--help``, ``--hydra-help``, ``--cfg``,
``--resolve``, ``--info``, ``--config-dir``, ``--config-name``, ``-sc``, ``-m`` with any
sweeper and launcher); the config is ``overfit.conf`` (the project's ``conf/``). A single
run trains one point; ``-m`` is overfit's grid sweeper by default (``hydra/sweeper=overfit``,
:mod:`overfit.sweeping.sweeper`), or any other sweeper with overfit's callback.

:func:`main` is what ``overfit train`` and ``overfit-train`` run: it checks the command
first (bad input is one line and exit 2 before any run exists), calls the app, and prints
where the run or the sweep ended. Errors from the jobs reach it past Hydra's own reporting
(:class:`Stopped`), so every failure a user can cause is one line that is overfit's own.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from overfit import paths
from overfit.sweeping import session
from overfit.sweeping.session import Stopped

if TYPE_CHECKING:
    from overfit.tracking.pointfile import PointResult
    from overfit.tracking.sweeps import Outcome

PROG = "overfit-train"  # Hydra's program name: shell completion completes the command of this name


class _NoJobErrorEcho(logging.Filter):
    """Hydra logs "Error executing job ..." before re-raising; the CLI prints the one line that says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error executing job")


def _choices(cfg: DictConfig) -> None:
    """The option chosen in each group, kept with the config (the runs' tags name them)."""
    if not cfg.sweep.get("choices"):
        chosen = HydraConfig.get().runtime.choices
        cfg.sweep.choices = {k: v for k, v in chosen.items() if "/" not in k and not k.startswith("hydra")}


def task(cfg: DictConfig) -> float | None:
    """Hydra's task function: a single run, a job of overfit's plan, or a point another sweeper picked.

    A sweep's job returns the best validation error among its points (the worst value, +inf,
    when none finished: Optuna's sweeper fails on NaN).
    """
    from overfit.lifecycle.point import run_point
    from overfit.sweeping import record
    from overfit.tracking import runs

    from overfit.compose import normalize

    hc = HydraConfig.get()
    _choices(cfg)
    normalize(cfg)
    job_dir = Path(hc.runtime.output_dir)
    try:
        if cfg.sweep.get("unit") is not None:
            return _unit(cfg, job_dir)
        overrides = [o for o in hc.overrides.task if not o.startswith(("sweep.parent_run_id=", "sweep.axes="))]
        if hc.mode == RunMode.MULTIRUN:  # a point another sweeper launched: its parent is in the sweep's record
            sweep_dir = Path(hc.sweep.dir)
            cfg.sweep.parent_run_id = cfg.sweep.get("parent_run_id") or record.parent_of(sweep_dir)
            cfg.sweep.axes = record.axes_of(sweep_dir)
            name = runs.point_name(overrides, list(cfg.sweep.axes))
            trials = hc.sweeper.get("n_trials") is not None  # an adaptive search (Optuna's): points are its trials
            tags = {runs.TAG_TRIAL: str(hc.job.num)} if trials else {}
            name = f"trial {hc.job.num}: {name}" if trials else name
            result = run_point(cfg, overrides, job_dir, name, hc.job.num, tags)
            error = result.metrics.get("val/error", math.nan) if result.status == "FINISHED" else math.nan
            return error if math.isfinite(error) else math.inf
        from overfit.tracking.store import resolve_uri

        current = session.current()
        current.uri = resolve_uri(cfg.tracking.uri)
        current.result = run_point(cfg, overrides, job_dir, runs.point_name(overrides))
        return None
    except Exception as exc:
        raise Stopped(exc) from exc


def _unit(cfg: DictConfig, job_dir: Path) -> float:
    """One job of a sweep's plan: its points as one batched model, or a point alone; the best val error."""
    from overfit.lifecycle.group import run_group
    from overfit.lifecycle.plan import read_unit
    from overfit.lifecycle.point import run_point

    members = read_unit(Path(cfg.sweep.plan), cfg.sweep.unit)
    if len(members) == 1:
        m = members[0]
        results = [run_point(m.cfg(cfg.sweep.parent_run_id), m.overrides, job_dir / str(m.num), m.name, m.num)]
    else:
        results = run_group(members, cfg.sweep.parent_run_id, job_dir)
    errors = [r.metrics.get("val/error", math.nan) for r in results if r.status == "FINISHED"]
    best = min(errors, default=math.inf)
    return best if math.isfinite(best) else math.inf


app = hydra.main(version_base="1.3", config_path=paths.CONFIG_PATH, config_name="train")(task)


# --- the command line -------------------------------------------------------------------------------------------
INFORMATIONAL = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion")
HYDRA_VALUED = ("-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path", "-p", "--package")


def _split(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The overrides in ``args`` and Hydra's own flags among them (``--config-dir X`` ...)."""
    overrides, flags = [], {}
    items = iter(args)
    for arg in items:
        key = arg.split("=", 1)[0]
        if key in HYDRA_VALUED:
            flags[key] = arg.split("=", 1)[1] if "=" in arg else next(items, "")
        elif arg.startswith("-"):
            flags[arg] = ""
        else:
            overrides.append(arg)
    return overrides, flags


def search_overrides(flags: dict[str, str]) -> list[str]:
    """``--config-dir DIR`` as the override that adds DIR to the search path (for composing outside the app)."""
    folder = flags.get("-cd") or flags.get("--config-dir")
    return [f"hydra.searchpath=[file://{Path(folder).resolve()}]"] if folder else []


def check(args: list[str]) -> None:
    """Bad input in one line, exit 2, before Hydra or any run: the command's first point, composed and validated."""
    from overfit.compose import compose_jobs, expand, replicated, writable_dir

    overrides, flags = _split(args)
    sweeping = "-m" in flags or "--multirun" in flags
    extra = search_overrides(flags)
    if sweeping:
        ours = all(o in ("hydra/sweeper=overfit",) or not o.startswith("hydra/sweeper=") for o in overrides)
        first = expand(replicated(overrides) if ours else overrides)[0]  # the whole grid is composed (once) by the sweeper; its size is checked here
        compose_jobs([*first, *extra], multirun=False, checked=False)
        writable_dir(overrides, "hydra.sweep.dir", paths.project_root() / "multirun")
    else:
        from overfit.training.trainer import check_machine

        (cfg,) = compose_jobs([*overrides, *extra], multirun=False)
        check_machine(cfg.trainer)  # a single run trains here: this machine is the job's
        writable_dir(overrides, "hydra.run.dir", paths.project_root() / "outputs")


def run_app(args: list[str], current: session.Session) -> int:
    """The Hydra app on ``args`` (its exit status); the outcome lands in ``current``."""
    session.begin(current)
    argv, sys.argv = sys.argv, [PROG, *args]
    logging.getLogger("hydra.core.utils").addFilter(_NoJobErrorEcho())
    os.environ.setdefault("OVERFIT_ROOT", str(paths.project_root()))  # the app's folders and every job agree
    try:
        app()
    except SystemExit as exc:  # --help and friends exit 0; Hydra's own errors exit 1
        return exc.code if isinstance(exc.code, int) else 1
    except Stopped as stopped:
        _abort(current, stopped.error)
        raise stopped.error from None
    except BaseException as exc:
        _abort(current, exc)
        raise
    finally:
        sys.argv = argv
        session.end(current)
    return 0


def _abort(current: session.Session, exc: BaseException) -> None:
    """A sweep that another sweeper drove and that did not end: its parent closed (overfit's closes its own)."""
    from overfit.sweeping import driver
    from overfit.tracking.store import StoreError

    if current.parent is not None and current.store is not None and current.outcome is None:
        try:
            already = current.store.call("get_run", current.parent).info.status != "RUNNING"
        except StoreError:  # the store is away: what stopped the sweep stands, its parent is left to `runs reap`
            return
        if not already:
            driver.abort(current.store, current.parent, exc)


def sweep(task_args: list[str], nest_under: str | None = None, name: str | None = None, label: str = "",
          scheduled: str | None = None) -> Outcome:
    """``overfit train -m ARGS`` from code: validated, run, its outcome (the sweep's parent and points)."""
    from overfit.sweeping.options import with_sweeper_defaults

    task_args = with_sweeper_defaults(task_args)
    check(["-m", *task_args])
    current = session.Session(nest_under=nest_under, name=name, label=label, scheduled=scheduled)
    run_app(["-m", *task_args], current)
    assert current.outcome is not None
    return current.outcome


def main(argv: list[str] | None = None, scheduled: str | None = None) -> int:
    """``overfit train ARGS`` / ``overfit-train ARGS``: check, run, report on the terminal.

    ``scheduled``: the SCHEDULED parent of a detached sweep, reopened by its driver job.
    """
    from overfit.sweeping.options import with_sweeper_defaults

    args = sys.argv[1:] if argv is None else list(argv)
    if any(a.split("=", 1)[0] in INFORMATIONAL for a in args):
        return run_app(args, session.Session())  # exactly what Hydra prints
    overrides, flags = _split(args)
    sweeping_now = "-m" in flags or "--multirun" in flags
    if sweeping_now:
        args = with_sweeper_defaults(args)
    check(args)
    current = session.Session(scheduled=scheduled)
    code = run_app(args, current)
    if code:
        return code
    if current.outcome is not None:
        return print_outcome(current.outcome)
    if current.result is not None:
        print_run(current.result, current.uri)
        return 0 if current.result.status == "FINISHED" else 1
    return 0


def print_run(result: PointResult, uri: str) -> None:
    """Where a single run is: its id and status, its test metrics, the store and the UI command."""
    from overfit.tracking import ui

    shown = "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if k.startswith("test/") or k == "generalization_gap")
    resumed = f" (attempt {result.attempt}, resumed)" if result.attempt > 1 else ""
    print(f"[overfit] run {result.run_id} {result.status}{resumed}: {shown}")
    print(f"[overfit] store: {uri}")
    print(f"[overfit] open the MLflow UI: {ui.command(uri)}")


def print_outcome(outcome: Outcome) -> int:
    """The sweep's summary for the terminal; 1 if any point did not finish."""
    for line in [*outcome.summary(), *outcome.details()]:
        print(line, file=sys.stdout)
    return 1 if outcome.failed else 0
