"""The cluster path for real: sweeps on a local SLURM (scripts/slurm-local) and a PostgreSQL-backed MLflow server.

Each test runs ``overfit`` as a user would, in its own process, against the
services the fixtures start (tests/cluster.py), and checks what MLflow and
``sacct`` say afterwards. Points that must be caught mid-training train a small
MLP for a few seconds; every point is its own SLURM job there (``sweep.vectorize=false``).
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

from cluster import MlflowServer, Slurm, mlflow_server, slurm  # noqa: F401  (pytest fixtures)
from helpers import all_runs, run_cli

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parent.parent
# A point slow enough to be caught mid-training (about 0.1-0.2 s per epoch on one core).
SLOW = ("hydra/launcher=slurm", "dataset=polynomial", "dataset.n_train=2000", "model=mlp", "model.hidden=[32]",
        "optimizer=sgd", "optimizer.batch_size=32", "features=polynomial", "sweep.vectorize=false")


class Command:
    """``overfit ARGS`` in its own process (as a terminal runs it), output to files, not pipes."""

    def __init__(self, root: Path, *args: str, cwd: Path | None = None) -> None:
        self.out, self.err = root / f"out-{uuid.uuid4().hex[:6]}.txt", root / f"err-{uuid.uuid4().hex[:6]}.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "overfit", *args], cwd=cwd or root, stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL)

    def wait(self, timeout: float) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        return code, self.out.read_text(), self.err.read_text()

    def printed(self, pattern: str) -> str | None:
        found = re.search(pattern, self.out.read_text())
        return found[1] if found else None


@pytest.fixture(autouse=True)
def no_jobs_left(slurm: Slurm) -> Any:
    """Jobs a failing test leaves queued or running are cancelled (the local SLURM is shared by every test)."""
    def queued() -> set[str]:
        return set(subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split())

    before = queued()
    yield
    left = queued() - before
    if left:
        subprocess.run(["scancel", *left], timeout=30, check=False)


def run(root: Path, *args: str, timeout: float = 900) -> tuple[int, str, str]:
    return Command(root, *args).wait(timeout)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def children(client: MlflowClient, parent_id: str) -> list[Any]:
    return [r for r in all_runs(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def steps(client: MlflowClient, run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def sacct(*job_ids: str, duplicates: bool = False) -> dict[str, list[str]]:
    """``{job id: [states, oldest first]}``, every attempt with ``duplicates``."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", *(["-D"] if duplicates else []), "-o", "JobID,State", "-j",
                          ",".join(job_ids)], capture_output=True, text=True, check=True, timeout=30).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        found.setdefault(jid, []).append(state.split()[0])
    return found


def settled(*job_ids: str) -> dict[str, list[str]]:
    """sacct once every job has ended (accounting lags the end of a job by a moment)."""
    active = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")
    return wait_for("sacct to settle", lambda: (s := sacct(*job_ids)) and all(v[-1] not in active for v in s.values())
                    and s, 60)


def arrays(parent: Any) -> list[str]:
    return [item.split("@")[0] for item in parent.data.tags["slurm.arrays"].split(",")]


def sweep_dir(parent: Any) -> Path:
    return Path(parent.data.tags["sweep_dir"])


