"""Every number a sweep reports is its own: identity by reuse key, leases, idempotent records, bounded failure.

Fast, in-process checks of the mechanisms; the same guarantees under real kill -9, SIGTERM and
SIGINT of whole commands are in ``test_kills.py`` (slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import all_runs, compose, parent_of, run_cli
from overfit.interrupts import Interrupted
from overfit.lifecycle.claim import Claimer, Target
from overfit.lifecycle.point import run_point
from overfit.sweeping.driver import unique_dir
from overfit.tracking import owners, runs
from overfit.tracking.pointfile import PointResult, read_point
from overfit.tracking.store import Store, StoreError
from overfit.tracking.writer import MetricWriter
from overfit.training import resume

POLY = ("dataset=polynomial", "features=polynomial", "trainer.max_epochs=30", "trainer.checkpoint_every_n_epochs=5")


def children(store, parent_id: str) -> list:
    return [r for r in all_runs(store) if r.data.tags.get(runs.TAG_PARENT) == parent_id]


def orders(store, parent_id: str) -> list[str]:
    from overfit.tracking.points import collect

    _, points = collect(Store(store.tracking_uri), parent_id)
    return sorted(p.values["features.order"] for p in points)


def steps(store, run_id: str) -> list[int]:
    return sorted(m.step for m in store.get_metric_history(run_id, "train/loss"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def owned_by(pid: int, token: str = "f" * 12) -> dict[str, str]:
    """Owner tags of another process of this host."""
    return {"pid": str(pid), owners.TAG_TOKEN: token}


# --- identity: by reuse key, never by directory ----------------------------------------------------
@pytest.mark.parametrize("vectorize", ["true", "false"])
def test_two_sweeps_sharing_a_directory_each_report_their_own_points(vectorize: str, root: Path, store,
                                                                     capsys) -> None:
    shared = ("hydra.sweep.dir=multirun/same", f"sweep.vectorize={vectorize}", *POLY)
    code, first, err = run_cli(capsys, "train", "-m", "features.order=1,2", *shared)
    assert code == 0, err
    code, second, err = run_cli(capsys, "train", "-m", "features.order=5,6", *shared)
    assert code == 0, err
    assert orders(store, parent_of(first)) == ["1", "2"]
    assert orders(store, parent_of(second)) == ["5", "6"]
    kids = children(store, parent_of(second))
    assert sorted(k.data.params["features.order"] for k in kids) == ["5", "6"]  # trained, not reused
    assert all(k.info.status == "FINISHED" and steps(store, k.info.run_id) == list(range(1, 31)) for k in kids)


def test_sweeps_started_at_the_same_moment_get_their_own_directories(root: Path) -> None:
    from omegaconf import OmegaConf

    default = OmegaConf.create({"hydra": {"sweep": {"dir": str(root / "multirun" / "same-moment")},
                                          "overrides": {"hydra": []}}})
    a, b = unique_dir(default, "a" * 32), unique_dir(default, "b" * 32)
    assert a != b and a.parent == b.parent  # the same timestamped folder, each its run's name under it
    given = OmegaConf.create({"hydra": {"sweep": {"dir": "x/y"}, "overrides": {"hydra": ["hydra.sweep.dir=x/y"]}}})
    assert unique_dir(given, "a" * 32) == root / "x" / "y"  # the user's own folder, as given


def test_a_job_never_adopts_a_run_with_another_reuse_key(root: Path, store) -> None:
    """A point.json another config left in the job's directory names a finished run: it is not this point's."""
    other = run_point(compose(*POLY, "features.order=2"), [], root / "job")
    job = root / "job"
    assert read_point(job).run_id == other.run_id
    cfg = compose(*POLY, "features.order=7")
    mine = run_point(cfg, [], job)
    assert mine.run_id != other.run_id and not mine.reused
    run = store.get_run(mine.run_id)
    assert run.data.params["features.order"] == "7" and run.data.tags[runs.TAG_HASH] == runs.Key.of(cfg).config_hash
    assert read_point(job, parent="someone-else") is None  # a reader of one sweep ignores another's file


def test_a_rerun_with_sweep_rerun_retrains_but_keeps_its_own_results(root: Path, store, capsys) -> None:
    grid = ("features.order=1,3", *POLY)
    code, out, _ = run_cli(capsys, "train", "-m", *grid)
    code, again, _ = run_cli(capsys, "train", "-m", *grid, "sweep.rerun=true")
    assert code == 0 and len(children(store, parent_of(again))) == 2  # new runs, under the new parent


# --- leases: one training per key across processes -------------------------------------------------
def claimer(root: Path, parent: str | None = None) -> tuple[Store, Claimer]:
    store = Store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    return store, Claimer(store, store.experiment("overfit"), parent, rerun=False)


def test_a_point_a_live_process_trains_is_waited_for_not_trained_again(root: Path, store) -> None:
    cfg = compose(*POLY, "features.order=3")
    key = runs.Key.of(cfg)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        s, c = claimer(root, parent="p" * 32)
        held = runs.create(s, s.experiment("overfit"), "point", "held", {**key.tags, **owned_by(sleeper.pid)})
        (claimed,) = c.claim([Target(cfg, [], "features.order=3", 0, root / "job")], wait=False)
        assert claimed is None  # held by a live owner
        sleeper.kill()
        sleeper.wait()
        (claimed,) = c.claim([Target(cfg, [], "features.order=3", 0, root / "job")], wait=False)
        assert claimed is not None and claimed.result.run_id == held and claimed.result.attempt == 2  # taken over
    finally:
        sleeper.kill()
    assert len(all_runs(store)) == 1


def test_two_claimers_that_announce_together_never_both_keep_the_point(root: Path, store, monkeypatch) -> None:
    """A rival's announcement appears between our two looks: we withdraw (and delete our run), then wait."""
    cfg = compose(*POLY, "features.order=3")
    key = runs.Key.of(cfg)
    s, c = claimer(root, parent="p" * 32)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    real = Claimer._settle

    def rival_announces(self, announced, claims):
        if announced:
            runs.create(s, s.experiment("overfit"), "point", "rival", {**key.tags, **owned_by(sleeper.pid, "0" * 12)})
        return real(self, announced, claims)

    monkeypatch.setattr(Claimer, "_settle", rival_announces)
    try:
        (claimed,) = c.claim([Target(cfg, [], "features.order=3", 0, root / "job")], wait=False)
    finally:
        sleeper.kill()
    assert claimed is None
    (rival,) = all_runs(store)  # ours was withdrawn: deleted, never RUNNING
    assert rival.info.run_name == "rival"
    deleted = [r for r in store.search_runs([rival.info.experiment_id], run_view_type=3) if r.info.run_id != rival.info.run_id]
    assert len(deleted) == 1 and deleted[0].info.status == "KILLED" and deleted[0].info.lifecycle_stage == "deleted"


