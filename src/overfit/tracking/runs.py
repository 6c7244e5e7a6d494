"""Runs: the one place that creates, reopens, ends and finds MLflow runs, and tags them.

Three kinds of run share these functions: a *point* (one training config), a
*sweep* parent (its children are points) and a *pipeline* (its children are
sweep parents). A point is found again by its reuse key, the config hash plus
the fingerprint of the result-computing code, so one point is one run for its
whole life: a finished run is reused, an interrupted one is reopened and resumed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from overfit import paths
from overfit.tracking import owners
from overfit.tracking.fingerprint import code_fingerprint
from overfit.tracking.store import Store

if TYPE_CHECKING:
    from mlflow.entities import Param, Run

TAG_KIND = "overfit.kind"  # point | sweep | pipeline
TAG_HASH = "overfit.config_hash"
TAG_CODE = "overfit.code"
TAG_CHECKPOINT = "overfit.checkpoint"  # the directory a point's resume checkpoint lives in
TAG_ATTEMPTS = "overfit.attempts"  # how many processes have trained this run (resumes + 1)
TAG_REUSED = "overfit.reused."  # + job number, on a sweep parent → the finished run standing in for that point
TAG_FAILURE = "failure"  # error | diverged | killed | timeout | store | withdrawn
WITHDRAWN = "withdrawn"  # a claim given up: ended KILLED, then deleted, never trained (overfit.lifecycle.claim)
TAG_REASON = "failure.reason"
TAG_SLURM_JOB = owners.TAG_SLURM_JOB
TAG_CLAIM = "overfit.claim."  # + a process's token, on an interrupted run: that process is taking it over
TAG_NAME = "mlflow.runName"
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
TAG_POINT = "point"  # a point's name without its seed: every replicate of a point shares it (MLflow's "Group by")
TAG_TRIAL = "trial"  # a point an adaptive sweeper (Optuna's) proposed: its trial number, in proposal order
REPLICATE_KEY = "seed"  # the axis whose values are replicates of one point, not points of their own

# Keys that do not change what a run computes: left out of the config hash and of the run's params.
HASH_IGNORED = ("tracking", "sweep", "experiment_name", "trainer.progress_bar", "trainer.checkpoint_every_n_epochs",
                "trainer.checkpoint_every_seconds")
SHORT = {"regularizer.strength": "λ", "optimizer.lr": "lr"}  # how knobs read in run names


def flatten(cfg: DictConfig, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 0.1, ...}``: the resolved config as MLflow params."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, ListConfig):
            out[name] = OmegaConf.to_container(value)
        else:
            out[name] = value
    return out


def defining(cfg: DictConfig) -> dict[str, Any]:
    """The flattened config without what does not change a run's result: what defines the point."""
    return {k: v for k, v in flatten(cfg).items() if not any(k == i or k.startswith(f"{i}.") for i in HASH_IGNORED)}


