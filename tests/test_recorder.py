"""Ending runs from records: the last metric points before the end, idempotent, by writers forked ready."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from overfit.interrupts import Signals
from overfit.tracking import recorder
from overfit.tracking.pointfile import PointResult, read_point
from overfit.tracking.recorder import Record, Recorder, Writers


def probe() -> tuple[bool, bool, int, str | None]:
    """What a writer process has: torch, MLflow, its parent, an environment variable set after the server."""
    return "torch" in sys.modules, "mlflow" in sys.modules, os.getppid(), os.environ.get("OVERFIT_PROBE")


def a_record(client: MlflowClient, uri: str, job_dir: Path) -> Record:
    experiment = client.create_experiment("e")
    run_id = client.create_run(experiment).info.run_id
    points = [(key, 1.0 / step, 1_700_000_000_000 + step, step) for step in range(1, 1501)
              for key in ("train/loss", "val/loss")]  # 3,000 points: three of MLflow's batches
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    result = PointResult(run_id, "FINISHED", {"test/error": 0.5})
    return Record(uri, 30.0, {"model/weights.txt": "w"}, [("fit", rgb, 1500)], result, str(job_dir), points)


def test_a_record_sends_its_points_then_ends_the_run_and_writing_it_again_changes_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    rec = a_record(client, uri, tmp_path / "job")
    run_id = rec.result.run_id
    for _ in range(2):  # again, as after a kill between the writes: the same run
        recorder.record(rec)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/loss"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, 1501))  # each step once
    files = {a.path for a in client.list_artifacts(run_id)}
    assert "model" in files and "fit.png" not in files  # the picture once: as MLflow's image
    assert [a.path for a in client.list_artifacts(run_id, "images") if a.path.startswith("images/fit+step+1500+")]
    found = read_point(tmp_path / "job")
    assert found is not None and found.status == "FINISHED"


def test_writers_fork_from_a_server_with_the_starters_environment_and_never_import_torch(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store exists: the writers only open it
    monkeypatch.setenv("OVERFIT_PROBE", str(tmp_path))  # set now: a server started earlier did not see it
    writers = Writers(uri)
    try:
        answers = [writers.pool.submit(probe).result(timeout=120) for _ in range(writers.size)]
        assert all(not torch and mlflow for torch, mlflow, _, _ in answers)
        assert all(parent != os.getpid() for _, _, parent, _ in answers)  # forked by the server, not by us
        assert {seen for _, _, _, seen in answers} == {str(tmp_path)}
        (server,) = {parent for _, _, parent, _ in answers}
        # SLURM's SIGTERM and Ctrl-C's SIGINT reach every process of the group, even a server still importing:
        # it started with both blocked.
        blocked = int(next(ln for ln in Path(f"/proc/{server}/status").read_text().splitlines()
                           if ln.startswith("SigBlk:")).split()[1], 16)
        assert all(blocked >> (signum - 1) & 1 for signum in (signal.SIGTERM, signal.SIGINT))
        os.kill(server, signal.SIGTERM)
        time.sleep(1)
        assert os.waitpid(server, os.WNOHANG) == (0, 0)  # the server stands (we started it: we would reap it)
        assert writers.pool.submit(probe).result(timeout=60)[1]  # and so do its writers: we decide
    finally:
        writers.close()


def test_a_sweeps_writers_serve_its_groups_and_close_with_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    rec = a_record(client, uri, tmp_path / "job")
    with recorder.sweep_writers(uri, recorder.SWEEP_FROM, here=True):
        with Recorder(1, uri) as first, Signals() as signals:  # one record: still the sweep's writers
            assert first.pool is not None
            assert first.record_all(iter([rec]), signals)[0].status == "FINISHED"
        with Recorder(1, uri) as second:  # the next group: the same writers, still open
            assert second.pool is first.pool
            assert second.pool.submit(probe).result(timeout=60)[1]
    with pytest.raises(RuntimeError):  # closed with the sweep
        first.pool.submit(probe)
    assert client.get_run(rec.result.run_id).info.status == "FINISHED"
    with recorder.sweep_writers(uri, recorder.SWEEP_FROM - 1, here=True), Recorder(1, uri) as alone:
        assert alone.pool is None  # a single point: written inline
    with recorder.sweep_writers(uri, recorder.SWEEP_FROM, here=False), Recorder(1, uri) as alone:
        assert alone.pool is None  # the jobs run elsewhere: each starts its own for a large group


def test_work_beside_a_sweep_runs_on_its_writers_and_is_the_callers_without_them(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert recorder.beside(uri, probe) is None  # no sweep running here: the caller does the work
    with recorder.sweep_writers(uri, recorder.SWEEP_FROM, here=True):
        assert recorder.beside(f"sqlite:///{tmp_path / 'other.db'}", probe) is None  # not this sweep's store
        work = recorder.beside(uri, probe)
        assert work is not None
        torch, mlflow, parent, _ = work.result(timeout=120)
        assert mlflow and not torch and parent != os.getpid()  # a writer did it