def test_a_claim_another_process_is_withdrawing_is_never_taken_over(root: Path, store) -> None:
    """Between ending its withdrawn run KILLED and deleting it, a rival's run looks interrupted: it is not.
    Reopening it would write to a run deleted the next moment (the twins' sweep failed on that)."""
    cfg = compose(*POLY, "features.order=3")
    key = runs.Key.of(cfg)
    s, c = claimer(root, parent="p" * 32)
    experiment = s.experiment("overfit")
    killed = runs.create(s, experiment, "point", "killed", {**key.tags, **owned_by(dead_pid())})
    runs.end(s, killed, "KILLED", "killed", "its sweep was interrupted")
    time.sleep(0.01)  # newer: the one a claim would look at first
    withdrawn = runs.create(s, experiment, "point", "withdrawn", {**key.tags, **owned_by(os.getpid(), "0" * 12)})
    runs.end(s, withdrawn, "KILLED", runs.WITHDRAWN, "another process claimed this point at the same moment")
    (claimed,) = c.claim([Target(cfg, [], "features.order=3", 0, root / "job")], wait=False)
    assert claimed is not None and claimed.result.run_id == killed  # the interrupted run before it goes on
    assert runs.TAG_CLAIM + owners.TOKEN not in store.get_run(withdrawn).data.tags  # never announced on
    runs.end(s, killed, "KILLED", "killed", "interrupted again")
    s.call("delete_run", killed)
    (fresh,) = c.claim([Target(cfg, [], "features.order=3", 0, root / "job2")], wait=False)
    assert fresh is not None and fresh.result.run_id not in (killed, withdrawn)  # only a withdrawn one: a new run