def config_hash(cfg: DictConfig) -> str:
    """A short hash of everything in the config that changes the result of a run."""
    return hashlib.sha256(json.dumps(defining(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Key:
    """What makes two runs the same result: the config hash and the code fingerprint."""

    config_hash: str
    code: str

    @classmethod
    def of(cls, cfg: DictConfig) -> Key:
        return cls(config_hash(cfg), code_fingerprint())

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_HASH: self.config_hash, TAG_CODE: self.code}

    @property
    def filter(self) -> str:
        return f"tags.`{TAG_HASH}` = '{self.config_hash}' and tags.`{TAG_CODE}` = '{self.code}'"


COMPONENTS = ("dataset", "features", "model", "loss", "regularizer", "optimizer")  # tagged with their option


def component_tags(cfg: DictConfig) -> dict[str, str]:
    """Each component group's option (``model: mlp``), or its callable's name for a YAML nobody chose by name."""
    chosen = cfg.sweep.get("choices") or {}
    return {g: str(chosen.get(g) or str(cfg[g].get("_target_", "?")).rsplit(".", 1)[-1]) for g in COMPONENTS}


def point_name(overrides: list[str], keys: list[str] | None = None) -> str:
    """A run's name from the overrides that tell it apart: ``features.order=3``, ``λ=0.1 lr=0.01``.

    ``keys`` (a sweep's axes) keeps only those; a single run is named by all its overrides.
    """
    parts = []
    for text in overrides:
        key, _, value = text.lstrip("+~").partition("=")
        if key.startswith("hydra") or key.startswith("sweep.") or (keys is not None and key not in keys):
            continue
        parts.append(f"{SHORT.get(key, key)}={short(value)}")
    return " ".join(parts)[:250] or "defaults"


def short(value: str) -> str:
    """A number of more than 4 significant digits as people read it (``0.0042220418`` → ``0.004222``); anything
    else as given (``1000000.0``, ``0.001``, ``relu``)."""
    if len(value) <= 8:
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    shown = f"{number:.4g}"
    return value if float(shown) == number else shown


def replicate_group(name: str) -> str:
    """The point a run of ``name`` (:func:`point_name`'s ``key=value`` tokens) replicates: its name without the seed."""
    return " ".join(t for t in name.split(" ") if not t.startswith(f"{REPLICATE_KEY}=")) or "one point"


@cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(paths.project_root()), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def create(store: Store, experiment_id: str, kind: str, name: str, tags: dict[str, str] | None = None,
           parent: str | None = None, status: str = "RUNNING", start_ms: int | None = None) -> str:
    """A new run of ``kind`` named ``name``; every run carries its owner and the git commit.

    ``start_ms``: when it really started (a batched point's run is written when it ends).
    """
    all_tags = {TAG_KIND: kind, TAG_NAME: name, **owners.me(), **(tags or {})}
    commit = git_commit()
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    if parent:
        all_tags[TAG_PARENT] = parent
    run = store.call("create_run", experiment_id, start_time=start_ms, tags=all_tags, run_name=name)
    run_id = run.info.run_id  # type: ignore[attr-defined]
    counted = (store.uri, experiment_id, all_tags.get(TAG_CODE, ""))
    if counted in _known:
        _known[counted] += 1
    if status != "RUNNING":
        store.call("update_run", run_id, status=status)
    return run_id


def params_of(cfg: DictConfig) -> list[Param]:
    """What defines the point as MLflow params: the same for every run of one reuse key, so writing them
    again (a reopened run, a record retried after a kill) never changes a logged value."""
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in defining(cfg).items() if shown_param(k, v)]


def shown_param(key: str, value: Any) -> bool:
    """Not an unset value (a column of "None"), not a component's callable (its tag names the option chosen;
    ``config.yaml`` and the reuse key keep the callable): MLflow's views list every param beside each run."""
    return value is not None and not key.endswith("._target_")


def log_config(store: Store, run_id: str, cfg: DictConfig, overrides: list[str], files: bool = True) -> None:
    """A point's config: flattened params, and (unless the caller writes them later) its :func:`config_files`."""
    found = params_of(cfg)
    for i in range(0, len(found), 100):
        store.call("log_batch", run_id, params=found[i:i + 100])
    if files:
        log_files(store, run_id, config_files(cfg, overrides))


def config_files(cfg: DictConfig, overrides: list[str]) -> dict[str, str | bytes]:
    """The resolved config as YAML and the overrides that name the point, as a run's files."""
    return {"config.yaml": OmegaConf.to_yaml(cfg, resolve=True), "overrides.txt": "\n".join(overrides) + "\n"}


def log_files(store: Store, run_id: str, files: dict[str, str | bytes]) -> None:
    """Artifacts from memory, in one call (``log_text`` per file costs a store round trip each)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        store.call("log_artifacts", run_id, tmp)


def reopen(store: Store, run: Run, parent: str | None = None) -> int:
    """Make an interrupted run RUNNING again under this process; returns the attempt number.

    Its tags move on (owner, attempts, and with ``parent`` the sweep that now owns the point);
    its params never change.
    """
    attempts = int(run.data.tags.get(TAG_ATTEMPTS, "1")) + 1
    run_id = run.info.run_id
    for tag in (TAG_FAILURE, TAG_REASON):
        if tag in run.data.tags:
            store.call("delete_tag", run_id, tag)
    tags = {**owners.me(), TAG_ATTEMPTS: str(attempts), **({TAG_PARENT: parent} if parent else {})}
    from mlflow.entities import RunTag

    store.call("log_batch", run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    store.call("update_run", run_id, status="RUNNING")
    return attempts


def end(store: Store, run_id: str, status: str, failure: str | None = None, reason: str | None = None,
        budget: float | None = None) -> None:
    """End a run FINISHED, FAILED or KILLED (with the kind of failure and its reason), or park it SCHEDULED.

    ``budget``: how long to wait for a failing store (default: its deadline; a signal's exit waits less).
    """
    if failure:
        from mlflow.entities import RunTag

        tags = [RunTag(TAG_FAILURE, failure), RunTag(TAG_REASON, (reason or "")[:5000])]
        store.call_within(store.deadline if budget is None else budget, "log_batch", run_id, tags=tags)
    if status == "SCHEDULED":
        store.call_within(store.deadline if budget is None else budget, "update_run", run_id, status=status)
    else:
        store.call_within(store.deadline if budget is None else budget, "set_terminated", run_id, status)


def find(store: Store, experiment_id: str, key: Key) -> list[Run]:
    """Every run with this reuse key, newest first."""
    return store.call("search_runs", [experiment_id], filter_string=key.filter,  # type: ignore[return-value]
                      order_by=["attributes.start_time DESC"], max_results=50)


# How many point runs of each (store, experiment, code fingerprint) this process knows of: what its last
# search by fingerprint found, plus the runs it has created since. It only steers which search is cheaper.
_known: dict[tuple[str, str, str], int] = {}
KEY_SEARCH_RUNS = 6  # one search by key costs about as much as reading six runs in a search by fingerprint


def find_all(store: Store, experiment_id: str, keys: list[Key]) -> dict[Key, list[Run]]:
    """Every run of each key, newest first, by the cheaper way: one search per key, or one per code
    fingerprint (every run of the code read, then sorted by key). A store of thousands of runs costs
    a fingerprint search seconds, so a group of a few hundred points looks its keys up one by one."""
    found: dict[Key, list[Run]] = {key: [] for key in keys}
    for code in {key.code for key in keys}:
        hashes = {key.config_hash for key in keys if key.code == code}
        known = _known.get((store.uri, experiment_id, code), 0)
        if len(hashes) <= 4 or len(hashes) * KEY_SEARCH_RUNS < known:
            found.update({key: find(store, experiment_id, key) for key in (Key(config, code) for config in hashes)})
            continue
        every = store.call("search_runs", [experiment_id], filter_string=f"tags.`{TAG_CODE}` = '{code}'",
                           order_by=["attributes.start_time DESC"], max_results=50_000)
        _known[(store.uri, experiment_id, code)] = len(every)
        for run in every:
            config = run.data.tags.get(TAG_HASH)
            if config in hashes:
                found[Key(config, code)].append(run)
    return found


def finished(runs: list[Run], parent: str | None = None) -> Run | None:
    """The result a point can reuse: the newest FINISHED run, or one that diverged (a result, not an accident).

    ``parent``: only a result of that sweep (``sweep.rerun``: nothing from earlier sweeps counts).
    """
    for run in runs:
        if parent is not None and run.data.tags.get(TAG_PARENT) != parent:
            continue
        if run.info.status == "FINISHED" or (run.info.status == "FAILED" and run.data.tags.get(TAG_FAILURE) == "diverged"):
            return run
    return None


def resumable(runs: list[Run], alive: Callable[[Run], bool]) -> Run | None:
    """The newest run, if it was interrupted and its owner is gone: killed, timed out, requeued, lost its store."""
    # A withdrawn claim (another process's, deleted the next moment) is nothing to resume: the run before it is.
    runs = [r for r in runs if r.data.tags.get(TAG_FAILURE) != WITHDRAWN]
    if not runs:
        return None
    run = runs[0]
    status, failure = run.info.status, run.data.tags.get(TAG_FAILURE)
    if status in ("KILLED", "SCHEDULED") or (status == "FAILED" and failure in ("killed", "timeout", "store")):
        return run
    return run if status == "RUNNING" and not alive(run) else None
