"""Detached, scheduled submission: the command returns, a SLURM *driver* job finishes the work later.

``overfit train -m ... --detach [--begin TIME]`` and ``overfit pipeline run FILE
--detach [--begin TIME]`` validate everything, create the sweep's parent (or the
pipeline's run) SCHEDULED with the driver's job id, directory and begin time,
submit the driver and return. The driver is the same command run attached inside
a SLURM job (``--scheduled-run RUN_ID``): it reopens that run instead of creating
one, submits the points' array job(s) when it starts, and publishes the report,
the summary (its log) and the final status with no terminal open.

A pipeline given ``--begin`` without ``--detach`` is submitted the same way and
followed: the driver's log is shown as it grows, Ctrl-C cancels it. (A sweep
given ``--begin`` without ``--detach`` needs no driver: its array job carries
the begin time, ``hydra.launcher.begin``.)

Why a driver job rather than an array plus an ``afterany`` finisher: one code path
(the attached one: tolerant gathering, progress, the report, Ctrl-C/SIGTERM ending
everything KILLED) serves both; a pipeline's later stages depend on earlier
results (a selection decides what the evaluation trains), which a finisher fixed
at submission cannot know; and the driver's own SIGTERM (``overfit sweep cancel``)
ends its sweep like a Ctrl-C. The cost is one core held by the driver while its
points run.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from overfit.cluster import slurm
from overfit.errors import ConfigError
from overfit.tracking import runs
from overfit.tracking.store import Store

FLAG_RUN = "--scheduled-run"  # the driver's own flag: reopen this SCHEDULED run instead of creating one


def need_slurm(what: str) -> None:
    """One line, before any run exists, when this machine cannot submit to SLURM."""
    if not slurm.available():
        raise ConfigError(what, "needs SLURM, but sbatch and sacct are not on this machine's PATH",
                          "run it on a SLURM login node (scripts/slurm-local start for a local one)")


def slurm_args(args: list[str], begin: str | None, flag: str) -> list[str]:
    """``args`` on the SLURM launcher (the default for ``--detach``/``--begin``), with its begin time set."""
    launcher = next((a.split("=", 1)[1] for a in args if a.startswith("hydra/launcher=")), None)
    if launcher not in (None, "slurm"):
        raise ConfigError(flag, f"needs the SLURM launcher, got hydra/launcher={launcher}", "hydra/launcher=slurm")
    need_slurm(flag)
    out = args if launcher else [*args, "hydra/launcher=slurm"]  # after -m: Hydra's overrides come in one run
    return [*out, f"hydra.launcher.begin={begin}"] if begin else out


def schedule(store: Store, run_id: str, command: list[str], launcher: Any, directory: Path, begin: str | None,
             kind: str) -> tuple[str, Path]:
    """Submit ``overfit COMMAND --scheduled-run RUN_ID`` as the driver of a SCHEDULED run; record it on the run.

    The driver takes one core and the launcher's partition, account, memory and
    ``driver_timeout_min``; it is never requeued (a second start would launch its
    points again). A refused submission ends the run FAILED with SLURM's reason.
    Returns the driver's job id and log.
    """
    from mlflow.entities import RunTag

    log = directory / "driver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    options = {"job_name": f"overfit-{kind}", "begin": begin, "output": str(log), "open_mode": "append",
               "time": launcher.driver_timeout_min, "cpus_per_task": 1, "ntasks": 1,
               "mem": f"{launcher.mem_gb}G" if launcher.mem_gb else None,
               "partition": launcher.partition, "account": launcher.account, "no_requeue": True}
    try:
        job = slurm.submit("exec " + shlex.join([sys.executable, "-m", "overfit", *command, FLAG_RUN, run_id]), options)
    except slurm.SlurmError as exc:
        runs.end(store, run_id, "FAILED", "error", str(exc))
        raise
    tags = {slurm.TAG_DRIVER: job, slurm.TAG_DIR: str(directory), slurm.TAG_STATE: "scheduled",
            **({slurm.TAG_BEGIN: begin} if begin else {})}
    store.call("log_batch", run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    when = f", begins {begin}" if begin else ""
    print(f"[overfit] {kind} run {run_id} SCHEDULED: SLURM driver job {job}{when}; log {log}", flush=True)
    print(f"[overfit] follow it: overfit sweep status {run_id}   stop it: overfit sweep cancel {run_id}", flush=True)
    return job, log


def follow(job: str, log: Path) -> int:
    """Wait for a driver job attached: its log shown as it grows; Ctrl-C or SIGTERM cancels it. Its exit code."""
    from overfit.interrupts import Signals

    shown = 0
    with Signals():
        try:
            while True:
                running = slurm.is_active(slurm.states([job]).get(job, "PENDING"))
                text = log.read_text() if log.is_file() else ""
                print(text[shown:], end="", flush=True)
                shown = len(text)
                if not running:
                    return slurm.exit_code(job)
                time.sleep(2.0)
        except BaseException:  # the driver closes its runs KILLED on the SIGTERM of scancel
            slurm.cancel([job])
            slurm.wait_inactive([job], 60)
            raise