def test_a_few_keys_among_many_runs_are_looked_up_one_by_one_and_find_the_same_runs(root: Path, monkeypatch) -> None:
    """A group's claim reads every run of the code only while that is cheaper than a search per key."""
    s = Store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    experiment = s.experiment("overfit")
    keys = [runs.Key(f"{n:016x}", "c" * 16) for n in range(40)]
    made = {key: runs.create(s, experiment, "point", f"p{n}", key.tags) for n, key in enumerate(keys)}
    searches: list[str] = []
    real = s.call

    def counted(method: str, *args, **kwargs):
        if method == "search_runs":
            searches.append(kwargs["filter_string"])
        return real(method, *args, **kwargs)

    monkeypatch.setattr(s, "call", counted)
    wide = runs.find_all(s, experiment, keys[:20])  # nothing known yet: one search reads all 40 runs
    assert len(searches) == 1 and {k: [r.info.run_id for r in v] for k, v in wide.items()} == {
        k: [made[k]] for k in keys[:20]}
    runs.create(s, experiment, "point", "one more", keys[0].tags)  # 41 runs known now
    searches.clear()
    few = runs.find_all(s, experiment, keys[:5])  # 5 searches by key read less than one of 41 runs
    assert len(searches) == 5 and all(runs.TAG_HASH in f for f in searches)
    assert [r.info.run_name for r in few[keys[0]]] == ["one more", "p0"]  # newest first, as the wide search
    assert {k: [r.info.run_id for r in v] for k, v in few.items() if k != keys[0]} == {k: [made[k]] for k in keys[1:5]}
    searches.clear()
    runs.find_all(s, experiment, keys[:10])  # 10 by key would cost more than reading the 41
    assert len(searches) == 1


def test_a_takeover_by_two_processes_goes_to_one(root: Path, store) -> None:
    cfg = compose(*POLY, "features.order=3")
    s, c = claimer(root)
    run_id = runs.create(s, s.experiment("overfit"), "point", "p", {**runs.Key.of(cfg).tags, **owned_by(dead_pid())})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # another live process has put its claim on the run
        s.call("set_tag", run_id, runs.TAG_CLAIM + "rival", owners.text({"host": os.uname().nodename,
                                                                         "pid": str(sleeper.pid)}))
        (claimed,) = c.claim([Target(cfg, [], "p", None, root / "job")], wait=False)
    finally:
        sleeper.kill()
    assert claimed is None
    assert runs.TAG_CLAIM + owners.TOKEN not in store.get_run(run_id).data.tags


def test_a_reopened_run_keeps_its_params_and_moves_to_the_new_sweep(root: Path, store) -> None:
    cfg = compose(*POLY, "features.order=3")
    s, c = claimer(root, parent="old" + "0" * 29)
    (first,) = c.claim([Target(cfg, [], "p", 0, root / "a")])
    old_params = store.get_run(first.result.run_id).data.params
    runs.end(s, first.result.run_id, "KILLED", "killed", "test")
    s.call("set_tag", first.result.run_id, owners.TAG_TOKEN, "f" * 12)
    sweep = runs.create(s, s.experiment("overfit"), "sweep", "old sweep", owned_by(dead_pid()))
    s.call("set_tag", first.result.run_id, runs.TAG_PARENT, sweep)
    s2, c2 = claimer(root, parent="new" + "0" * 29)
    (again,) = c2.claim([Target(cfg, ["sweep.rerun=false"], "p", 0, root / "b")])
    run = store.get_run(again.result.run_id)
    assert again.result.run_id == first.result.run_id and run.data.params == old_params
    assert run.data.tags[runs.TAG_PARENT] == "new" + "0" * 29
    assert store.get_run(sweep).info.status == "KILLED"  # the abandoned sweep does not stay RUNNING


# --- checkpoints -----------------------------------------------------------------------------------
REAL_EPOCH_END = resume.Resume.on_train_epoch_end


def term_at(epoch: int, monkeypatch) -> None:
    real = REAL_EPOCH_END

    def stop(self, trainer, module):
        if trainer.current_epoch + 1 == epoch:
            os.kill(os.getpid(), signal.SIGTERM)
        real(self, trainer, module)

    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", stop)


@pytest.mark.parametrize("damage", [lambda b: b[:1000], lambda b: b""], ids=["truncated", "empty"])
def test_a_bad_checkpoint_is_one_line_and_the_run_restarts_from_epoch_0(damage, root: Path, store, monkeypatch,
                                                                        capsys) -> None:
    cfg = compose(*POLY, "features.order=3")
    term_at(12, monkeypatch)
    with pytest.raises(Interrupted):
        run_point(cfg, [], root / "first")
    (run,) = all_runs(store)
    checkpoint = Path(run.data.tags[runs.TAG_CHECKPOINT]) / "last.ckpt"
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", REAL_EPOCH_END)
    capsys.readouterr()
    result = run_point(cfg, [], root / "second")
    err = capsys.readouterr().err
    assert result.run_id == run.info.run_id and result.status == "FINISHED" and result.attempt == 2
    assert [ln for ln in err.splitlines() if "checkpoint" in ln] and "cannot be read" in err
    assert steps(store, run.info.run_id) == list(range(1, 31))


