"""A sweep's points over its replicate axis (the seed): cells, their intervals, and the rules that pick one.

A sweep that varies ``seed`` beside its knobs trains every point several times on
redrawn training data and initialisation. Its report compares *cells* — the runs that
differ only by seed — by their mean, with a Student-t interval (:mod:`overfit.tracking.stats`).
Two rules choose: the lowest mean validation error, and the one-standard-error rule (the
simplest cell whose mean is within one standard error of that lowest), simplest by the
capacity knobs the components declare (``simpler`` on a component class, recorded on the
parent as :data:`TAG_SIMPLER`). Where the dataset knows its true function, each run left its
predictions on a fixed grid (:mod:`overfit.lifecycle.predictions`): a cell's replicates
decompose its error into bias², variance and noise.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from overfit.tracking.points import Point, sort_key
from overfit.tracking.runs import REPLICATE_KEY
from overfit.tracking.stats import Decomposition, Summary, bias_variance, summarize

if TYPE_CHECKING:
    from mlflow.entities import Run

TAG_SIMPLER = "overfit.simpler"  # on a sweep parent: {"features.order": "lower", ...}
GRID_FILE = "predictions/grid.json"  # written by overfit.lifecycle.predictions
CONFIDENCE = 0.95


@dataclass
class Cell:
    """The replicates of one point: the runs whose swept values agree but for the seed."""

    values: dict[str, str]
    replicates: list[Point]
    decomposition: Decomposition | None = None
    n_test: int = 0  # the test set's size, where the decomposition is known: how well it estimates σ²
    _summaries: dict[str, Summary | None] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return " ".join(f"{k.removesuffix('.name')}={v}" for k, v in self.values.items()) or "every seed"

    @property
    def finished(self) -> list[Point]:
        return [p for p in self.replicates if p.finished]

    @property
    def n(self) -> int:
        return len(self.finished)

    @property
    def status(self) -> str:
        """FINISHED when any replicate finished: the cell has a mean (its table row says how many did not)."""
        return "FINISHED" if self.finished else self.replicates[0].status

    @property
    def diverged(self) -> bool:
        return not self.finished and any(p.diverged for p in self.replicates)

    @property
    def run_id(self) -> str:
        """The run that stands for the cell in links: its first finished replicate."""
        return (self.finished or self.replicates)[0].run_id

    def stat(self, metric: str) -> Summary | None:
        """Mean, spread and interval of the finished replicates' ``metric``; None if none has it."""
        if metric not in self._summaries:
            values = [p.metric(metric) for p in self.finished if math.isfinite(p.metric(metric))]
            self._summaries[metric] = summarize(values, CONFIDENCE) if values else None
        return self._summaries[metric]

    def summary(self, split: str) -> Summary | None:
        return self.stat(f"{split}/error")

    def mean(self, metric: str) -> float:
        """The mean ``metric`` over finished replicates (NaN when none has it)."""
        found = self.stat(metric)
        return found.mean if found is not None else math.nan

    def error(self, split: str) -> float:
        return self.mean(f"{split}/error")

    def metric(self, key: str) -> float:  # as a Point answers it: a cell is compared by its mean
        return self.mean(key)

    def means(self) -> dict[str, float]:
        """Every final metric's mean over the finished replicates."""
        keys = dict.fromkeys(k for p in self.finished for k in p.metrics)
        return {k: v for k in keys if math.isfinite(v := self.mean(k))}

    def band(self, split: str) -> tuple[float, float] | None:
        """The 95 % interval of the mean, where there is one (two or more replicates)."""
        found = self.summary(split)
        return (found.low, found.high) if found is not None and found.n > 1 else None

    def text(self, split: str) -> str:
        found = self.summary(split)
        return found.text() if found is not None else ""


def replicated(axes: dict[str, list[str]]) -> bool:
    """A sweep whose seed takes more than one value: its report compares cells, not runs."""
    return len(axes.get(REPLICATE_KEY, [])) > 1


def cells(axes: dict[str, list[str]], points: list[Point]) -> tuple[dict[str, list[str]], list[Cell]]:
    """The axes without the seed, and one cell per combination of their values (in sweep order)."""
    kept = {k: v for k, v in axes.items() if k != REPLICATE_KEY}
    found: dict[tuple[str, ...], Cell] = {}
    for p in points:
        values = {k: p.values[k] for k in kept}
        found.setdefault(tuple(values.values()), Cell(values, [])).replicates.append(p)
    ordered = sorted(found.values(), key=lambda c: [sort_key(c.values[k]) for k in kept])
    return kept, ordered


