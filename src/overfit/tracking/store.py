"""The MLflow store: one URI, set up once under a file lock, reached with bounded patience.

Every process that records runs goes through :class:`Store`:

- the URI is ``tracking.uri`` → ``$MLFLOW_TRACKING_URI`` → the project's SQLite file,
  and a relative SQLite path is anchored at the project root (a job's working
  directory never matters);
- a fresh SQLite store is created and migrated, and experiments are created, under
  a file lock, so any number of independent processes may start together;
- an HTTP store is probed first with a short timeout, and MLflow's own request
  timeout and retries are bounded, so a server that is down or mute is one line
  within seconds, not a hang;
- transient failures (a locked SQLite file, a server restarting) are retried
  with backoff; an outage longer than the deadline (``tracking.retry_seconds``) is the
  end: the store is *gone* and every later call fails at once (:meth:`Store.attempt`);
- a file that is not an MLflow database, or a read-only one, is one line naming it.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from overfit import paths

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

PROBE_SECONDS = 5.0  # a tracking server that does not answer /health within this is down
HTTP_TIMEOUT = "5"  # seconds per MLflow request (MLflow's default: 120)
HTTP_RETRIES = "0"  # MLflow's own retries back off for minutes; :func:`retry` backs off, within the deadline
RETRY_SECONDS = 120.0  # the default outage deadline (tracking.retry_seconds): then the store is gone
CLOSE_SECONDS = 5.0  # how long closing runs may wait on a failing store after a signal
# MLflow logs a full traceback for every locked SQLite write it gives up on; retries are ours to report.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


EXPERIMENT_KIND = "custom_model_development"  # MLflow's UI opens it on runs and models, not on GenAI traces


def experiment_tags(name: str) -> dict[str, str]:
    """What a new experiment says about itself in the UI: its kind, and a description of what it holds."""
    return {"mlflow.experimentKind": EXPERIMENT_KIND, "mlflow.note.content": (
        f"**{name}**: overfit's generalization runs. A sweep is a parent run (its description holds the "
        "winner, the table and the report) with one child per point and seed; a pipeline run holds its "
        "stages' sweeps. To compare points, filter `tags.overfit.kind = 'point'` and sort by `val/error`; "
        "group by the tag `point` to see replicates as one row (mean ± spread in the charts). "
        "Parents carry their own metrics (`best/…`, `one_se/…`), never the points' keys.")}


class StoreError(BaseException):
    """The store cannot be used: unreachable, not an MLflow store, read-only. One line for the user.

    A BaseException, like a signal: no handler of a single point's failure may swallow it, because
    nothing can be recorded any more, so a sweep stops launching points instead of failing each one.
    """


def resolve_uri(configured: str | None = None) -> str:
    """``configured`` → ``$MLFLOW_TRACKING_URI`` → the project store; relative SQLite paths made absolute."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{paths.resolve(uri.removeprefix('sqlite:///'))}"
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def artifact_root(uri: str, experiment_name: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite database, else the server's choice."""
    db = sqlite_file(uri)
    return None if db is None else (db.parent / "artifacts" / experiment_name).as_uri()


SQLITE_BUSY, SQLITE_LOCKED = 5, 6  # sqlite3 result codes: another connection holds the file
# MLflow's error codes for a server that is busy or in trouble (503, 429, and 500/502/504 from it or its proxy).
SERVER_TROUBLE = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR")


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during (MLflow re-raises what requests or SQLAlchemy raised)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def transient(exc: BaseException, http: bool = False) -> bool:
    """A failure worth waiting out, told by its type: a busy SQLite file, a database connection that broke,
    a server that does not answer, broke off a response, or says it is busy (``http``: a tracking server)."""
    import sqlite3

    import requests
    import urllib3
    from mlflow.exceptions import MlflowException
    from sqlalchemy import exc as sa

    network = (ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
               requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError)
    for e in causes(exc):
        if isinstance(e, sqlite3.Error):  # the file's own verdict: busy, or something no wait fixes
            code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
            return code in (SQLITE_BUSY, SQLITE_LOCKED) or (code is None and isinstance(e, sqlite3.OperationalError))
        if isinstance(e, network) or isinstance(e, (sa.DisconnectionError, sa.TimeoutError)):
            return True
        if isinstance(e, sa.OperationalError) and not isinstance(e.orig, sqlite3.Error):
            return True  # another database's connection failed (a server restarting)
    return http and isinstance(exc, MlflowException) and exc.error_code in SERVER_TROUBLE


SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB = 8, 11, 26


def describe(uri: str, exc: BaseException) -> str:
    """One line for a store failure, naming the store and what is wrong with it (the wording, not the handling)."""
    import sqlite3

    text = " ".join(str(exc).split())
    code = next((getattr(e, "sqlite_errorcode", None) for e in causes(exc) if isinstance(e, sqlite3.Error)), None)
    db = sqlite_file(uri)
    if db is not None and not db.exists():
        problem = "was deleted while in use (its database file is gone)"
    elif code == SQLITE_READONLY:
        problem = "is read-only (MLflow must write to it)"
    elif code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        problem = f"is not a usable MLflow database ({text[:160]})"
    elif code in (SQLITE_BUSY, SQLITE_LOCKED):
        problem = "stayed locked past the deadline, tracking.retry_seconds (another process holds it)"
    elif transient(exc, is_http(uri)):
        problem = f"did not answer ({text[:160]})"
    else:
        problem = f"failed: {text[:200]}"
    return f"MLflow store {uri} {problem}"


@contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on the store's directory, held for the block: one process sets the store up.

    The directory itself is locked, so no lock file is left beside the store.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _probe(uri: str) -> None:
    """A tracking server answers ``/health`` within seconds, or the store is down: one line, no hang."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_SECONDS) as response:
            response.read()
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"MLflow tracking server {uri} does not answer ({reason}); start it or point "
                         "tracking.uri / MLFLOW_TRACKING_URI at a running one") from exc


class Store:
    """One MLflow store for this process: its client, its experiments, bounded retries.

    Every call is retried with exponential backoff while the store fails transiently. An outage
    (failures with no success in between) that outlasts ``deadline`` seconds makes the store *gone*:
    that call and every later one raise :class:`StoreError` at once, so a process never spends more
    than the deadline on a store that does not come back.
    """

    def __init__(self, uri: str, deadline: float = RETRY_SECONDS) -> None:
        self.uri = uri
        self.deadline = deadline
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}
        self._failing_since: float | None = None  # when the current outage began (monotonic)
        self._hurry_until = math.inf  # after a signal: no wait for the store goes past this (monotonic)
        self._hurry_because: BaseException | None = None
        self.gone: StoreError | None = None

    def outage_left(self) -> float | None:
        """Seconds until the current outage makes the store gone (None: it answers): when to try once more."""
        return None if self._failing_since is None else self._failing_since + self.deadline - time.monotonic()

    def attempt(self, call: Callable[[], T], budget: float | None = None) -> T:
        """``call()``, retried with backoff for ``budget`` seconds (default: until the outage's deadline; 0: one try).

        A permanent failure, or a transient one past the budget, is a :class:`StoreError`.
        """
        if self.gone is not None:
            raise StoreError(str(self.gone))
        # Without a budget a call waits for the outage's deadline; with one, at most that long.
        until = self._hurry_until if budget is None else min(time.monotonic() + budget, self._hurry_until)
        pause = 0.5
        while True:
            try:
                value = call()
            except StoreError:
                raise
            except Exception as exc:  # MLflow raises MlflowException, SQLAlchemy and requests errors alike
                now = time.monotonic()
                if not transient(exc, is_http(self.uri)):
                    raise StoreError(describe(self.uri, exc)) from exc
                if self._failing_since is None:
                    self._failing_since = now
                    print(f"[overfit] MLflow store {self.uri} is busy or away; retrying for up to "
                          f"{self.deadline:g} s (tracking.retry_seconds)", file=sys.stderr, flush=True)
                outage_end = self._failing_since + self.deadline
                if now >= outage_end:
                    self.gone = StoreError(f"{describe(self.uri, exc)}; gave up after {self.deadline:g} s "
                                           "(tracking.retry_seconds)")
                    raise self.gone from exc
                until = min(until, self._hurry_until)  # a signal may have come meanwhile
                if now >= until and until == self._hurry_until and self._hurry_because is not None:
                    because, self._hurry_because = self._hurry_because, None
                    raise because from exc
                if now >= until:
                    raise StoreError(f"{describe(self.uri, exc)} (for {now - self._failing_since:.0f} s)") from exc
                self._nap(min(pause, outage_end - now, until - now))
                pause = min(pause * 2, 10.0)
                continue
            self._failing_since = None
            return value

    @property
    def client(self) -> MlflowClient:
        """The client, the store created or migrated on first use (under the lock for SQLite)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a report reads many: no bars
            if is_http(self.uri):
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT)
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
                _probe(self.uri)
            db = sqlite_file(self.uri)
            # Constructing the client opens MLflow's store, which creates or migrates the database: for
            # SQLite, one process at a time, so processes started together on a fresh store never race.
            with _dir_lock(db.parent) if db is not None else _no_lock():
                client = self.attempt(lambda: MlflowClient(self.uri))
                self.attempt(client.search_experiments)
            self._client = client
        return self._client

    def exists(self) -> bool:
        """Whether there is a store to read: a SQLite file not yet created holds nothing (a server always may)."""
        db = sqlite_file(self.uri)
        return db is None or db.exists()

    def experiment(self, name: str) -> str:
        """The experiment's id, created (artifacts beside a SQLite store) by whichever process comes first."""
        if name not in self._experiments:
            self._experiments[name] = self.attempt(lambda: self._get_or_create(name))
        return self._experiments[name]

    def find_experiment(self, name: str) -> str | None:
        """The experiment's id if it exists; never creates anything."""
        if name in self._experiments:
            return self._experiments[name]
        found = self.attempt(lambda: self.client.get_experiment_by_name(name))
        if found is not None:
            self._experiments[name] = found.experiment_id
        return None if found is None else found.experiment_id

    def _get_or_create(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        db = sqlite_file(self.uri)
        lock = _dir_lock(db.parent) if db is not None else _no_lock()
        with lock:
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            try:
                return self.client.create_experiment(name, artifact_location=artifact_root(self.uri, name),
                                                     tags=experiment_tags(name))
            except MlflowException:  # another client of a server created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

    def _nap(self, seconds: float) -> None:
        """Sleep, in slices, so that a :meth:`hurry` from a signal handler cuts the wait short."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < min(end, self._hurry_until):
            time.sleep(min(0.25, end - now))

    def hurry(self, seconds: float, because: BaseException | None = None) -> None:
        """From now on, wait at most ``seconds`` in all for a failing store: the process is on its way out
        (a signal), and whatever closes its runs shares that time. ``because``: raised by a wait cut short
        by this, instead of a store error (the signal is why the call gave up)."""
        self._hurry_until = min(self._hurry_until, time.monotonic() + seconds)
        self._hurry_because = self._hurry_because or because

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(*args, **kwargs)`` with the store's retries, up to its deadline."""
        return self.attempt(lambda: getattr(self.client, method)(*args, **kwargs))

    def call_within(self, budget: float, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)`` retried for at most ``budget`` seconds (0: one try)."""
        return self.attempt(lambda: getattr(self.client, method)(*args, **kwargs), budget)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


@cache
def open_store(uri: str) -> Store:
    """The process's one :class:`Store` for ``uri`` (each sweep job in a process reuses its connection)."""
    return Store(uri)


def store_for(configured: str | None = None, deadline: float | None = None) -> Store:
    """The store a config's ``tracking.uri`` (or the environment, or the default) names.

    ``deadline``: ``tracking.retry_seconds``, how long an outage may last before the store is gone.
    """
    store = open_store(resolve_uri(configured))
    if deadline is not None:
        store.deadline = deadline
    return store
