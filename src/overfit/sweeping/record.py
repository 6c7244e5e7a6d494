"""The file in a sweep's directory that tells every job which sweep it belongs to.

Written before any job starts, by overfit's sweeper or (for any other sweeper, Optuna's
say) by :class:`~overfit.sweeping.callback.SweepCallback`; read by a job whose overrides do
not carry the parent (jobs another sweeper launches) and by the SLURM launcher. A sweep
directory on a shared file system reaches every node.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORD = ".overfit-sweep.json"


def write(sweep_dir: Path, parent_run_id: str, uri: str, axes: list[str]) -> None:
    """The parent, the store, and the swept keys (which name each point's run)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    aside = sweep_dir / f".{RECORD}.tmp"
    aside.write_text(json.dumps({"parent_run_id": parent_run_id, "uri": uri, "axes": axes}))
    aside.replace(sweep_dir / RECORD)


def _read(sweep_dir: Path) -> dict:
    try:
        found = json.loads((sweep_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def parent_of(sweep_dir: Path) -> str | None:
    """The sweep's parent run id, if its directory holds a record."""
    return _read(sweep_dir).get("parent_run_id")


def axes_of(sweep_dir: Path) -> list[str]:
    """The keys the sweep varies."""
    return list(_read(sweep_dir).get("axes", []))