@pytest.mark.timeout(600)
def test_a_sweep_on_slurm_is_one_parent_with_every_point_finished(slurm: Slurm, root: Path, store) -> None:
    """Attached, with a begin time: the command waits for the queue, as a user at a terminal would."""
    from overfit.cluster.schema import gpus, signal_delay
    from overfit.sweeping.driver import launcher_config

    assert gpus("gpu") == 1 and gpus("auto") is None and signal_delay(1) == 15  # a warning a 1-min job gets
    default = launcher_config(["hydra/launcher=slurm"])
    assert default.gpus_per_node is None and default.signal_delay_s is None and default.max_num_timeout > 0
    assert default.partition is None and default.account is None and default.cpus_per_task == 1

    code, out, err = run(root, "train", "-m", "features=polynomial", "features.order=1,2,3,4,5",
                         "trainer.max_epochs=30", "--begin", "now+10")
    assert code == 0, err[-3000:]
    assert "traceback" not in (out + err).lower()
    (parent,) = [r for r in all_runs(store) if r.data.tags.get("overfit.kind") == "sweep"]
    kids = children(store, parent.info.run_id)
    assert sorted(k.info.run_name for k in kids) == [f"features.order={o}" for o in range(1, 6)]
    assert all(k.info.status == "FINISHED" for k in kids)
    assert parent.info.status == "FINISHED" and parent.data.tags["points"] == "5"
    assert parent.data.tags["slurm.state"] == "finished" and parent.data.tags["slurm.begin"] == "now+10"
    assert parent.data.tags["launcher"] == "slurm"  # --begin implies the SLURM launcher
    assert {"report/summary.csv", "report/summary.md"} <= {a.path for a in store.list_artifacts(parent.info.run_id,
                                                                                                 "report")}
    jobs = settled(*arrays(parent))
    assert jobs and all(states == ["COMPLETED"] for states in jobs.values()), jobs
    times = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Submit,Start", "-j", ",".join(jobs)],
                           capture_output=True, text=True, check=True, timeout=30).stdout.split()
    waited = [datetime.fromisoformat(start) - datetime.fromisoformat(submit)
              for submit, start in (t.split("|") for t in times)]
    assert all(w.total_seconds() >= 9 for w in waited), waited  # held until its begin time
    assert {k.data.tags["slurm.job_id"] for k in kids} <= set(jobs)  # each point ran in one of the sweep's jobs
    (script,) = sweep_dir(parent).glob(".submitit/*/*_submission.sh")
    assert {"--begin=now+10", "--open-mode=append", "--signal=URG@120", "--cpus-per-task=1", "--mem=4GB",
            "--time=60"} <= set(script.read_text().split()), script.read_text()


@pytest.mark.timeout(600)
def test_a_gpu_sweep_is_validated_and_submitted_from_a_host_without_one(slurm: Slurm, root: Path, store) -> None:
    """The login node has no GPU: the sweep is submitted asking for one; the job (whose node declares a GPU that
    is not there) finds none and its points end FAILED saying so, one line each, vectorized or one at a time."""
    assert not torch.cuda.is_available()
    for vectorize in ("true", "false"):
        code, out, err = run(root, "train", "-m", "hydra/launcher=slurm", "trainer.accelerator=gpu",
                             "features=polynomial", "features.order=1,2", "trainer.max_epochs=5",
                             f"sweep.vectorize={vectorize}", "experiment_name=gpu-" + vectorize)
        assert code == 1, err[-3000:]
        assert "traceback" not in (out + err).lower()
        assert re.search(r"SLURM array \d+", out), out  # submitted: nothing refused it on this host
        needs = "trainer.accelerator: gpu needs a CUDA GPU but this machine has none (allowed: auto or cpu)"
        assert out.count(needs) == 2, out
        experiment = store.get_experiment_by_name("gpu-" + vectorize).experiment_id
        (parent,) = store.search_runs([experiment], "tags.`overfit.kind` = 'sweep'")
        kids = children(store, parent.info.run_id)
        assert len(kids) == 2 and all(k.info.status == "FAILED" and needs in k.data.tags["failure.reason"]
                                      for k in kids)
        scripts = list(sweep_dir(parent).glob(".submitit/*/*_submission.sh"))
        assert scripts and all("--gpus-per-node=1" in s.read_text().split() for s in scripts)
        assert all(states == ["FAILED"] for states in settled(*arrays(parent)).values())


