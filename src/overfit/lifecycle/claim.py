"""Which run a point trains into, decided by its reuse key in the store, never by a directory.

A point (a config with its reuse key) is, in the store, one of:

- **finished**: a FINISHED run with its key (or one that diverged: a result too) — reused
  by a sweep, linked from its parent;
- **held**: a RUNNING run whose owner (process or SLURM job) is alive — somebody trains it
  now: wait for that result;
- **interrupted**: the newest run is KILLED, SCHEDULED (requeued), or RUNNING with its owner
  gone — reopened and resumed from its checkpoint, into the same run;
- **new**: nothing — a new run under the sweep's parent.

Two processes never train one key at once. The run itself is the lease: a process
*announces* (creates the new run, or tags the interrupted one with its claim), then
*looks* again; it keeps the point only if nobody else alive announced it too, else it
withdraws (deletes its new run, removes its tag) and tries again after a random pause.
Of any two processes that announce, the later one to look sees the other, so at most
one keeps the point (no clock is trusted); a live owner's run is never taken over.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from overfit.interrupts import Signals
from overfit.tracking import owners, runs
from overfit.tracking.pointfile import PointResult
from overfit.tracking.store import Store

if TYPE_CHECKING:
    from mlflow.entities import Run

WAIT_SECONDS = 2.0  # how often a held point's result is looked for
CHECKPOINTS = "checkpoints"


@dataclass
class Target:
    """A point to claim: its config, the overrides that name it, its run name, job number and directory.

    ``checkpoints``: where a new run keeps its checkpoints (a group's points share one folder);
    by default a folder of its own under the job directory.
    """

    cfg: DictConfig
    overrides: list[str]
    name: str
    num: int | None
    job_dir: Path
    checkpoints: Path | None = None
    tags: dict[str, str] = field(default_factory=dict)  # more tags for a new run (an adaptive sweep's trial)
    key: runs.Key = field(init=False)

    def __post_init__(self) -> None:
        self.key = runs.Key.of(self.cfg)


@dataclass
class Claim:
    """The run a point trains into, what it already holds (a reopened run's logged steps), its checkpoints."""

    result: PointResult
    logged: dict[str, int]
    checkpoints: Path

    @property
    def reused(self) -> bool:
        return self.result.reused


def _logged_steps(run: Run) -> dict[str, int]:
    """The last step of each metric the run already has (a resumed run sends only later steps).

    The store keeps each key's latest metric as the one with the highest step, and hands it back with the run.
    """
    return {m.key: m.step for m in run.data.to_proto().metrics}


def _interrupted(run: Run, states: dict[str, str]) -> bool:
    """A run nobody will finish: killed, requeued, failed for a reason that is not a result, or orphaned."""
    return runs.resumable([run], lambda r: owners.alive(r.data.tags, states)) is not None


def _claimers(run: Run, states: dict[str, str]) -> list[str]:
    """The live processes (by token) whose claim tag is on ``run``."""
    found = []
    for tag, value in run.data.tags.items():
        if tag.startswith(runs.TAG_CLAIM):
            owner = owners.parse(value)
            if owners.alive(owner, states):
                found.append(tag.removeprefix(runs.TAG_CLAIM))
    return found


@dataclass
class _State:
    """What the store says about one key."""

    done: Run | None = None
    held: bool = False
    interrupted: Run | None = None


def _state(found: list[Run], parent: str | None, rerun: bool, states: dict[str, str]) -> _State:
    if parent:
        done = runs.finished(found, parent if rerun else None)
        if done is not None:
            return _State(done=done)
    live = [r for r in found if r.info.status == "RUNNING" and owners.alive(r.data.tags, states)]
    if live or any(_claimers(r, states) for r in found):
        return _State(held=True)
    return _State(interrupted=runs.resumable(found, lambda r: owners.alive(r.data.tags, states)))


def close_abandoned(store: Store, sweeps: set[str], successor: str | None) -> None:
    """Sweeps whose points another one took over: those left RUNNING by a dead process end KILLED."""
    for run_id in sweeps:
        run = store.call("get_run", run_id)
        if run.info.status == "RUNNING" and not owners.alive(run.data.tags):
            runs.end(store, run_id, "KILLED", "killed", f"its process ended; sweep {successor} took its points over")


class Claimer:
    """Claims points for this process in one experiment of one store; see the module's docstring."""

    def __init__(self, store: Store, experiment_id: str, parent: str | None, rerun: bool,
                 on_reused: Callable[[Target, Run], None] | None = None, signals: Signals | None = None,
                 config_files: bool = True) -> None:
        self.store, self.experiment_id, self.parent, self.rerun = store, experiment_id, parent, rerun
        self.config_files = config_files  # False: the caller writes a new run's config files when it ends
        self.on_reused = on_reused
        self.signals = signals  # held over each announce-and-look round: a run is never created and left behind
        self._left: set[str] = set()  # the sweeps that points reused or reopened came from
        self._yielded = False  # this round lost a point to a process that goes first
        self._checkpoints: dict[str, Path] = {}  # each run this process created: the folder its tag names

    def claim(self, targets: list[Target], wait: bool = True) -> list[Claim | None]:
        """Each target's claim, in order; ``wait=False``: None for a point held by another live process.

        Targets with equal keys (a sweep that lists a value twice) share the first one's claim.
        A signal ends the claiming after the round it came in, the points not claimed yet None:
        the caller checks the signal where it can close what it holds.
        """
        firsts: dict[runs.Key, int] = {}
        for i, t in enumerate(targets):
            firsts.setdefault(t.key, i)
        unique = [targets[i] for i in firsts.values()]
        claims: dict[runs.Key, Claim | None] = {}
        todo, pause = unique, 0.0
        while todo:
            started, self._yielded = time.monotonic(), False
            with self.signals.held(honour=False) if self.signals is not None else nullcontext():
                retry, held = self._round(todo, claims)
            # Two processes that saw each other both withdrew: the one with the larger token waits longer than
            # a round, the other a moment, so one of them looks first next time (safety never depends on it).
            pause = min(max(2 * pause, 2 * (time.monotonic() - started), 0.2), 10.0)
            if not self._yielded:
                pause /= 10
            if not wait:
                claims.update({t.key: None for t in held})
                retry = [t for t in retry if t not in held]
            todo = retry
            if todo and self.signals is not None and self.signals.received is not None:
                claims.update({t.key: None for t in todo})
                break
            if todo:
                time.sleep(pause * random.random() if len(held) < len(todo) else WAIT_SECONDS)
        self._close_abandoned()
        return [claims[t.key] for t in targets]

    def _close_abandoned(self) -> None:
        left, self._left = self._left, set()
        close_abandoned(self.store, left - {self.parent}, self.parent)

    def _round(self, todo: list[Target], claims: dict[runs.Key, Claim | None]) -> tuple[list[Target], list[Target]]:
        """Look, announce what nobody holds, look again: (targets to try again, those held by others)."""
        found = runs.find_all(self.store, self.experiment_id, [t.key for t in todo])
        states = owners.job_states(r.data.tags for t in todo for r in found[t.key])
        announced: list[tuple[Target, Run | None, str]] = []  # (target, interrupted run or None, my run id)
        held = []
        for t in todo:
            state = _state(found[t.key], self.parent, self.rerun, states)
            if state.done is not None:
                claims[t.key] = self._reuse(t, state.done)
            elif state.held:
                held.append(t)
            elif state.interrupted is not None:
                self.store.call("set_tag", state.interrupted.info.run_id, runs.TAG_CLAIM + owners.TOKEN,
                                owners.text(owners.me()))
                announced.append((t, state.interrupted, state.interrupted.info.run_id))
            else:
                announced.append((t, None, self._create(t)))
        return self._settle(announced, claims) + held, held

    def _settle(self, announced: list[tuple[Target, Run | None, str]], claims: dict[runs.Key, Claim | None]) -> list[
            Target]:
        """Look again after announcing: keep what nobody else alive announced, withdraw the rest (returned)."""
        if not announced:
            return []
        found = runs.find_all(self.store, self.experiment_id, [t.key for t, _, _ in announced])
        states = owners.job_states(r.data.tags for t, _, _ in announced for r in found[t.key])
        lost = []
        for target, interrupted, mine in announced:
            live = [r for r in found[target.key] if r.info.run_id != mine and r.info.status == "RUNNING"
                    and owners.alive(r.data.tags, states)]
            rivals: list[object] = [*live, *(c for r in found[target.key] for c in _claimers(r, states)
                                             if c != owners.TOKEN)]
            this = next((r for r in found[target.key] if r.info.run_id == mine), None)
            if any(r.data.tags.get(owners.TAG_TOKEN, "") < owners.TOKEN for r in live):
                self._yielded = True  # processes give way in the order of their tokens: that one looks first
            if interrupted is not None and this is not None and not _interrupted(this, states):
                rivals.append(this.info.run_id)  # someone reopened it (or finished it) between our looks
            if self.parent and runs.finished(found[target.key], self.parent if self.rerun else None) is not None:
                rivals.append("a result")  # trained and finished by another process between our looks
            if rivals or this is None:
                self._withdraw(mine, interrupted is not None)
                lost.append(target)
            elif interrupted is None:
                claims[target.key] = self._new(target, mine)
            else:
                claims[target.key] = self._reopen(target, this)
        return lost

    # --- the four outcomes ---------------------------------------------------------------------
    def _reuse(self, target: Target, done: Run) -> Claim:
        if done.data.tags.get(runs.TAG_PARENT):
            self._left.add(done.data.tags[runs.TAG_PARENT])
        if self.on_reused is not None and done.data.tags.get(runs.TAG_PARENT) != self.parent:
            self.on_reused(target, done)
        tags = done.data.tags
        result = PointResult(done.info.run_id, done.info.status, dict(done.data.metrics),
                             tags.get(runs.TAG_FAILURE, ""), tags.get(runs.TAG_REASON, ""), reused=True,
                             parent=self.parent or "", key=target.key.config_hash)
        result.save(target.job_dir)
        return Claim(result, {}, target.job_dir / CHECKPOINTS)

    def _create(self, target: Target) -> str:
        """A new RUNNING run for the target (the announcement); its params come once it is kept."""
        cfg = target.cfg
        checkpoints = target.checkpoints or target.job_dir / CHECKPOINTS / uuid.uuid4().hex[:12]  # never another's
        tags = {**target.key.tags, **runs.component_tags(cfg), "overrides": " ".join(target.overrides),
                runs.TAG_CHECKPOINT: str(checkpoints), runs.TAG_POINT: runs.replicate_group(target.name), **target.tags}
        run_id = runs.create(self.store, self.experiment_id, "point", target.name, tags, parent=self.parent)
        self._checkpoints[run_id] = checkpoints
        return run_id

    def _new(self, target: Target, run_id: str) -> Claim:
        runs.log_config(self.store, run_id, target.cfg, target.overrides, files=self.config_files)
        result = PointResult(run_id, "RUNNING", parent=self.parent or "", key=target.key.config_hash)
        result.save(target.job_dir)
        return Claim(result, {}, self._checkpoints.pop(run_id))

    def _reopen(self, target: Target, run: Run) -> Claim:
        if run.data.tags.get(runs.TAG_PARENT):
            self._left.add(run.data.tags[runs.TAG_PARENT])
        attempt = runs.reopen(self.store, run, self.parent)
        self.store.call("delete_tag", run.info.run_id, runs.TAG_CLAIM + owners.TOKEN)
        result = PointResult(run.info.run_id, "RUNNING", attempt=attempt, parent=self.parent or "",
                             key=target.key.config_hash)
        result.save(target.job_dir)
        checkpoints = run.data.tags.get(runs.TAG_CHECKPOINT, str(target.job_dir / CHECKPOINTS))
        return Claim(result, _logged_steps(run), Path(checkpoints))

    def _withdraw(self, run_id: str, interrupted: bool) -> None:
        """Give the point up: remove our claim from an interrupted run, or delete the run we created."""
        if interrupted:
            self.store.call("delete_tag", run_id, runs.TAG_CLAIM + owners.TOKEN)
        else:  # ended, then deleted: out of every view, and never RUNNING even among the deleted
            self._checkpoints.pop(run_id, None)
            runs.end(self.store, run_id, "KILLED", runs.WITHDRAWN,
                     "another process claimed this point at the same moment")
            self.store.call("delete_run", run_id)