def test_a_checkpoint_another_run_left_is_never_loaded(root: Path, tmp_path: Path) -> None:
    from overfit.training.fit import usable_checkpoint

    path = tmp_path / "last.ckpt"
    torch.save({"callbacks": {"Resume": {"owner": "run-a"}}}, path)
    assert usable_checkpoint(path, "run-a").path == path
    assert usable_checkpoint(path, "run-b") is None and not path.exists()


def test_a_vectorized_group_resumes_from_its_checkpoint_into_the_same_runs(root: Path, store, capsys,
                                                                           monkeypatch) -> None:
    grid = ("features.order=1,3,5", "regularizer=l2", "regularizer.strength=0,0.1", "trainer.precision=64-true",
            *POLY)
    term_at(12, monkeypatch)
    code, out, err = run_cli(capsys, "train", "-m", *grid)
    assert code == 143 and err.count("overfit:") == 1 and "6 KILLED" in err, err
    killed = children(store, parent_of_run(out))
    assert len(killed) == 6 and all(k.info.status == "KILLED" for k in killed)
    folders = {k.data.tags[runs.TAG_CHECKPOINT] for k in killed}
    assert len(folders) == 1 and (Path(folders.pop()) / "last.ckpt").is_file()
    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", REAL_EPOCH_END)
    trained = []
    from overfit.training import vectorized

    real_fit = vectorized.build_trainer

    def spy(*args, **kwargs):
        trainer = real_fit(*args, **kwargs)
        trained.append(trainer)
        return trainer

    monkeypatch.setattr(vectorized, "build_trainer", spy)
    code, again, err = run_cli(capsys, "train", "-m", *grid)
    assert code == 0, err
    assert trained[0].current_epoch == 30  # it ran epochs 13..30 only
    resumed = {k.info.run_id: k for k in children(store, parent_of(again))}
    assert resumed.keys() == {k.info.run_id for k in killed}
    for run in resumed.values():
        assert run.info.status == "FINISHED" and run.data.tags[runs.TAG_ATTEMPTS] == "2"
        assert steps(store, run.info.run_id) == list(range(1, 31))
    code, fresh, err = run_cli(capsys, "train", "-m", *grid, "experiment_name=fresh")
    alone = {k.info.run_name: k for k in children(store, parent_of(fresh))}
    for run in resumed.values():  # the interrupted trajectory continued exactly
        assert run.data.metrics["train/objective"] == pytest.approx(alone[run.info.run_name].data.metrics[
            "train/objective"], rel=1e-12)


def parent_of_run(out: str) -> str:
    import re

    return re.findall(r"sweep parent run ([0-9a-f]{32})", out)[-1]


# --- interruptions and empty sweeps ----------------------------------------------------------------
def test_an_interrupted_sweep_before_any_point_ended_is_reported_as_empty(root: Path, store, capsys,
                                                                          monkeypatch) -> None:
    from overfit.sweeping import driver

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(driver, "units_of", interrupted)
    code, out, err = run_cli(capsys, "train", "-m", "features.order=1,2", *POLY)
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    parent = store.get_run(parent_of_run(out))
    assert parent.info.status == "KILLED" and "No point" in parent.data.tags[runs.TAG_NOTE]
    code, out, err = run_cli(capsys, "report", parent.info.run_id)
    assert code == 0 and "report of 0 points" in out, err


