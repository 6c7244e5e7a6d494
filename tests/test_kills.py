"""Whole commands killed at a random moment, then run again: every point one FINISHED run, every step once.

Each case starts a sweep in its own process group, waits for a phase (composing, training,
writing the children), sends a signal at a random moment inside it, then runs the same
command again and reads the store. The seed of the draw is in every failure message.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from overfit.tracking import runs
from overfit.tracking.points import collect
from overfit.tracking.store import Store

pytestmark = pytest.mark.slow

EPOCHS = 300
GRID = ["dataset=polynomial", "features=polynomial", "features.order=1,2,3", "regularizer=l2",
        "regularizer.strength=0,0.01,1", f"trainer.max_epochs={EPOCHS}", "trainer.checkpoint_every_n_epochs=25"]
# Vectorized, 30 points: enough that their runs are written by worker processes, a window a signal can hit.
WIDE = [*GRID[:4], "regularizer.strength=0,1e-4,3e-4,1e-3,3e-3,0.01,0.03,0.1,0.3,1", *GRID[5:]]
MODES = {"vectorized": (WIDE, 30), "alone": ([*GRID, "sweep.vectorize=false"], 9)}
SEED = int(os.environ.get("OVERFIT_KILL_SEED", time.time_ns() % 100_000))


def start(root: Path, args: list[str] = GRID) -> subprocess.Popen[str]:
    env = {**os.environ, "OVERFIT_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, "-m", "overfit", "train", "-m", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def point_runs(root: Path, view: int = ViewType.ACTIVE_ONLY) -> list:
    if not (root / "mlflow.db").exists():
        return []
    c = client(root)
    experiments = [e.experiment_id for e in c.search_experiments()]
    found = c.search_runs(experiments, max_results=10_000, run_view_type=view) if experiments else []
    return [r for r in found if r.data.tags.get(runs.TAG_KIND) == "point"]


def until(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 300) -> bool:
    """Wait for ``condition`` while the command runs; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if condition():
                return True
        except Exception:  # the store is being written right now: look again
            pass
        time.sleep(0.1)
    return False


def group_checkpointed(root: Path) -> bool:
    return any(root.glob("multirun/**/last.ckpt"))


def some_finished(root: Path) -> bool:
    """Read-only, straight from SQLite: an MLflow client opened on a store the sweep is still creating would
    run MLflow's migrations alongside the sweep's own (two writers of one new schema)."""
    db = root / "mlflow.db"
    if not db.exists():
        return False
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
        return c.execute("SELECT 1 FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid WHERE runs.status = "
                         "'FINISHED' AND tags.key = ? AND tags.value = 'point' LIMIT 1", (runs.TAG_KIND,)).fetchone() \
            is not None


PHASES: dict[str, Callable[[Path, subprocess.Popen[str], random.Random], None]] = {
    "compose": lambda root, proc, rng: time.sleep(rng.uniform(0.2, 1.5)),
    "training": lambda root, proc, rng: (until(lambda: group_checkpointed(root), proc), time.sleep(rng.uniform(0, 1))),
    "writing": lambda root, proc, rng: until(lambda: some_finished(root), proc),
}

CASES = [
    ("vectorized", "SIGKILL", "training"), ("vectorized", "SIGTERM", "writing"), ("vectorized", "SIGINT", "compose"),
    ("vectorized", "SIGKILL", "writing"), ("alone", "SIGKILL", "writing"), ("alone", "SIGTERM", "training"),
    ("alone", "SIGINT", "training"), ("alone", "SIGKILL", "compose"),
]


@pytest.mark.parametrize("mode,signame,phase", CASES, ids=["-".join(c) for c in CASES])
def test_a_killed_sweep_finishes_on_the_same_command(mode: str, signame: str, phase: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{mode}-{signame}-{phase}")
    why = f"(OVERFIT_KILL_SEED={SEED})"
    args, count = MODES[mode]
    proc = start(tmp_path, args)
    PHASES[phase](tmp_path, proc, rng)
    if proc.poll() is not None:
        out, err = proc.communicate()
        pytest.fail(f"the sweep ended before the signal {why}: {out[-1500:]} {err[-3000:]}")
    os.killpg(proc.pid, getattr(signal, signame))
    out, err = proc.communicate(timeout=120)
    if proc.returncode in (130, 143):  # a signal it could act on: one line, ours
        lines = [ln for ln in err.splitlines() if ln.startswith("overfit:")]
        assert len(lines) == 1 and "Traceback" not in err, err[-3000:] + why
    time.sleep(10)
    with pytest.raises(ProcessLookupError):  # nothing of the first command outlives it by 10 s
        os.killpg(proc.pid, 0)

    again = start(tmp_path, args)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:] + why
    points = point_runs(tmp_path)
    assert len(points) == count and len({r.data.tags[runs.TAG_HASH] for r in points}) == count, why
    c = client(tmp_path)
    for run in points:
        history = [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")]
        assert run.info.status == "FINISHED" and sorted(history) == list(range(1, EPOCHS + 1)), (run.info.run_name, why)
    every = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=10_000)
    assert not [r.info.run_name for r in every if r.info.status == "RUNNING"], why
    parent = re.findall(rf"sweep ([0-9a-f]{{32}}): {count} points finished", out)
    assert parent, out + why
    _, reported = collect(Store(f"sqlite:///{tmp_path / 'mlflow.db'}"), parent[-1])
    assert len(reported) == count and all(p.finished for p in reported), why


