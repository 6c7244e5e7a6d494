"""The file each job leaves in its directory: which run trains its point, and how it ended.

Written by the job (atomically), read by the launchers (a failed point fails its SLURM
job) and by progress lines. Never trusted to say which run a point trains into: that is
its reuse key's business (:mod:`overfit.lifecycle.claim`); the file names its sweep,
so one left by another sweep in a shared directory is ignored.
No heavy import: worker processes and the CLI read it cheaply.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

POINT_FILE = "point.json"  # in the job's directory: the run it trains and how it ended (read by launchers)


@dataclass
class PointResult:
    """How a point ended: its run, status, final metrics, and whether an earlier run stood in for it."""

    run_id: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    failure: str = ""
    reason: str = ""
    reused: bool = False
    attempt: int = 1
    parent: str = ""  # the sweep this job belongs to: a file another sweep left in a shared directory is not ours
    key: str = ""  # the point's config hash

    def save(self, job_dir: Path) -> None:
        """Written aside, then moved: a launcher or ``overfit sweep status`` never reads half a file."""
        job_dir.mkdir(parents=True, exist_ok=True)
        aside = job_dir / f".{POINT_FILE}.{os.getpid()}"
        aside.write_text(json.dumps(self.__dict__))
        aside.replace(job_dir / POINT_FILE)


def read_point(job_dir: Path, parent: str | None = None) -> PointResult | None:
    """What a job recorded about its point, if it got that far (``parent``: only a job of that sweep)."""
    try:
        found = PointResult(**json.loads((job_dir / POINT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return found if parent is None or found.parent == parent else None
