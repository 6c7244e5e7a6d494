"""The command that opens the MLflow UI on this project's store, bound to this machine only."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from overfit.tracking.store import is_http, resolve_uri, sqlite_file

HOST = "127.0.0.1"  # explicit: MLflow's default may change, and the store is nobody else's business
PORT = 5000


def main(argv: list[str]) -> int:
    """``overfit ui [--run]``: the command that opens the UI, or (``--run``) the UI itself, on 127.0.0.1."""
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="overfit ui", description=main.__doc__)
    parser.add_argument("--run", action="store_true", help="start the MLflow UI now instead of printing the command")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    uri = resolve_uri(args.tracking_uri)
    if not args.run or is_http(uri):
        print(command(uri))
        return 0
    parts = shlex.split(command(uri))
    os.execv(parts[0], parts)  # the UI in this terminal, Ctrl-C stops it


def command(uri: str | None = None) -> str:
    """``mlflow ui`` on a SQLite store (paths quoted); for a tracking server, its address."""
    uri = uri or resolve_uri()
    if is_http(uri):
        return f"open {uri} in a browser (the tracking server serves the UI)"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    db = sqlite_file(uri)
    artifacts = ["--default-artifact-root", str(db.parent / "artifacts")] if db is not None else []
    parts = [str(mlflow_bin), "ui", "--backend-store-uri", uri, *artifacts, "--host", HOST, "--port", str(PORT)]
    return shlex.join(parts)