def lowest(cells_: list[Cell], metric: str = "val/error", mode: str = "min") -> Cell | None:
    """The cell with the lowest (``mode="max"``: highest) mean ``metric``; the first in sweep order on a tie."""
    sign = 1.0 if mode == "min" else -1.0
    scored = [(sign * c.mean(metric), i) for i, c in enumerate(cells_) if math.isfinite(c.mean(metric))]
    return cells_[min(scored)[1]] if scored else None


def _capacity(value: str) -> float:
    """A knob's value as a size: a number, or a list of widths by its sum (``[32, 32]`` → 64)."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return math.nan
    if isinstance(parsed, (list, tuple)):
        return float(sum(parsed)) if all(isinstance(v, (int, float)) for v in parsed) else math.nan
    return float(parsed) if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else math.nan


def one_standard_error(cells_: list[Cell], simpler: dict[str, str], metric: str = "val/error",
                       mode: str = "min") -> Cell | None:
    """The simplest cell whose mean is within one standard error of the best mean (ESL §7.10).

    Simplest by the declared capacity knobs in axis order (lower order, fewer units, higher λ),
    then by mean. None when no swept knob declares a direction: there is nothing to rank by.
    """
    best = lowest(cells_, metric, mode)
    keys = [k for k in best.values if k in simpler] if best is not None else []
    if best is None or not keys:
        return None
    found = best.stat(metric)
    assert found is not None
    sign = 1.0 if mode == "min" else -1.0
    threshold = sign * best.mean(metric) + (found.se if math.isfinite(found.se) else 0.0)
    within = [c for c in cells_ if math.isfinite(c.mean(metric)) and sign * c.mean(metric) <= threshold]

    def rank(c: Cell) -> tuple[float, ...]:
        sizes = [_capacity(c.values[k]) * (1 if simpler[k] == "lower" else -1) for k in keys]
        return (*(s if math.isfinite(s) else math.inf for s in sizes), sign * c.mean(metric))

    return min(within, key=rank)


def decompose(cells_: list[Cell]) -> bool:
    """Each cell's bias², variance and noise from its finished replicates' grid predictions; False when the
    dataset declared none (no run has the file). Reads one small artifact per run."""
    from concurrent.futures import ThreadPoolExecutor

    runs = {p.run_id: p.artifact_uri for c in cells_ for p in c.finished}
    if not runs or _grid(next(iter(runs.values()))) is None:  # no true function: no run has the file
        return False
    with ThreadPoolExecutor(max_workers=4) as pool:
        grids = dict(zip(runs, pool.map(_grid, runs.values())))
    for c in cells_:
        found = [grids[p.run_id] for p in c.finished if grids.get(p.run_id)]
        if not found or len({len(g["prediction"]) for g in found}) > 1:
            continue
        c.decomposition = bias_variance([g["prediction"] for g in found], found[0]["truth"],
                                        found[0]["noise_variance"])
        c.n_test = int(found[0].get("n_test", 0))
    return True


def _grid(artifact_uri: str) -> dict | None:
    """A run's grid predictions, read straight from its artifact store (a store round trip per run costs 10×)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        return json.loads(mlflow.artifacts.load_text(f"{artifact_uri}/{GRID_FILE}"))
    except (OSError, MlflowException, ValueError):
        return None


def simpler_of(parent: Run) -> dict[str, str]:
    """The capacity knobs a sweep's parent recorded, and which way is simpler."""
    try:
        found = json.loads(parent.data.tags.get(TAG_SIMPLER, "{}"))
    except ValueError:
        return {}
    return {k: v for k, v in found.items() if v in ("lower", "higher")} if isinstance(found, dict) else {}


def noise_error(n_test: int, noise_variance: float) -> float:
    """The standard error of a test set's mean squared noise, σ²·√(2/n) for Gaussian noise: how far the measured
    test error may sit from bias² + variance + σ² for a test set of ``n_test`` points."""
    return noise_variance * math.sqrt(2.0 / n_test) if n_test > 0 else math.nan

