"""What the stages produce, as the runner hands it to the report: sweeps, selections, evaluations."""

from __future__ import annotations

from dataclasses import dataclass, field

from overfit.pipeline.plan import Job
from overfit.pipeline.spec import Stage
from overfit.tracking.points import Point
from overfit.tracking.replicates import Cell
from overfit.tracking.report import Comparison


def point_label(point: Point, keys: list[str]) -> str:
    """``features.order=3 loss=hinge``: the point's values of ``keys``."""
    return " ".join(f"{k.removesuffix('.name')}={point.values.get(k, '?')}" for k in keys)


@dataclass
class SweepResult:
    """A sweep, search or evaluate stage's outcome: its parent run and points."""

    stage: Stage
    parent_run_id: str
    keys: list[str]  # the points' swept keys in the file's axis order (group axes as ``loss.name``)
    points: list[Point]
    jobs: list[Job]  # the jobs composed for it (a search: the ends of its intervals)
    seconds: float
    order: dict[str, list[str]] = field(default_factory=dict)  # key → values in the file's order
    comparison: Comparison | None = None  # what the sweep's report compared: with replicates, its cells

    @property
    def diverged(self) -> list[Point]:
        return [p for p in self.points if p.diverged]

    @property
    def failed(self) -> list[Point]:
        return [p for p in self.points if not p.finished and not p.diverged]


@dataclass
class Selection:
    """The point a select stage chose, the sweep it came from and its job."""

    stage: Stage
    sweep: str
    point: Point
    job: Job
    value: float
    label: str
    cell: Cell | None = None  # with replicates: the chosen point's replicates (``point`` is one of them)


@dataclass
class Evaluation:
    """The selected config's runs (one per evaluate point), their mean metrics and 95 % half-widths."""

    stage: Stage
    selection: Selection
    result: SweepResult
    metrics: dict[str, float]
    spread: dict[str, float]


Result = SweepResult | Selection | Evaluation
