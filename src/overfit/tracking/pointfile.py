"""The file each job leaves in its directory: which run trains its point, and how it ended.

Written by the job (atomically), read by a requeued job (the same run again), by the
launchers (a failed point fails its SLURM job), by progress lines and ``overfit sweep status``.
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

    def save(self, job_dir: Path) -> None:
        """Written aside, then moved: a launcher or ``overfit sweep status`` never reads half a file."""
        job_dir.mkdir(parents=True, exist_ok=True)
        aside = job_dir / f".{POINT_FILE}.{os.getpid()}"
        aside.write_text(json.dumps(self.__dict__))
        aside.replace(job_dir / POINT_FILE)


def read_point(job_dir: Path) -> PointResult | None:
    """What a job recorded about its point, if it got that far."""
    try:
        return PointResult(**json.loads((job_dir / POINT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
