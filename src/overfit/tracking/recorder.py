"""Ending trained points' runs from plain data, in worker processes when there are many.

A vectorized group trains a hundred points in seconds; ending each one's run (its config
files, its picture as PNG and MLflow image, its status) costs store and image work that
would dominate the sweep. A :class:`Record` holds what one run still needs as plain data
(its metrics went to the store while it trained), so :class:`Recorder` can hand records
to a pool of processes — one per core — that import only MLflow and Pillow, never torch.
Writing a record again (after a kill) writes the same things: it is idempotent. Workers
watch their parent and leave when it is gone, so none outlives its sweep.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from overfit.tracking import models, runs
from overfit.tracking.pointfile import PointResult
from overfit.tracking.store import CLOSE_SECONDS, open_store

if TYPE_CHECKING:
    import numpy as np

    from overfit.interrupts import Signals

POOL_FROM = 24  # below this many records a pool's start-up (a second or two per process) is not worth it


@dataclass
class Record:
    """What one trained point's run still needs: files, pictures, its ending.

    ``pictures``: (image key, RGB pixels, step, also a ``<key>.png`` file for reports) each.
    """

    uri: str
    deadline: float
    files: dict[str, str | bytes]
    pictures: list[tuple[str, np.ndarray, int, bool]]
    result: PointResult
    job_dir: str
    inputs: list[dict[str, str]] = field(default_factory=list)  # its datasets (overfit.tracking.models)
    log_model: bool = False  # its LoggedModel now, from the files' model/ (tracking.log_model=all)


def record(rec: Record) -> PointResult:
    """Write one run's files and picture, end it with its status, then its job's point.json."""
    store = open_store(rec.uri)
    store.deadline = rec.deadline
    result = rec.result
    files = dict(rec.files)
    for key, rgb, _, as_file in rec.pictures:
        if as_file:
            from PIL import Image

            png = io.BytesIO()
            Image.fromarray(rgb).save(png, format="png")
            files[f"{key}.png"] = png.getvalue()
    if files:
        runs.log_files(store, result.run_id, files)
    for key, rgb, step, _ in rec.pictures:
        store.call("log_image", result.run_id, rgb, key=key, step=step)
    models.log_inputs(store, result.run_id, rec.inputs)
    if rec.log_model:
        models.log_model(store, result.run_id, files)
    runs.end(store, result.run_id, result.status, result.failure or None, result.reason or None)
    result.save(Path(rec.job_dir))
    return result


def _watch(parent: int) -> None:
    """Leave as soon as the process that started this worker is gone (a kill -9 of the sweep)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start(uri: str, parent: int) -> None:
    """A worker's start: its parent watched, MLflow imported and the store opened while the group trains;
    MLflow's per-write chatter is the parent's business, not the terminal's."""
    import logging
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C reaches the whole group: the parent decides, not us
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="overfit-watch-parent").start()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    open_store(uri).client


def _ready() -> None:
    """A task that only makes the pool start a worker (Python starts them on demand)."""


class Recorder:
    """Records runs: inline, or in one process per core for a large batch.

    Create it before the work whose results it records: its workers start meanwhile.
    """

    def __init__(self, expected: int, uri: str) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(cores, 4)
        self.pool = (ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(uri, os.getpid()))
                     if expected >= POOL_FROM and cores > 1 else None)
        if self.pool is not None:
            for _ in range(workers):
                self.pool.submit(_ready)

    def record_all(self, records: list[Record], signals: Signals) -> list[PointResult | None]:
        """Each record written, in order; after a signal, what is not written yet is None (the caller closes it)."""
        if self.pool is None:
            return [None if signals.received is not None else record(rec) for rec in records]
        futures: list[Future[PointResult]] = [self.pool.submit(record, rec) for rec in records]
        while not all(f.done() for f in futures) and signals.received is None:
            wait(futures, timeout=0.2)
        if signals.received is not None:
            for f in futures:
                f.cancel()
            # The ones in flight end their runs, the rest never start; a worker that died with them (a signal
            # to the whole process group) never answers, so the wait is bounded: the caller closes the rest.
            wait(futures, timeout=CLOSE_SECONDS)
            return [f.result() if f.done() and not f.cancelled() and f.exception() is None else None
                    for f in futures]
        return [f.result() for f in futures]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)
