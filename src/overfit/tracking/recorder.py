"""Recording finished points into MLflow from plain data, in worker processes when there are many.

A vectorized group trains a hundred points in seconds; writing each one's run (params,
a few hundred metric points, config files, its picture, its status) costs a tenth of a
second of store and image work, which would dominate the sweep. A :class:`Record` holds
everything one run needs as plain data, so :class:`Recorder` can hand records to a pool
of processes — one per core — that import only MLflow and Pillow, never torch.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from overfit.tracking import runs
from overfit.tracking.pointfile import PointResult
from overfit.tracking.store import open_store

if TYPE_CHECKING:
    import numpy as np

POOL_FROM = 24  # below this many records a pool's start-up (a second or two per process) is not worth it


@dataclass
class Record:
    """One point's run as it ends. ``run_id`` None: the run is created here, dated from ``start_ms``."""

    uri: str
    experiment_id: str
    run_id: str | None
    name: str
    tags: dict[str, str]
    parent: str | None
    start_ms: int
    params: list[tuple[str, str]]
    metrics: list[tuple[str, float, int, int]]  # key, value, timestamp (ms), step
    files: dict[str, str | bytes]
    picture: tuple[str, np.ndarray, int] | None  # image key, RGB pixels, step
    result: PointResult
    job_dir: str


def record(rec: Record) -> PointResult:
    """Write one run: create it if needed, params and metrics in batches, files, picture, status; then point.json."""
    from mlflow.entities import Metric, Param

    store = open_store(rec.uri)
    result = rec.result
    if rec.run_id is None:
        result.run_id = runs.create(store, rec.experiment_id, "point", rec.name, rec.tags, rec.parent,
                                    start_ms=rec.start_ms)
    params = [Param(k, v) for k, v in rec.params]
    metrics = [Metric(k, v, t, s) for k, v, t, s in rec.metrics]
    batches = max(-(-len(metrics) // 1000), -(-len(params) // 100), 1)  # MLflow's limits per log_batch
    for b in range(batches):
        store.call("log_batch", result.run_id, metrics=metrics[b * 1000:(b + 1) * 1000],
                   params=params[b * 100:(b + 1) * 100])
    files = dict(rec.files)
    if rec.picture is not None:
        from PIL import Image

        key, rgb, step = rec.picture
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, format="png")
        files[f"{key}.png"] = png.getvalue()
    if files:
        runs.log_files(store, result.run_id, files)
    if rec.picture is not None:
        store.call("log_image", result.run_id, rec.picture[1], key=rec.picture[0], step=rec.picture[2])
    runs.end(store, result.run_id, result.status, result.failure or None, result.reason or None)
    result.save(Path(rec.job_dir))
    return result


def _start(uri: str) -> None:
    """A worker's start: MLflow imported and the store opened (seconds) while the group still trains;
    MLflow's per-write chatter is the parent's business, not the terminal's."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    open_store(uri).client


def _ready() -> None:
    """A task that only makes the pool start a worker (Python starts them on demand)."""


class Recorder:
    """Records runs in order of submission: inline, or in one process per core for a large batch.

    Create it before the work whose results it records: its workers start meanwhile.
    """

    def __init__(self, expected: int, uri: str) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cores, 4)
        self.pool = (ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(uri,))
                     if expected >= POOL_FROM and cores > 1 else None)
        if self.pool is not None:
            for _ in range(workers):
                self.pool.submit(_ready)
        self.pending: list[Future[PointResult] | PointResult] = []

    def submit(self, rec: Record) -> None:
        self.pending.append(self.pool.submit(record, rec) if self.pool is not None else record(rec))

    def results(self) -> list[PointResult]:
        """Every record's result, once all are written (a failure in a worker is raised here)."""
        return [p.result() if isinstance(p, Future) else p for p in self.pending]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
