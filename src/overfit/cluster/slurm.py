"""SLURM as a job sees it and as ``squeue``/``sacct`` report it: job ids, states, requeue, cancel, submit.

Small and dependency-free: the training task asks it whether a signal means
"requeue" and how to requeue; the launcher, reaping and ``overfit sweep
status|cancel`` ask it for job states; detached sweeps submit their driver job here.
Every command runs with a timeout: a controller that does not answer is one line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from types import FrameType
from typing import Any

# States of a job that may still run (or run again): its MLflow run is not orphaned.
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED")

# Tags on a sweep's parent (or a pipeline run) that tie it to its SLURM jobs.
# "<array id>@<first job number>:<jobs>,...": one array per launch (an adaptive sweeper launches several);
# an array of one job is a plain job (submitit), its id without a task number.
TAG_ARRAYS = "slurm.arrays"
TAG_DRIVER = "slurm.driver_job_id"  # the job that runs a detached sweep or pipeline
TAG_DIR = "sweep_dir"  # where the jobs' directories, logs and checkpoints are (a shared file system)
TAG_BEGIN = "slurm.begin"  # the begin time asked for (sbatch --begin)
TAG_STATE = "slurm.state"  # scheduled | queued | finished | cancelled

_ARRAY_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")  # "12_[2-3,5%2]": array tasks not yet started


class SlurmError(RuntimeError):
    """A SLURM command failed: one line naming it and what it said."""


def job_id() -> str | None:
    """``<array job>_<task>`` or ``<job>`` inside a SLURM job: what ``sacct`` and ``scancel`` take."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("sacct") is not None


def _run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{command[0]} failed: {exc}") from exc


def _expand(jid: str) -> list[str]:
    """``12_[2-3,5%2]`` → ``12_2 12_3 12_5``; any other id as it is."""
    match = _ARRAY_RANGE.match(jid)
    if match is None:
        return [jid]
    out = []
    for part in match[2].split("%")[0].split(","):
        first, _, last = part.partition("-")
        out += [f"{match[1]}_{i}" for i in range(int(first), int(last or first) + 1)]
    return out


def _parse(lines: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and "." not in jid:  # steps (12.batch, 12.0) are not jobs
            for one in _expand(jid):
                found[one] = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0" → CANCELLED
    return found


def states(job_ids: Iterable[str]) -> dict[str, str]:
    """``{job id: state}`` for these jobs (an array id stands for all its tasks), each task by its own id.

    ``squeue`` answers for jobs still in the queue (no accounting lag), ``sacct``
    for the rest. A pending array task cancelled on its own is in neither: absent.
    """
    ids = sorted(set(job_ids))
    if not ids or not available():
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    finished = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids + arrays)])
    found = _parse(finished.stdout)
    queued = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)])
    # squeue refuses a whole list when it has forgotten one id in it: then one array at a time.
    for out in [queued] if queued.returncode == 0 else [_run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", a])
                                                        for a in arrays]:
        if out.returncode == 0:
            found.update(_parse(out.stdout))
    return found


def is_active(state: str) -> bool:
    return state in ACTIVE


def cancel(job_ids: Iterable[str], signal_name: str | None = None) -> None:
    """``scancel`` these jobs (array ids cancel every task); already ended ones are not an error."""
    ids = sorted(set(job_ids))
    if ids:
        _run(["scancel", *([f"--signal={signal_name}"] if signal_name else []), *ids])


def wait_inactive(job_ids: Iterable[str], seconds: float) -> bool:
    """Poll until none of these jobs is active (True), or ``seconds`` pass (False)."""
    ids = list(job_ids)
    deadline = time.monotonic() + seconds
    while True:
        if not any(is_active(s) for s in states(ids).values()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def submit(command: str, options: dict[str, Any]) -> str:
    """``sbatch --parsable --wrap COMMAND`` with ``--key=value`` options (True: ``--key``, None: left out); the job id."""
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items() if v is not None]
    out = _run(["sbatch", "--parsable", *flags, "--wrap", command])
    if out.returncode != 0:
        raise SlurmError(f"sbatch refused the job: {' '.join(out.stderr.split())[:300]}")
    return out.stdout.strip().split(";")[0]


def exit_code(job: str) -> int:
    """A finished job's exit code (``sacct`` ExitCode ``1:0`` → 1; killed by a signal → 128 + it)."""
    out = _run(["sacct", "-n", "-X", "-P", "-o", "ExitCode", "-j", job]).stdout.split()
    code, _, signum = (out[-1] if out else "0:0").partition(":")
    return int(code) or (128 + int(signum) if int(signum or 0) else 0)


def end_time() -> float | None:
    """When SLURM will stop this job (epoch seconds), from its time limit; None outside a job or without one."""
    jid = job_id()  # an array task by its own id: the array's id (its SLURM_JOB_ID, for task 1) lists every task
    if not jid or shutil.which("squeue") is None:
        return None
    try:
        out = _run(["squeue", "-h", "-j", jid, "-o", "%i|%e"], timeout=30).stdout
        end = next(line.split("|")[1] for line in out.splitlines() if line.split("|")[0] == jid)
        return datetime.fromisoformat(end.strip()).timestamp()
    except (SlurmError, StopIteration, ValueError):  # no limit ("N/A"), or the controller is away: no deadline
        return None


def requeueing() -> bool:
    """Inside a job that just got SIGTERM: whether SLURM is requeueing it (``scontrol requeue``, preemption).

    A requeue raises the job's restart count before SLURM signals it; a cancel does not.
    """
    jid = job_id()
    if not jid or shutil.which("scontrol") is None:
        return False
    try:
        out = _run(["scontrol", "show", "job", jid], timeout=30).stdout
    except SlurmError:
        return False
    match = re.search(r"\bRestarts=(\d+)", out)
    return match is not None and int(match[1]) > int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeue(signum: int, previous: Callable[[int, FrameType | None], Any] | Any) -> None:
    """Requeue this job after a SLURM warning signal, the way its runner expects.

    Inside a submitit job the previous handler is submitit's: it calls the launcher's
    ``checkpoint()``, requeues and exits (or raises ``UncompletedJobError`` when the
    job timed out too often). A plain ``sbatch`` job is requeued with ``scontrol``.
    From here on the job only ends: further signals are ignored.
    """
    # Requeueing makes SLURM signal this job (SIGTERM, SIGCONT): a handler that raised then would abort the
    # requeue half-way and leave submitit's failure record for a job that is in fact queued again.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    if callable(previous) and previous not in (signal.default_int_handler,):
        previous(signum, None)
        return
    job = job_id()
    if job is None:
        raise RuntimeError("requeue outside a SLURM job")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    raise SystemExit(0)
