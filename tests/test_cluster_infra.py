"""Smoke tests of the cluster infrastructure itself: local SLURM and the PostgreSQL-backed MLflow server.

They start the services through scripts/ (see tests/cluster.py) and check the
two things every cluster test builds on: submitit gets a result back from SLURM
with accounting telling the truth, and an MLflow client can write and read runs,
metrics and artifacts through the tracking server.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
import submitit
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from cluster import MlflowServer, Slurm, mlflow_server, slurm  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.slow


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.strip()


@pytest.mark.timeout(180)
def test_submitit_runs_a_function_on_local_slurm(slurm: Slurm, tmp_path: Path) -> None:
    def where_am_i(x: int) -> tuple[int, str]:
        # Defined here so cloudpickle ships it by value: the job cannot import test modules.
        import os

        return 2 * x, os.environ.get("SLURM_JOB_ID", "")

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition=slurm.partition, timeout_min=2, cpus_per_task=1)
    job = executor.submit(where_am_i, 21)

    value, job_id_inside = job.result()
    assert value == 42
    assert job_id_inside == job.job_id  # it ran as that SLURM job, not in this process

    # The job's final state reaches the accounting database a moment after its result file.
    deadline = time.monotonic() + 30
    while (state := _sacct_state(job.job_id)) != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "COMPLETED"


@pytest.mark.timeout(180)
def test_mlflow_server_on_postgres_round_trip(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment_id = client.create_experiment(f"cluster-infra-{uuid.uuid4().hex[:8]}")
    try:
        run = client.create_run(experiment_id, run_name="features.order=3")
        run_id = run.info.run_id
        # Artifacts go through the server (--serve-artifacts), not to a path on this machine.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")

        now = int(time.time() * 1000)
        metrics = [Metric("train/loss", 1.0 / (step + 1), now + step, step) for step in range(100)]
        client.log_batch(run_id, metrics=metrics, params=[Param("features.order", "3")])
        curve = tmp_path / "curve.csv"
        curve.write_text("x,y\n2,3\n4,4\n")
        client.log_artifact(run_id, str(curve))
        client.set_terminated(run_id)

        history = sorted(client.get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(100))
        assert [m.value for m in history] == pytest.approx([1.0 / (s + 1) for s in range(100)])

        finished = client.get_run(run_id)
        assert finished.info.status == "FINISHED"
        assert finished.data.params == {"features.order": "3"}
        assert finished.data.metrics["train/loss"] == pytest.approx(1.0 / 100)

        assert [f.path for f in client.list_artifacts(run_id)] == ["curve.csv"]
        local = client.download_artifacts(run_id, "curve.csv", str(tmp_path / "back"))
        assert Path(local).read_text() == curve.read_text()
    finally:
        # A developer's long-running server should not collect smoke-test experiments.
        client.delete_experiment(experiment_id)