# --- a store that is gone -------------------------------------------------------------------------
class Refusing:
    """A client whose every call fails as a stopped server's would."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("Connection refused")

        return fail


def test_an_outage_past_the_deadline_makes_the_store_gone_and_later_calls_fail_at_once() -> None:
    store = Store("http://127.0.0.1:9")
    store._client = Refusing()  # the client is only reached through calls
    store.deadline = 1.5
    start = time.monotonic()
    with pytest.raises(StoreError, match="gave up after 1.5 s"):
        store.call("get_run", "x")
    assert 1.0 <= time.monotonic() - start < 5
    start = time.monotonic()
    with pytest.raises(StoreError):
        store.call("get_run", "x")
    assert time.monotonic() - start < 0.1


def test_metrics_never_wait_for_the_store() -> None:
    store = Store("http://127.0.0.1:9")
    store._client = Refusing()
    store.deadline = 60
    writer = MetricWriter(store, every=0.05)
    writer.open_run("r")
    start = time.monotonic()
    for epoch in range(1, 2001):
        writer.add("r", {"train/loss": 1.0 / epoch}, epoch)
    assert time.monotonic() - start < 1.0  # 2,000 epochs queued while every send fails
    assert len(writer.pending("r")) == 2000
    writer.close()


def test_the_metric_thread_finds_the_store_gone_at_the_deadline_not_a_backoff_later() -> None:
    """Only a training's metric thread talks to the store: its backoff (5, 10, 20, 30 s) must not carry its
    next try past the outage's deadline, or training would run on for up to 30 s against a dead store."""
    store = Store("http://127.0.0.1:9")
    store._client = Refusing()
    store.deadline = 3
    writer = MetricWriter(store, every=2)  # tries at 2 s, then would wait 4 s: past the 3 s deadline
    writer.open_run("r")
    start = time.monotonic()
    writer.add("r", {"train/loss": 1.0}, 1)
    while store.gone is None and time.monotonic() - start < 30:
        time.sleep(0.05)
    writer.close()
    assert store.gone is not None and time.monotonic() - start < 2 + 3 + 1  # first try, then the deadline


def test_a_resumed_runs_learning_curve_is_whole(store) -> None:
    """The picture's curve: what an earlier attempt stored, then what this attempt trained (its values win)."""
    from mlflow.entities import Metric

    experiment = store.create_experiment("curves")
    run_id = store.create_run(experiment).info.run_id
    store.log_batch(run_id, metrics=[Metric(k, 1.0 / s, 0, s) for s in range(1, 6) for k in ("train/error", "val/error")])
    writer = MetricWriter(Store(store.tracking_uri))
    writer.open_run(run_id, {"train/error": 5, "val/error": 5})
    for epoch in range(4, 9):  # resumed from the epoch-3 checkpoint: 4 and 5 are trained again
        writer.add(run_id, {"train/error": 0.5 / epoch, "val/error": 2.0 / epoch, "train/loss": 1.0}, epoch)
    curve = writer.curve(run_id)
    writer.close()
    assert set(curve) == {"train/error", "val/error"}
    steps, values = curve["train/error"]
    assert steps == list(range(1, 9))
    assert values == pytest.approx([1.0, 0.5, 1 / 3] + [0.5 / e for e in range(4, 9)])
    fresh = MetricWriter(Store(store.tracking_uri))  # a run trained in one go reads nothing back
    fresh.open_run("new")
    fresh.add("new", {"val/error": 0.25}, 1)
    assert fresh.curve("new") == {"train/error": ([], []), "val/error": ([1], [0.25])}


def test_a_store_outage_in_a_sweep_stops_it_in_one_line(root: Path, capsys, monkeypatch) -> None:
    from overfit.tracking import store as store_module

    real = store_module.Store.attempt
    state = {"fail": False}

    def attempt(self, call, budget=None):
        if state["fail"]:
            return real(self, lambda: (_ for _ in ()).throw(ConnectionError("Connection refused")), budget)
        return real(self, call, budget)

    monkeypatch.setattr(store_module.Store, "attempt", attempt)
    from overfit.lifecycle import point

    real_train = point._train

    def outage(*args, **kwargs):
        state["fail"] = True
        return real_train(*args, **kwargs)

    monkeypatch.setattr(point, "_train", outage)
    launched = []
    real_run_point = point.run_point
    monkeypatch.setattr(point, "run_point", lambda *a, **k: launched.append(1) or real_run_point(*a, **k))
    code, out, err = run_cli(capsys, "train", "-m", "features.order=1,2,3", *POLY, "sweep.vectorize=false",
                             "tracking.retry_seconds=2")
    lines = [ln for ln in err.splitlines() if ln.startswith("overfit:")]
    assert code == 1 and len(lines) == 1 and "gave up after 2 s" in lines[0], err
    assert "Traceback" not in err
    assert len(launched) == 1  # no further point was launched


def test_point_result_round_trips(tmp_path: Path) -> None:
    PointResult("r", "FINISHED", {"a": 1.0}, parent="p", key="k").save(tmp_path)
    assert read_point(tmp_path, "p").metrics == {"a": 1.0}
