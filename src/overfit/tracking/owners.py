"""Who owns a run, or a claim on one, and whether that owner may still be at it.

An owner is the SLURM job (array task) when there is one, else host and pid. A SLURM
job is asked about through ``sacct`` (from any node: a login node can tell that a
compute node's job ended); a process only from its own host. An owner nobody can
check (another host, no SLURM) counts as alive: a run is never taken from a live owner.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Mapping

from overfit.cluster import slurm

TAG_SLURM_JOB = "slurm.job_id"
TAG_TOKEN = "overfit.owner"  # this process, unmistakably (a requeued job may get the same pid back)
TOKEN = uuid.uuid4().hex[:12]


def me() -> dict[str, str]:
    """This process as an owner: host, pid, the SLURM job (array task) when there is one, and its token."""
    tags = {"host": socket.gethostname(), "pid": str(os.getpid()), TAG_TOKEN: TOKEN}
    job = slurm.job_id()
    if job:
        tags[TAG_SLURM_JOB] = job
    return tags


def text(owner: Mapping[str, str]) -> str:
    """An owner as one tag value."""
    return json.dumps(dict(owner), sort_keys=True)


def parse(value: str) -> dict[str, str]:
    """The owner :func:`text` wrote (nothing, for a value it did not write)."""
    try:
        found = json.loads(value)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def is_me(owner: Mapping[str, str]) -> bool:
    return owner.get(TAG_TOKEN) == TOKEN


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def job_states(owners: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The SLURM state of every job among ``owners``, in one ``sacct`` call."""
    return slurm.states(o[TAG_SLURM_JOB] for o in owners if o.get(TAG_SLURM_JOB))


def alive(owner: Mapping[str, str], states: Mapping[str, str] | None = None) -> bool:
    """Whether the process or SLURM job ``owner`` names may still be running (unknown counts as alive).

    ``states``: SLURM states from :func:`job_states` (asked for here when not given).
    """
    if is_me(owner):
        return True
    job = owner.get(TAG_SLURM_JOB)
    if job:
        if job == slurm.job_id():
            return False  # this very job, requeued: the earlier attempt is gone
        state = (states if states is not None else slurm.states([job])).get(job)
        if state is not None:
            return slurm.is_active(state)
    pid = owner.get("pid", "")
    if owner.get("host") == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    return True
