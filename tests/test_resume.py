"""Nothing lost: a point is one MLflow run for its whole life — killed, signalled or requeued, it resumes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import all_runs, compose, run_cli
from overfit.tracking import runs
from overfit.training import resume
from overfit.interrupts import Interrupted, Signals
from overfit.lifecycle.point import run_point

SLOW_POINT = ("dataset=digits", "model=mlp", "model.hidden=[32]", "loss=log_likelihood", "optimizer=sgd",
              "optimizer.batch_size=8", "trainer.max_epochs=300", "trainer.checkpoint_every_n_epochs=10")


def steps(store, run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(m.step for m in store.get_metric_history(run_id, key))


def test_a_signalled_run_resumes_into_the_same_run_without_duplicate_steps(root: Path, store, monkeypatch) -> None:
    """SIGTERM at epoch 12 of 30: KILLED with a checkpoint; the same command continues the same run to FINISHED."""
    overrides = ["dataset=polynomial", "features=polynomial", "features.order=3", "trainer.max_epochs=30",
                 "trainer.checkpoint_every_n_epochs=5"]
    cfg = compose(*overrides)
    real = resume.Resume.on_train_epoch_end

    def term_at_12(self, trainer, module):
        if trainer.current_epoch + 1 == 12:
            os.kill(os.getpid(), signal.SIGTERM)  # recorded now, honoured at the end of this epoch
        real(self, trainer, module)

    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", term_at_12)
    with pytest.raises(Interrupted) as stopped:
        run_point(cfg, overrides, root / "first")
    assert stopped.value.exit_code == 143
    (run,) = all_runs(store)
    assert run.info.status == "KILLED" and run.data.tags["failure"] == "killed"
    assert "SIGTERM" in run.data.tags["failure.reason"]
    checkpoint = Path(run.data.tags[runs.TAG_CHECKPOINT]) / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 11  # saved at the signal, after epoch 12's metrics

    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", real)
    result = run_point(cfg, overrides, root / "second")  # another job directory: found by its reuse key
    assert result.run_id == run.info.run_id and result.attempt == 2
    again = store.get_run(run.info.run_id)
    assert again.info.status == "FINISHED" and again.data.tags[runs.TAG_ATTEMPTS] == "2"
    assert "failure" not in again.data.tags
    assert steps(store, run.info.run_id) == list(range(1, 31))
    assert not checkpoint.exists()  # a finished run keeps no resume checkpoint

    # The resumed history is the history: the same as an uninterrupted run of the same config.
    fresh = run_point(compose(*overrides, "experiment_name=fresh"), overrides, root / "fresh")
    for key in ("train/loss", "val/error"):
        a = [m.value for m in sorted(store.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        b = [m.value for m in sorted(store.get_metric_history(fresh.run_id, key), key=lambda m: m.step)]
        assert a == pytest.approx(b, rel=1e-5)


def test_sgd_resumes_its_shuffling_stream(root: Path, store, monkeypatch) -> None:
    """Minibatch order after a resume is the order the uninterrupted run would have drawn."""
    overrides = ["dataset=breast_cancer", "loss=log_likelihood", "optimizer=sgd", "optimizer.batch_size=32",
                 "trainer.max_epochs=8", "trainer.checkpoint_every_n_epochs=100", "trainer.precision=64-true"]
    real = resume.Resume.on_train_epoch_end

    def term_at_3(self, trainer, module):
        if trainer.current_epoch + 1 == 3:
            os.kill(os.getpid(), signal.SIGINT)
        real(self, trainer, module)

    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", term_at_3)
    with pytest.raises(Interrupted) as stopped:
        run_point(compose(*overrides), overrides, root / "a")
    assert stopped.value.exit_code == 130
    monkeypatch.setattr(resume.Resume, "on_train_epoch_end", real)
    resumed = run_point(compose(*overrides), overrides, root / "b")
    fresh = run_point(compose(*overrides, "experiment_name=fresh"), overrides, root / "c")
    assert resumed.metrics["train/loss"] == pytest.approx(fresh.metrics["train/loss"], rel=1e-9)


def test_http_store_that_never_answers_is_one_line_within_seconds(root: Path, capsys) -> None:
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)  # accepts connections, never answers
    try:
        start = time.monotonic()
        code, out, err = run_cli(capsys, "train", "trainer.max_epochs=2",
                                 f"tracking.uri=http://127.0.0.1:{mute.getsockname()[1]}")
        elapsed = time.monotonic() - start
    finally:
        mute.close()
    assert code == 1 and elapsed < 30
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0], err


def test_relative_sqlite_uri_is_anchored_at_the_project_root(root: Path, capsys, tmp_path_factory, monkeypatch) -> None:
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    code, out, err = run_cli(capsys, "train", "dataset=line", "trainer.max_epochs=2", "tracking.uri=sqlite:///rel.db")
    assert code == 0, err
    assert (root / "rel.db").is_file() and not (cwd / "rel.db").exists()


@pytest.mark.parametrize("damage", ["truncated", "read-only"])
def test_a_damaged_store_is_named_in_one_line(damage: str, root: Path, capsys) -> None:
    db = root / "mlruns" / "mlflow.db"
    if damage == "truncated":
        db.write_bytes(db.read_bytes()[:5000])
    else:
        _read_only(db, True)
    before = db.read_bytes()
    try:
        code, out, err = run_cli(capsys, "train", "dataset=line", "trainer.max_epochs=2")
    finally:
        _read_only(db, False)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert str(db) in lines[0] and ("read-only" in lines[0] or "not a usable MLflow database" in lines[0])
    assert db.read_bytes() == before


def _read_only(path: Path, on: bool) -> None:
    """Read-only even for root (CI runs as root, whom file modes do not stop): the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444 if on else 0o644)
    elif subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("no way to make a file read-only for root here (chattr failed)")