@pytest.mark.timeout(900)
def test_requeue_and_preemption_keep_each_point_one_run_resumed(slurm: Slurm, root: Path, store) -> None:
    """scontrol requeue, scancel --signal=USR2 (submitit's preemption) and --signal=USR1 (Lightning's), mid-training."""
    epochs = 400  # about 20 s of training a point: the store sees its steps every few seconds while it trains
    sweep = Command(root, "train", "-m", *SLOW, "features.order=1,2,3,4,5", f"trainer.max_epochs={epochs}")
    parent_id = wait_for("the parent", lambda: sweep.printed(r"sweep parent run ([0-9a-f]{32})"), 120)
    signalled: dict[str, tuple[int, list[str]]] = {}  # run id → (epochs logged when signalled, command)

    def training() -> Any:
        for kid in children(store, parent_id):
            # Mid-training: a point past its last epoch is recording (files, pictures, model), not training.
            if kid.info.run_id not in signalled and kid.info.status == "RUNNING" and \
                    5 <= len(steps(store, kid.info.run_id)) <= epochs * 3 // 4:
                return kid
        return None

    for command in (["scontrol", "requeue"], ["scancel", "--signal=USR2"], ["scancel", "--signal=USR1"]):
        kid = wait_for("a point in training", training, 300, every=0.5)
        run_id, job, seen = kid.info.run_id, kid.data.tags["slurm.job_id"], len(steps(store, kid.info.run_id))
        # While a task of the array waits to restart, SLURM 22.05 answers a signal to another task "try again
        # later" after delivering it, and scancel retries: it is stopped once the signal did its work.
        sender = subprocess.Popen([*command, job], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        signalled[run_id] = (seen, command)
        # Parked for SLURM's requeue, with a checkpoint at the epoch it stopped: attempt 2 resumes there.
        wait_for(f"{command} to park its point", lambda: store.get_run(run_id).info.status == "SCHEDULED", 60, 0.2)
        sender.terminate()
        checkpoint = Path(store.get_run(run_id).data.tags["overfit.checkpoint"]) / "last.ckpt"
        assert torch.load(checkpoint, weights_only=False, map_location="cpu")["epoch"] >= seen - 1
    code, out, err = sweep.wait(600)
    assert code == 0, (out + err)[-3000:]
    assert f"sweep {parent_id}: 5 points finished" in out
    parent = store.get_run(parent_id)
    assert parent.data.tags["points"] == "5" and parent.data.tags["failed_points"] == "0"
    assert parent.data.tags["mlflow.note.content"].count("| [features.order=") == 5  # the summary: one row a point
    kids = children(store, parent_id)
    assert len(kids) == 5 and all(k.info.status == "FINISHED" for k in kids)
    for kid in kids:
        assert steps(store, kid.info.run_id) == list(range(1, epochs + 1)), kid.info.run_name  # once each, in order
        assert kid.data.tags.get("overfit.attempts", "1") == ("2" if kid.info.run_id in signalled else "1")
    assert not list(sweep_dir(parent).rglob("hpc_ckpt*")), "Lightning's own requeue must not act"
    history = sacct(*arrays(parent), duplicates=True)
    assert sum(states.count("REQUEUED") for states in history.values()) == 3, history


@pytest.mark.timeout(1100)
def test_points_longer_than_their_time_limit_checkpoint_requeue_and_finish(slurm: Slurm, root: Path, store) -> None:
    # 900 epochs of 250 steps: about 115 s of training a point on an idle core here (0.13 s an epoch), so more
    # than the ~40 s a 1-minute job leaves for training even on a machine twice as fast; eight requeues cover
    # one twice as slow. Training fast enough to finish in one job would leave nothing to test: it fails.
    epochs = 900
    code, out, err = run(root, "train", "-m", *SLOW, "dataset.n_train=4000", "optimizer.batch_size=16",
                         "hydra.launcher.timeout_min=1", "hydra.launcher.max_num_timeout=8", "features.order=1,2",
                         f"trainer.max_epochs={epochs}", timeout=1000)
    assert code == 0, (out + err)[-3000:]
    (parent,) = [r for r in all_runs(store) if r.data.tags.get("overfit.kind") == "sweep"]
    kids = children(store, parent.info.run_id)
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids), [k.data.tags for k in kids]
    for kid in kids:
        assert int(kid.data.tags.get("overfit.attempts", "1")) >= 2, "trained within one job: nothing requeued"
        assert steps(store, kid.info.run_id) == list(range(1, epochs + 1))  # resumed where it stopped, once each
    history = sacct(*arrays(parent), duplicates=True)
    assert all("REQUEUED" in states for states in history.values()), history