def test_a_group_killed_late_loses_at_most_one_checkpoint_interval(tmp_path: Path) -> None:
    proc = start(tmp_path)

    def late() -> bool:
        import torch

        for ckpt in tmp_path.glob("multirun/**/last.ckpt"):
            return int(torch.load(ckpt, weights_only=True)["epoch"]) + 1 >= 2 * EPOCHS // 3
        return False

    assert until(late, proc), "the group ended before two thirds of its epochs"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    again = start(tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    (resumed,) = re.findall(r"9 points resume together from epoch (\d+) of 300", out)
    assert int(resumed) >= 2 * EPOCHS // 3  # what it had before the kill, less at most one interval of 25


def test_two_identical_sweeps_at_once_train_each_point_once(tmp_path: Path) -> None:
    first, second = start(tmp_path), start(tmp_path)
    for proc in (first, second):
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    points = point_runs(tmp_path)
    assert len(points) == 9 and all(r.info.status == "FINISHED" for r in points)
    assert len({r.data.tags[runs.TAG_HASH] for r in points}) == 9  # one run per reuse key
    withdrawn = [r for r in point_runs(tmp_path, ViewType.DELETED_ONLY)]
    assert all(r.info.status == "KILLED" for r in withdrawn)  # claims given up at once, never trained


def test_two_different_sweeps_started_together_on_a_fresh_store_report_their_own(tmp_path: Path) -> None:
    low = [a if not a.startswith("features.order=") else "features.order=1,2" for a in GRID]
    high = [a if not a.startswith("features.order=") else "features.order=5,6" for a in GRID]
    procs = [start(tmp_path, low), start(tmp_path, high)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for (out, _), orders in zip(outs, (["1", "2"], ["5", "6"])):
        (parent,) = re.findall(r"sweep ([0-9a-f]{32}): 6 points finished", out)
        _, points = collect(store, parent)
        assert sorted({p.values["features.order"] for p in points}) == orders and len(points) == 6
        assert all(p.finished and not p.reused for p in points)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path: Path):
    """A tracking server on a free port, and a function that stops it for good."""
    port = free_port()
    proc = subprocess.Popen([Path(sys.executable).with_name("mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--default-artifact-root", str(tmp_path / "art"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.5)

    def stop() -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    yield uri, stop
    if proc.poll() is None:
        stop()


@pytest.mark.parametrize("then", ["wait", "sigterm"])
def test_a_tracking_server_gone_for_good_is_a_bounded_failure(then: str, server, tmp_path: Path) -> None:
    uri, stop = server
    env = {**os.environ, "OVERFIT_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "overfit", "train", "-m", *GRID[:-2], "trainer.max_epochs=100000",
           "sweep.vectorize=false", "tracking.retry_seconds=20"]
    proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    mlflow = MlflowClient(uri)
    assert until(lambda: any(r.info.status == "RUNNING" and r.data.tags.get(runs.TAG_KIND) == "point"
                             for r in mlflow.search_runs(["1"])), proc, timeout=120)
    stop()
    stopped = time.monotonic()
    if then == "sigterm":
        time.sleep(3)
        os.kill(proc.pid, signal.SIGTERM)
        stopped = time.monotonic()
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - stopped
    lines = [ln for ln in err.splitlines() if ln.startswith("overfit:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    if then == "wait":
        assert proc.returncode == 1 and took <= 20 + 10 and "gave up after 20 s" in lines[0], (took, lines)
        assert out.count("Launching") <= 1 and "#1 :" not in out  # no further point launched
    else:
        assert proc.returncode == 143 and took <= 10, (took, lines)