# --- as users meet them: separate processes, real signals --------------------------------------------


def _overfit(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "overfit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _checkpoint_epoch(root: Path) -> int:
    for ckpt in root.glob("outputs/*/*/checkpoints/**/last.ckpt"):
        try:
            return int(torch.load(ckpt, weights_only=True)["epoch"]) + 1
        except Exception:  # being replaced right now
            return 0
    return 0


def _wait_for_checkpoint(root: Path, proc: subprocess.Popen, epoch: int, seconds: float = 300) -> None:
    """Until the running point has checkpointed ``epoch``; fails (never hangs) if it ends or stalls first."""
    deadline = time.monotonic() + seconds
    while _checkpoint_epoch(root) < epoch:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before its epoch-{epoch} checkpoint: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no epoch-{epoch} checkpoint within {seconds:.0f} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_kill_9_then_the_same_command_continues_the_same_run(root: Path, store) -> None:
    proc = _overfit("train", *SLOW_POINT)
    _wait_for_checkpoint(root, proc, 150)
    proc.kill()
    proc.wait()
    assert 150 <= _checkpoint_epoch(root) < 300
    (killed,) = all_runs(store)
    assert killed.info.status == "RUNNING"  # nobody could close it
    again = _overfit("train", *SLOW_POINT)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    (run,) = all_runs(store)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags[runs.TAG_ATTEMPTS] == "2"
    assert steps(store, run.info.run_id) == list(range(1, 301))
    assert "resumed" in out


def test_a_held_signal_waits_for_the_block_then_raises() -> None:
    with Signals() as signals:
        with pytest.raises(Interrupted) as caught:
            with signals.held():
                os.kill(os.getpid(), signal.SIGTERM)
                reached = True  # an import cut here would leave half-initialised modules behind
        assert reached and caught.value.signum == signal.SIGTERM


def test_a_signal_while_the_run_is_created_still_closes_it(root: Path, store, monkeypatch) -> None:
    real = runs.log_config

    def log_config_then_sigterm(*args, **kwargs) -> None:
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the run exists, but claim has not handed it back yet

    monkeypatch.setattr(runs, "log_config", log_config_then_sigterm)
    with pytest.raises(Interrupted):
        run_point(compose("dataset=line", "optimizer=gd", "trainer.max_epochs=3"), [], root / "job")
    (run,) = all_runs(store)
    assert run.info.status == "KILLED"


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_a_single_run_killed_with_the_shells_code(signum: int, code: int, root: Path, store) -> None:
    proc = _overfit("train", *SLOW_POINT)
    _wait_for_checkpoint(root, proc, 20)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("overfit:")]
    assert len(lines) == 1 and "interrupted by" in lines[0] and "Traceback" not in err, err[-2000:]
    (run,) = all_runs(store)
    assert run.info.status == "KILLED" and run.data.tags["failure"] == "killed"


@pytest.mark.slow
def test_a_30_second_lock_on_the_store_costs_nothing(root: Path, store) -> None:
    db = root / "mlruns" / "mlflow.db"
    proc = _overfit("train", *SLOW_POINT)
    _wait_for_checkpoint(root, proc, 20)
    lock = sqlite3.connect(db, timeout=60)
    lock.execute("BEGIN EXCLUSIVE")
    time.sleep(30)
    lock.rollback()
    lock.close()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    (run,) = all_runs(store)
    assert run.info.status == "FINISHED"
    assert steps(store, run.info.run_id) == list(range(1, 301))
    assert "Traceback" not in err


@pytest.mark.slow
def test_independent_processes_on_a_fresh_store_never_race(tmp_path: Path, monkeypatch) -> None:
    """4 `overfit train` started together on a store that does not exist yet, ten rounds."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for round_ in range(10):
        project = tmp_path / f"round{round_}"
        env = {**os.environ, "OVERFIT_ROOT": str(project)}
        procs = [_overfit("train", "dataset=polynomial", "trainer.max_epochs=100", f"seed={i}", env=env)
                 for i in range(4)]
        results = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
        client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
        found = all_runs(client)
        assert len(found) == 4 and all(r.info.status == "FINISHED" for r in found)
        assert all(steps(client, r.info.run_id) == list(range(1, 101)) for r in found)


@pytest.mark.slow
def test_two_cpu_devices_train_and_log_one_run(root: Path, store) -> None:
    """DDP with gloo on the CPU: the other rank's process starts from the same command line; rank 0 records."""
    proc = _overfit("train", "dataset=digits", "loss=log_likelihood", "trainer.max_epochs=3",
                    "trainer.accelerator=cpu", "trainer.devices=2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    (run,) = all_runs(store)
    assert run.info.status == "FINISHED"
    assert steps(store, run.info.run_id) == [1, 2, 3]
    assert run.data.params["trainer.devices"] == "2"

