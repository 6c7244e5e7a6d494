"""Session fixtures for the cluster path: a local SLURM and a PostgreSQL-backed MLflow server.

A slow test module asks for them by importing them (a fixture imported into a
test module is a fixture of that module; conftest.py stays as it is)::

    from cluster import mlflow_server, slurm  # noqa: F401  (pytest fixtures)

Each fixture drives the project's own script (``scripts/slurm-local``,
``scripts/mlflow-server``): a service that is already up is reused and left up;
otherwise the fixture starts it and stops it at the end of the session. Without
the Debian packages (``scripts/install-cluster-deps``) the tests skip; with them
installed, a service that does not start fails the tests with the script's message.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# The daemons live in sbin, which a non-login shell may not have on PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_SLURM_BINARIES = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")


@dataclass(frozen=True)
class Slurm:
    """A running local SLURM: ``env`` is what client commands need (set for the session)."""

    partition: str = "debug"
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: point ``MlflowClient`` or ``MLFLOW_TRACKING_URI`` at ``tracking_uri``."""

    tracking_uri: str

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}


def _script(name: str, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # stdin closed and output captured: the daemons the script leaves behind must not
    # hold pytest's terminal (the scripts detach them and redirect their output).
    return subprocess.run(
        [str(SCRIPTS / name), action],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _exports(stdout: str) -> dict[str, str]:
    """The ``NAME=value`` lines a script prints on stdout (its progress goes to stderr)."""
    pairs = (line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    return {k: v for k, v in pairs if k.isidentifier() and k.isupper()}


@contextmanager
def _service(name: str, up_codes: tuple[int, ...], start_timeout: float) -> Iterator[dict[str, str]]:
    """Reuse the service when ``status`` says it is up, else start it here and stop it afterwards."""
    status = _script(name, "status", 60)
    if status.returncode in up_codes:
        yield _exports(status.stdout)
        return
    started = _script(name, "start", start_timeout)
    try:
        if started.returncode != 0:
            pytest.fail(
                f"scripts/{name} start failed (exit {started.returncode}):\n{started.stderr.strip()}",
                pytrace=False,
            )
        yield _exports(started.stdout)
    finally:
        # Also after a failed start: whatever it did bring up is ours to stop.
        stopped = _script(name, "stop", 180)
        if stopped.returncode != 0:
            print(f"scripts/{name} stop failed (exit {stopped.returncode}):\n{stopped.stderr}")


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A single-node SLURM with accounting (partition ``debug``), from ``scripts/slurm-local``."""
    if os.geteuid() != 0:
        pytest.skip("local SLURM needs root (munged, mariadbd and slurmd run as their own users)")
    missing = [b for b in _SLURM_BINARIES if shutil.which(b, path=_SEARCH_PATH) is None]
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}); run scripts/install-cluster-deps")
    # status 2: up but the node is busy (someone's jobs) -- still reuse, never stop it.
    with _service("slurm-local", up_codes=(0, 2), start_timeout=300) as env, pytest.MonkeyPatch.context() as mp:
        # sbatch/sacct (run by submitit in this process) and the jobs find the config here.
        for key, value in env.items():
            mp.setenv(key, value)
        yield Slurm(env=env)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """An MLflow tracking server on PostgreSQL, artifacts served by it, from ``scripts/mlflow-server``."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL not installed; run scripts/install-cluster-deps")
    if os.geteuid() == 0 and shutil.which("runuser", path=_SEARCH_PATH) is None:
        pytest.skip("runuser missing: PostgreSQL cannot run as root")
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 missing; pip install -e '.[dev]' (psycopg2-binary)")
    with _service("mlflow-server", up_codes=(0,), start_timeout=400) as env:
        uri = env.get("MLFLOW_TRACKING_URI")
        if not uri:
            pytest.fail("scripts/mlflow-server printed no MLFLOW_TRACKING_URI", pytrace=False)
        yield MlflowServer(tracking_uri=uri)
