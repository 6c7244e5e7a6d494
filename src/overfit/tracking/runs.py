"""MLflow: one store, one run per training job, honest end states.

The store is chosen once (``tracking.uri`` → ``$MLFLOW_TRACKING_URI`` → the
project's SQLite file) and artifacts of a local SQLite store sit beside the
database, so no job ever writes a second store in its working directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from overfit import paths
from overfit.config import flatten

# Keys that do not change what a run computes: left out of the config hash.
HASH_IGNORED = ("tracking", "sweep", "experiment_name", "trainer.progress_bar")

TAG_HASH = "overfit.config_hash"
TAG_FAILURE = "failure"
TAG_REASON = "failure.reason"


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the project's SQLite store."""
    uri = cfg.uri if cfg is not None else None
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()


def artifact_location(uri: str, experiment_name: str, configured: str | None = None) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite database, else the server's choice."""
    if configured:
        return paths.resolve(configured).as_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "artifacts" / experiment_name).as_uri()
    return None


def connect(cfg: DictConfig) -> str:
    """Point MLflow at the configured store and make sure the experiment exists.

    Run once in the launching process before parallel jobs start: a fresh
    SQLite store migrated by several processes at once breaks.
    """
    uri = tracking_uri(cfg.tracking)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return ensure_experiment(cfg.experiment_name, artifact_location(uri, cfg.experiment_name, cfg.tracking.artifact_location))


def ensure_experiment(name: str, location: str | None) -> str:
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def config_hash(cfg: DictConfig) -> str:
    """A short hash of everything that changes the result of a run."""
    flat = flatten(cfg)
    kept = {k: v for k, v in flat.items() if not any(k == i or k.startswith(f"{i}.") for i in HASH_IGNORED)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(paths.project_root()), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(cfg: DictConfig, overrides: list[str]) -> dict[str, str]:
    tags = {
        TAG_HASH: config_hash(cfg),
        "overrides": " ".join(overrides),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "loss": cfg.loss.name,
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def failure_of(exc: BaseException) -> tuple[str, str]:
    """(status, failure kind) for an exception that ended a run."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return RunStatus.to_string(RunStatus.KILLED), "killed"
    if isinstance(exc, FloatingPointError):
        return RunStatus.to_string(RunStatus.FAILED), "diverged"
    return RunStatus.to_string(RunStatus.FAILED), "error"


@contextmanager
def training_run(
    cfg: DictConfig,
    experiment_id: str,
    overrides: list[str],
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """A run holding the config; it ends FINISHED, FAILED (with the reason) or KILLED."""
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=cfg.tracking.run_name,
        tags=run_tags(cfg, overrides),
        parent_run_id=parent_run_id,
    )
    try:
        mlflow.log_params(flatten(cfg))
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        mlflow.log_text("\n".join(overrides) + "\n", "overrides.txt")
        yield run
    except BaseException as exc:
        status, kind = failure_of(exc)
        mlflow.set_tags({TAG_FAILURE: kind, TAG_REASON: f"{type(exc).__name__}: {exc}"[:5000]})
        mlflow.end_run(status)
        raise
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def ui_command(uri: str | None = None) -> str:
    """The exact command that opens the MLflow UI on this store."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        return f"{mlflow_bin} ui --backend-store-uri {uri} --default-artifact-root {artifacts} --port 5000"
    return f"open {uri} in a browser (it is a tracking server)"


def find_finished(cfg: DictConfig, experiment_id: str | None = None) -> mlflow.entities.Run | None:
    """The newest FINISHED run of the experiment with this config's hash, if any."""
    experiment_id = experiment_id or connect(cfg)
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_HASH}` = '{config_hash(cfg)}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def link_reused(parent_run_id: str, job_num: int, run_id: str) -> None:
    """Record on a sweep's parent that an earlier run stands in for one of its points."""
    from overfit.tracking.sweeps import TAG_REUSED

    MlflowClient().set_tag(parent_run_id, f"{TAG_REUSED}{job_num}", run_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def reap(client: MlflowClient, experiment_names: list[str] | None = None) -> list[str]:
    """Mark runs left RUNNING by a process of this host that no longer exists as KILLED.

    Runs of other hosts are left alone: from here nobody can tell whether they live.
    """
    experiments = [
        e.experiment_id
        for e in client.search_experiments()
        if experiment_names is None or e.name in experiment_names
    ]
    if not experiments:
        return []
    host = socket.gethostname()
    reaped = []
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=50_000):
        tags = run.data.tags
        if tags.get("host") != host or not tags.get("pid", "").isdigit() or _alive(int(tags["pid"])):
            continue
        client.set_tag(run.info.run_id, TAG_FAILURE, "killed")
        client.set_tag(run.info.run_id, TAG_REASON, f"process {tags['pid']} on {host} ended without closing the run")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        reaped.append(run.info.run_id)
    return reaped


def runs_main(argv: list[str]) -> int:
    """``overfit runs reap [--experiment NAME ...] [--tracking-uri URI]``"""
    import argparse

    parser = argparse.ArgumentParser(prog="overfit runs", description="Maintenance of the runs in the store.")
    sub = parser.add_subparsers(dest="command", required=True)
    reap_cmd = sub.add_parser("reap", help="mark runs left RUNNING by a dead process of this host as KILLED")
    reap_cmd.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    reap_cmd.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri or tracking_uri())
    reaped = reap(client, args.experiment)
    print(f"[overfit] marked {len(reaped)} run(s) KILLED" + (": " + " ".join(reaped) if reaped else ""))
    return 0