@pytest.mark.timeout(600)
def test_a_point_out_of_requeues_fails_with_timeout_never_error(slurm: Slurm, root: Path, store) -> None:
    code, out, err = run(root, "train", "-m", *SLOW, "dataset.n_train=1000", "hydra.launcher.timeout_min=1",
                         "hydra.launcher.max_num_timeout=0", "features.order=1,2", "trainer.max_epochs=100000")
    assert code == 1, err[-3000:]
    assert "traceback" not in (out + err).lower()
    assert out.count("FAILED (timeout)") == 2, out
    (parent,) = [r for r in all_runs(store) if r.data.tags.get("overfit.kind") == "sweep"]
    kids = children(store, parent.info.run_id)
    assert [(k.info.status, k.data.tags["failure"]) for k in kids] == [("FAILED", "timeout")] * 2
    assert all(steps(store, k.info.run_id) for k in kids)  # each trained until its time ran out
    assert all(states == ["FAILED"] for states in settled(*arrays(parent)).values())


@pytest.mark.timeout(600)
def test_a_cancelled_job_and_a_diverged_point_fail_alone(slurm: Slurm, root: Path, store) -> None:
    """lr=1e6 diverges: FAILED in MLflow and in sacct; one array task cancelled while queued: KILLED; the rest runs."""
    sweep = Command(root, "train", "-m", *SLOW, "features.order=2", "trainer.max_epochs=20",
                    "optimizer.lr=0.05,1e6,0.1")
    array = wait_for("the array", lambda: sweep.printed(r"SLURM array (\d+)"), 180, every=0.3)
    subprocess.run(["scancel", f"{array}_2"], check=True, timeout=30)  # two cores: the third job is still queued
    code, out, err = sweep.wait(600)
    assert code == 1, err[-3000:]
    assert "traceback" not in (out + err).lower()
    assert re.search(r"sweep [0-9a-f]{32}: 2 of 3 points did not finish", out)
    assert re.search(r"optimizer.lr=0.1: KILLED \(killed\) — SLURM job \d+_2 CANCELLED", out)
    assert "FAILED (diverged)" in out
    (parent,) = [r for r in all_runs(store) if r.data.tags.get("overfit.kind") == "sweep"]
    status = {k.data.params["optimizer.lr"]: (k.info.status, k.data.tags.get("failure")) for k in
              children(store, parent.info.run_id)}
    assert status == {"0.05": ("FINISHED", None), "1000000.0": ("FAILED", "diverged"), "0.1": ("KILLED", "killed")}
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_points"] == "2"
    assert "report/summary.csv" in {a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    jobs = settled(array)
    assert jobs[f"{array}_0"] == ["COMPLETED"] and jobs[f"{array}_1"] == ["FAILED"]
    assert jobs.get(f"{array}_2", ["CANCELLED"]) == ["CANCELLED"]  # a task cancelled while queued leaves no record


@pytest.mark.timeout(600)
def test_ctrl_c_cancels_the_jobs_and_closes_every_run_killed(slurm: Slurm, root: Path, store) -> None:
    sweep = Command(root, "train", "-m", *SLOW, "features.order=1,2", "trainer.max_epochs=100000")
    parent_id = wait_for("the parent", lambda: sweep.printed(r"sweep parent run ([0-9a-f]{32})"), 120)
    wait_for("both points training", lambda: len([k for k in children(store, parent_id) if k.info.status == "RUNNING"
                                                  and steps(store, k.info.run_id)]) == 2, 300)
    sweep.proc.send_signal(signal.SIGINT)
    code, out, err = sweep.wait(120)
    assert code == 130
    (line,) = err.strip().splitlines()  # one line, the jobs cancelled and their runs closed before it
    assert line.startswith("overfit: interrupted by SIGINT"), err
    assert "traceback" not in (out + err).lower()
    parent = store.get_run(parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags["slurm.state"] == "cancelled"
    assert "report/summary.csv" in {a.path for a in store.list_artifacts(parent_id, "report")}
    kids = children(store, parent_id)
    assert [k.info.status for k in kids] == ["KILLED", "KILLED"]
    assert all((Path(k.data.tags["overfit.checkpoint"]) / "last.ckpt").is_file() for k in kids)  # resumable
    assert all(s == ["CANCELLED"] for s in settled(*arrays(parent)).values())


@pytest.mark.timeout(300)
def test_a_detached_sweep_is_scheduled_and_cancelled_without_a_terminal(slurm: Slurm, root: Path, store) -> None:
    start = time.monotonic()
    code, out, err = run(root, "train", "-m", "features=polynomial", "features.order=1,2,3", "--detach",
                         "--begin", "now+600")
    assert code == 0, err[-3000:]
    assert time.monotonic() - start < 60  # (the machine may be busy: validation and imports take seconds)
    parent_id = re.search(r"sweep run ([0-9a-f]{32}) SCHEDULED: SLURM driver job (\d+), begins now\+600", out)
    assert parent_id, out
    parent = store.get_run(parent_id[1])
    assert parent.info.status == "SCHEDULED"
    assert parent.data.tags["slurm.driver_job_id"] == parent_id[2] and parent.data.tags["slurm.begin"] == "now+600"
    assert parent.data.tags["launcher"] == "slurm" and Path(parent.data.tags["sweep_dir"]).is_absolute()

    code, out, err = run(root, "sweep", "status", parent_id[1])
    assert code == 0, err
    assert f"driver job {parent_id[2]} PENDING" in out
    assert [line.split()[:2] for line in out.splitlines()[1:4]] == [[f"features.order={o}", "pending"]
                                                                   for o in (1, 2, 3)]
    code, out, err = run(root, "sweep", "cancel", parent_id[1])
    assert code == 0, err
    assert store.get_run(parent_id[1]).info.status == "KILLED"
    assert settled(parent_id[2])[parent_id[2]] == ["CANCELLED"]


@pytest.mark.timeout(900)
def test_a_detached_scheduled_pipeline_finishes_without_a_terminal(slurm: Slurm, root: Path, store, capsys) -> None:
    start = time.monotonic()
    command = Command(root, "pipeline", "run", "pipelines/polynomial_order.yaml", "--detach", "--begin", "now+60",
                      cwd=CHECKOUT)  # as typed in the checkout; everything it writes goes under OVERFIT_ROOT
    code, out, err = command.wait(120)
    assert code == 0, err[-3000:]
    assert time.monotonic() - start < 60  # returns once submitted (imports and validation take seconds)
    found = re.search(r"pipeline run ([0-9a-f]{32}) SCHEDULED: SLURM driver job (\d+), begins now\+60", out)
    assert found, out
    run_id, driver = found[1], found[2]
    assert store.get_run(run_id).info.status == "SCHEDULED"

    seen: list[str] = []  # the orders stage's points, as `overfit sweep status` shows them over time

    def status() -> str:
        code, out, err = run_cli(capsys, "sweep", "status", run_id)
        assert code == 0, err
        states = {word for line in out.splitlines() if line.strip().startswith("features.order=")
                  for word in line.split() if word in ("pending", "running", "finished", "failed", "killed")}
        if len(states) == 1 and (not seen or seen[-1] != next(iter(states))):
            seen.append(next(iter(states)))
        return out

    first = status()
    assert f"driver job {driver} PENDING" in first and "stage orders (sweep): not started" in first
    assert first.count("pending") >= 12  # the planned points of the stage, before anything runs
    wait_for("the pipeline to end", lambda: status() and store.get_run(run_id).info.status not in ("SCHEDULED",
                                                                                                  "RUNNING"), 600, 2)
    assert seen == ["pending", "running", "finished"]
    pipeline = store.get_run(run_id)
    assert pipeline.info.status == "FINISHED" and pipeline.data.tags["failed_points"] == "0"
    assert "report/report.html" in {a.path for a in store.list_artifacts(run_id, "report")}
    assert settled(driver)[driver] == ["COMPLETED"]


@pytest.mark.timeout(300)
def test_reap_closes_runs_whose_slurm_job_ended_from_any_host(slurm: Slurm, root: Path, store) -> None:
    def job(command: str) -> str:
        return subprocess.run(["sbatch", "--parsable", f"--output={root}/reap-%j.out", "--wrap", command],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    ended, alive = job("true"), job("sleep 120")
    settled(ended)
    experiment = store.create_experiment("reap")
    tags = {"host": "compute-node-7", "pid": "12345"}  # another host: its pid cannot be checked from here
    gone = store.create_run(experiment, tags={**tags, "slurm.job_id": ended}).info.run_id
    running = store.create_run(experiment, tags={**tags, "slurm.job_id": alive}).info.run_id
    unknown = store.create_run(experiment, tags=tags).info.run_id
    try:
        code, out, err = run(root, "runs", "reap")
    finally:
        subprocess.run(["scancel", alive], timeout=30, check=False)
    assert code == 0, err
    assert "marked 1 run(s) KILLED" in out
    assert store.get_run(gone).info.status == "KILLED"
    assert f"SLURM job {ended} (COMPLETED)" in store.get_run(gone).data.tags["failure.reason"]
    assert store.get_run(running).info.status == "RUNNING" and store.get_run(unknown).info.status == "RUNNING"


@pytest.mark.timeout(600)
def test_a_slurm_sweep_logs_to_the_postgres_tracking_server(slurm: Slurm, mlflow_server: MlflowServer, root: Path,
                                                            store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    experiment, epochs = f"server-{uuid.uuid4().hex[:8]}", 25
    code, out, err = run(root, "train", "-m", "hydra/launcher=slurm", "features=polynomial",
                         "features.order=1,2,3,4", f"trainer.max_epochs={epochs}", f"experiment_name={experiment}")
    assert code == 0, err[-3000:]
    assert store.get_experiment_by_name(experiment) is None  # nothing went to the project's SQLite store
    client = MlflowClient(mlflow_server.tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    found = client.search_runs([experiment_id], max_results=100)
    (parent,) = [r for r in found if r.data.tags.get("overfit.kind") == "sweep"]
    kids = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 4 and all(k.info.status == "FINISHED" for k in kids)
    per_epoch = [k for k in kids[0].data.metrics if not k.startswith("test/") and k != "generalization_gap"]
    assert {"train/loss", "val/loss", "train/error", "val/error"} <= set(per_epoch)
    for kid in kids:
        for key in per_epoch:
            assert steps(client, kid.info.run_id, key) == list(range(1, epochs + 1)), (kid.info.run_name, key)
        assert math.isfinite(kid.data.metrics["test/error"])
        assert {"config.yaml", "images"} <= {a.path for a in client.list_artifacts(kid.info.run_id)}
    assert parent.data.tags["points"] == "4" and "Best by validation error" in parent.data.tags["mlflow.note.content"]
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/summary.csv", "report/summary.md", "report/curves_features_order.png"} <= report
