"""Closing the runs whose owner is gone (``overfit runs reap``); who owns a run: :mod:`overfit.tracking.owners`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from overfit.tracking import owners, runs
from overfit.tracking.store import Store, store_for

if TYPE_CHECKING:
    from mlflow.entities import Run


def owner_alive(run: Run, states: dict[str, str] | None = None) -> bool:
    """Whether the process or SLURM job that runs ``run`` may still be at it (unknown counts as alive)."""
    return owners.alive(run.data.tags, states)


def reap(store: Store, experiment_names: list[str] | None = None) -> list[str]:
    """Mark RUNNING runs whose owner is gone as KILLED; returns their ids."""
    experiments = [e.experiment_id for e in store.call("search_experiments")
                   if experiment_names is None or e.name in experiment_names]
    if not experiments:
        return []
    running = store.call("search_runs", experiments, "attributes.status = 'RUNNING'", max_results=50_000)
    job_states = owners.job_states(r.data.tags for r in running)
    reaped = []
    for run in running:
        if owner_alive(run, job_states):
            continue
        tags = run.data.tags
        job = tags.get(runs.TAG_SLURM_JOB)
        owner = (f"SLURM job {job} ({job_states.get(job, 'unknown to sacct')})" if job
                 else f"process {tags.get('pid')} on {tags.get('host')}")
        runs.end(store, run.info.run_id, "KILLED", "killed", f"{owner} ended without closing the run")
        reaped.append(run.info.run_id)
    return reaped


def main(argv: list[str]) -> int:
    """``overfit runs reap [--experiment NAME ...] [--tracking-uri URI]``"""
    parser = argparse.ArgumentParser(prog="overfit runs", description="Maintenance of the runs in the store.")
    sub = parser.add_subparsers(dest="command", required=True)
    reap_cmd = sub.add_parser("reap", help="mark runs left RUNNING by a process or SLURM job that is gone as KILLED")
    reap_cmd.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    reap_cmd.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    reaped = reap(store_for(args.tracking_uri), args.experiment)
    print(f"[overfit] marked {len(reaped)} run(s) KILLED" + (": " + " ".join(reaped) if reaped else ""))
    return 0
