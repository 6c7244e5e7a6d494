"""Metric points on their way to the store: buffered per run, sent by a background thread.

Training hands each evaluated epoch's values to :meth:`MetricWriter.add` and moves on: a
thread sends them with ``log_batch`` (MLflow's limit of a thousand points a call) every
``every`` seconds. While the store is locked or away, a send keeps its points and the
thread backs off; training never waits on the store. An outage that outlasts the store's
deadline makes the store gone (:class:`~overfit.tracking.store.Store`): :meth:`check`
raises it in the training thread at the next epoch end, a bounded failure.

``logged`` holds the last step of each key the store already has, so a resumed run sends
only later steps; :meth:`pending` (the points not sent yet) travels in a checkpoint and
:meth:`restore` brings it back, so history continues without gaps or duplicate steps.
:meth:`take` hands a finished run's unsent points to whoever ends the run (a vectorized
group's writer processes send them with :func:`send`, in parallel, before the run's end).

The writer also keeps the learning curve (:data:`CURVE_KEYS` per step) of each run it
sends for, so the run's picture of it needs no read back from the store; :meth:`curve`
reads only what an earlier attempt of a resumed run stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from overfit.tracking.store import Store, StoreError

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch
FLUSH_SECONDS = 5.0
MAX_BACKOFF = 30.0

Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step
CURVE_KEYS = ("train/error", "val/error")  # a run's learning curve: what its picture draws against the epoch


class MetricWriter:
    """Metric points of many runs, sent in batches from one background thread."""

    def __init__(self, store: Store, every: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.every = every
        self._buffers: dict[str, list[Point]] = {}
        self._logged: dict[str, dict[str, int]] = {}
        self._stored: dict[str, dict[str, int]] = {}  # the steps the store had when the run was opened
        self._curves: dict[str, dict[str, dict[int, float]]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sending = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def open_run(self, run_id: str, logged: Mapping[str, int] | None = None) -> None:
        """Start buffering for a run; ``logged``: the last stored step of each key (a reopened run's)."""
        with self._lock:
            self._buffers.setdefault(run_id, [])
            self._logged[run_id] = dict(logged or {})
            self._stored[run_id] = dict(logged or {})
            self._curves.setdefault(run_id, {k: {} for k in CURVE_KEYS})

    def add(self, run_id: str, metrics: Mapping[str, float], step: int, now_ms: int | None = None) -> None:
        """Queue one step's values; steps the store already has are dropped."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            logged = self._logged[run_id]
            self._buffers[run_id] += [(k, float(v), now, step) for k, v in metrics.items() if step > logged.get(k, -1)]
            self._keep(run_id, [(k, float(v), step) for k, v in metrics.items()])
        self._start()

    def _keep(self, run_id: str, points: list[tuple[str, float, int]]) -> None:
        curves = self._curves[run_id]
        for key, value, step in points:
            if key in curves:
                curves[key][step] = value

    def curve(self, run_id: str) -> dict[str, tuple[list[int], list[float]]]:
        """The run's learning curve (steps, values per key of :data:`CURVE_KEYS`): what this process saw, after
        what the store held from an earlier attempt (read only for a resumed run)."""
        with self._lock:
            seen = {k: dict(v) for k, v in self._curves.get(run_id, {}).items()}
            stored = dict(self._stored.get(run_id, {}))
        out = {}
        for key in CURVE_KEYS:
            points = seen.get(key, {})
            if stored.get(key, -1) >= 0 and min(points, default=stored[key] + 1) > 1:
                history = self.store.call("get_metric_history", run_id, key)
                points = {**{m.step: m.value for m in history}, **points}
            steps = sorted(points)
            out[key] = (steps, [points[s] for s in steps])
        return out

    def pending(self, run_id: str) -> list[Point]:
        """The run's points not in the store yet (they travel in the checkpoint)."""
        with self._lock:
            return list(self._buffers.get(run_id, []))

    def restore(self, run_id: str, points: list[Point]) -> None:
        """Points a checkpoint carried, ahead of anything queued since; those the store has are dropped by step."""
        with self._wake:
            self._wake.wait_for(lambda: not self._sending)  # a send in flight deletes from the buffer's front
            logged = self._logged[run_id]
            kept = [(str(k), float(v), int(t), int(s)) for k, v, t, s in points if s > logged.get(k, -1)]
            self._buffers[run_id] = kept + self._buffers[run_id]
            self._keep(run_id, [(k, v, s) for k, v, _, s in kept])

    def take(self, run_ids: list[str]) -> dict[str, list[Point]]:
        """These runs' unsent points, removed from the writer: the caller sends them (:func:`send`)."""
        with self._wake:
            self._wake.wait_for(lambda: not self._sending)
            return {r: self._buffers.pop(r, []) for r in run_ids}

    def check(self) -> None:
        """Raise the store's failure in the caller's thread once the store is gone (past its deadline)."""
        if self.store.gone is not None:
            raise StoreError(str(self.store.gone))

    def flush(self, run_ids: list[str] | None = None, budget: float | None = None) -> None:
        """Send what is queued now (every run, or these), waiting for the store up to ``budget`` (its deadline)."""
        with self._wake:
            while self._sending:  # the thread is mid-send: its points are not in the buffers
                self._wake.wait()
            self._sending = True
        try:
            for run_id in list(self._buffers) if run_ids is None else run_ids:
                self._send(run_id, budget)
        finally:
            with self._wake:
                self._sending = False
                self._wake.notify_all()

    def close(self) -> None:
        """Stop the thread (what is still queued stays queued: flush first to send it)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    # --- the thread ------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="overfit-metrics", daemon=True)
            self._thread.start()

    def _send(self, run_id: str, budget: float | None) -> None:
        """Send one run's buffer in MLflow-sized batches; on failure the unsent points stay, the error propagates."""
        while True:
            with self._lock:
                chunk = self._buffers[run_id][:MAX_BATCH]
            if not chunk:
                return
            send(self.store, run_id, chunk, self.store.deadline if budget is None else budget)
            with self._lock:
                del self._buffers[run_id][: len(chunk)]
                logged = self._logged[run_id]
                for k, _, _, s in chunk:
                    logged[k] = max(s, logged.get(k, -1))

    def _loop(self) -> None:
        """Every ``every`` seconds, one try per run; while the store fails, back off (up to MAX_BACKOFF)."""
        pause = self.every
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._closed, timeout=pause)
                if self._closed or self.store.gone is not None:
                    return
                if self._sending:
                    continue
                self._sending = True
            try:
                for run_id in list(self._buffers):
                    self._send(run_id, 0.0)
                pause = self.every
            except StoreError:  # busy or away: the points wait for the next try, at the latest when the
                # outage reaches the store's deadline (that try makes the store gone: training stops on time)
                left = self.store.outage_left()
                pause = min(pause * 2, max(MAX_BACKOFF, self.every), *([max(left, 0.1)] if left is not None else []))
            finally:
                with self._wake:
                    self._sending = False
                    self._wake.notify_all()


def send(store: Store, run_id: str, points: list[Point], budget: float) -> None:
    """Points to the run in MLflow-sized batches, in order. Sending them again is harmless: the store keeps
    one row per (key, value, timestamp, step), and a point keeps its timestamp."""
    from mlflow.entities import Metric

    for start in range(0, len(points), MAX_BATCH):
        metrics = [Metric(key=k, value=v, timestamp=t, step=s) for k, v, t, s in points[start:start + MAX_BATCH]]
        store.call_within(budget, "log_batch", run_id, metrics=metrics)
