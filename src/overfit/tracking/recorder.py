"""Ending trained points' runs from plain data, in writer processes when there are many.

A vectorized group trains a hundred points in seconds; ending each one's run (the metric
points not sent yet, its config files, its pictures, its status) costs store and image work
that would dominate the sweep. A :class:`Record` holds what one run still needs as plain
data, so :class:`Recorder` can hand records to :class:`Writers`: one process per core (up to
four), forked from a server that imported MLflow once, each with the store open, never
touching torch. A sweep whose jobs run in its own process starts them with the sweep
(:func:`sweep_writers`), so they are ready when its first group ends and serve every group.
Writing a record again (after a kill) writes the same things: it is idempotent. Writers
watch the process that started them and leave when it is gone, so none outlives its sweep.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from overfit.tracking import models, runs
from overfit.tracking.pointfile import PointResult
from overfit.tracking.store import CLOSE_SECONDS, open_store
from overfit.tracking.writer import Point, send

if TYPE_CHECKING:
    import numpy as np

    from overfit.interrupts import Signals

T = TypeVar("T")

POOL_FROM = 24  # below this many records, a group's own writer processes are not worth starting
SWEEP_FROM = 2  # a sweep of this many points starts its writers with it: they start on the other cores
# What the fork server imports once, so that every writer forked from it starts with it imported.
PRELOAD = ["mlflow", "mlflow.tracking", "PIL.Image", "overfit.tracking.recorder"]


@dataclass
class Record:
    """What one trained point's run still needs: metric points, files, pictures, its ending.

    ``metrics``: the points training queued and did not send (sent first: the run ends after its history);
    ``pictures``: (image key, RGB pixels, step) each.
    """

    uri: str
    deadline: float
    files: dict[str, str | bytes]
    pictures: list[tuple[str, np.ndarray, int]]
    result: PointResult
    job_dir: str
    metrics: list[Point] = field(default_factory=list)
    inputs: list[dict[str, str]] = field(default_factory=list)  # its datasets (overfit.tracking.models)
    log_model: bool = False  # its LoggedModel now, from the files' model/ (tracking.log_model=all)


def record(rec: Record) -> PointResult:
    """Send one run's last metric points, write its files and pictures, end it with its status, then its
    job's point.json."""
    store = open_store(rec.uri)
    store.deadline = rec.deadline
    result = rec.result
    send(store, result.run_id, rec.metrics, rec.deadline)
    if rec.files:
        runs.log_files(store, result.run_id, rec.files)
    for key, rgb, step in rec.pictures:
        store.call("log_image", result.run_id, rgb, key=key, step=step)
    models.log_inputs(store, result.run_id, rec.inputs)
    if rec.log_model:
        models.log_model(store, result.run_id, rec.files)
    runs.end(store, result.run_id, result.status, result.failure or None, result.reason or None)
    result.save(Path(rec.job_dir))
    return result


def _watch(starter: int) -> None:
    """Leave as soon as the process that started this writer has ended (a kill -9 of the sweep), even while
    nobody has reaped it yet. Not the parent: that is the fork server."""
    try:
        handle = os.pidfd_open(starter)  # Linux: readable once the starter has ended
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # elsewhere: ask every half second
        while True:
            try:
                os.kill(starter, 0)
            except ProcessLookupError:
                os._exit(1)
            time.sleep(0.5)
    select.select([handle], [], [])
    os._exit(1)


def _start(uri: str, starter: int, env: dict[str, str], cwd: str) -> None:
    """A writer's start: the starter's environment and folder (the fork server has its own, from when it
    started), the starter watched, the store opened while the group trains; MLflow's per-write chatter is
    the starter's business, not the terminal's."""
    import logging

    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C reaches the whole group: the starter decides, not us
        signal.signal(signum, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    threading.Thread(target=_watch, args=(starter,), daemon=True, name="overfit-watch-starter").start()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    open_store(uri).client


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _ready() -> None:
    """A task that only makes the pool start a writer (Python starts them on demand)."""


class Writers:
    """Writer processes for one store: one per core, up to four, forked from a server that imported MLflow."""

    def __init__(self, uri: str) -> None:
        self.uri, self.size = uri, min(_cores(), 4)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        self._pool = ProcessPoolExecutor(max_workers=self.size, mp_context=context, initializer=_start,
                                         initargs=(uri, os.getpid(), dict(os.environ), os.getcwd()))
        self._started: list[Future[None]] = []
        self._starter = threading.Thread(target=self._start_all, name="overfit-start-writers", daemon=True)
        self._starter.start()

    def _start_all(self) -> None:
        """The server and the writers started from a thread of their own. Starting them takes the second in which
        the server imports MLflow, and the sweep imports PyTorch meanwhile instead of waiting.

        SIGTERM and SIGINT are blocked in this thread, so the server and the writers keep them blocked. SLURM,
        `kill -- -PGID` and Ctrl-C signal every process of the job, and a server that died of it would break the
        pool mid-write, or print its traceback while it imports. The sweep's own process decides what a signal
        means, and the server leaves when that process has gone.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        self._started = [self._pool.submit(_ready) for _ in range(self.size)]

    @property
    def pool(self) -> ProcessPoolExecutor:
        """The writers, once they are being started (any process the pool adds later is forked the same way)."""
        self._starter.join()
        return self._pool

    def close(self, wait: bool = True) -> None:
        """Closed when the sweep ends; at once after a signal or an error, once the writers being started have
        started: a writer that unpacks its start after this process has gone fails, loudly, on every terminal."""
        self._starter.join(CLOSE_SECONDS)
        if not wait:
            concurrent.futures.wait(self._started, timeout=CLOSE_SECONDS)
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


_sweep: Writers | None = None  # the writers of the sweep this process runs (sweep_writers)


@contextmanager
def sweep_writers(uri: str, points: int, here: bool) -> Iterator[None]:
    """Writers started now for a sweep of ``points`` whose jobs run ``here`` (in this process), serving each
    of its groups; closed when the sweep ends (at once, after a signal or an error)."""
    global _sweep
    if not here or points < SWEEP_FROM or _cores() < 2 or _sweep is not None:
        yield
        return
    _sweep = Writers(uri)
    try:
        yield
    except BaseException:
        _sweep.close(wait=False)
        raise
    else:
        _sweep.close()
    finally:
        _sweep = None


def beside(uri: str, work: Callable[..., T], *args: Any) -> Future[T] | None:
    """``work(*args)`` on a writer of the sweep running in this process, while this process goes on; None when
    it has none for ``uri`` (the caller does the work itself)."""
    if _sweep is None or _sweep.uri != uri:
        return None
    return _sweep.pool.submit(work, *args)


class Recorder:
    """Records runs: inline, or by writer processes for a large batch (the sweep's, or its own).

    Create it before the work whose results it records: its own writers start meanwhile.
    """

    def __init__(self, expected: int, uri: str) -> None:
        shared = _sweep if _sweep is not None and _sweep.uri == uri else None
        self.writers = None if shared else Writers(uri) if expected >= POOL_FROM and _cores() > 1 else None
        self.serving = shared or self.writers

    @property
    def pool(self) -> ProcessPoolExecutor | None:
        """The writers' pool (None: records are written here, inline)."""
        return self.serving.pool if self.serving is not None else None

    def record_all(self, records: Iterable[Record], signals: Signals) -> list[PointResult | None]:
        """Each record written, in order, each handed on as it comes; after a signal, what is not written yet
        is None, and records not taken yet are left out (the caller closes both)."""
        pool = self.pool
        if pool is None:
            out: list[PointResult | None] = []
            for rec in records:
                if signals.received is not None:
                    break
                out.append(record(rec))
            return out
        futures: list[Future[PointResult]] = []
        for rec in records:
            if signals.received is not None:
                break
            futures.append(pool.submit(record, rec))
        while not all(f.done() for f in futures) and signals.received is None:
            wait(futures, timeout=0.2)
        if signals.received is not None:
            for f in futures:
                f.cancel()
            # The ones in flight end their runs, the rest never start; a writer that died with them (a signal
            # to the whole process group) never answers, so the wait is bounded: the caller closes the rest.
            wait(futures, timeout=CLOSE_SECONDS)
            return [f.result() if f.done() and not f.cancelled() and f.exception() is None else None
                    for f in futures]
        return [f.result() for f in futures]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writers is not None:
            self.writers.close(wait=exc[0] is None)
