"""A sweep's points as the store has them, and the one rule that picks the best.

Reports, pipelines and ``overfit sweep status`` all read points through
:func:`collect` and choose with :func:`best`, so "the best point" means the
same everywhere: the lowest validation error among finished points, the first
in sweep order on a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from overfit.tracking.runs import TAG_FAILURE, TAG_HASH, TAG_NAME, TAG_PARENT, TAG_REASON, TAG_REUSED, TAG_TRIAL, short

if TYPE_CHECKING:
    from mlflow.entities import Run

    from overfit.tracking.store import Store

SPLITS = ("train", "val", "test")


@dataclass
class Point:
    """One sweep point: its run, the swept values, how it ended, its final metrics."""

    run_id: str
    name: str
    values: dict[str, str]
    status: str
    failure: str
    reason: str
    reused: bool
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_uri: str = ""
    trial: int | None = None  # an adaptive sweeper's trial number (proposal order); None in a grid

    @property
    def label(self) -> str:
        return " ".join(f"{k.removesuffix('.name')}={short(v)}" for k, v in self.values.items()) or self.name

    @property
    def diverged(self) -> bool:
        return self.failure == "diverged"

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    def error(self, split: str) -> float:
        return self.metric(f"{split}/error")

    def metric(self, key: str) -> float:
        """A final metric of a finished point; NaN for anything that did not finish."""
        return self.metrics.get(key, math.nan) if self.finished else math.nan


def _value(run: Run, key: str) -> str:
    """A point's value of a swept key: its param, or for a swept group (``model.name``) the option it ran."""
    if key in run.data.params:
        return run.data.params[key]
    group = key.removesuffix(".name")
    return run.data.tags.get(group, "?") if group != key else "?"


def point_of(run: Run, keys: list[str], reused: bool = False) -> Point:
    tags = run.data.tags
    return Point(
        run_id=run.info.run_id,
        name=tags.get(TAG_NAME, run.info.run_id[:8]),
        values={k: _value(run, k) for k in keys},
        status=run.info.status,
        failure=tags.get(TAG_FAILURE, ""),
        reason=tags.get(TAG_REASON, ""),
        reused=reused,
        metrics=dict(run.data.metrics),
        artifact_uri=run.info.artifact_uri,
        trial=int(tags[TAG_TRIAL]) if tags.get(TAG_TRIAL, "").isdigit() else None,
    )


def sort_key(value: str) -> tuple[int, float, str]:
    """Numbers before words, numbers by value."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def ordered(values: list[str], given: list[str] | None = None) -> list[str]:
    """A knob's values: numbers ascending, anything else in the order given (or first seen)."""
    seen = list(dict.fromkeys(values))
    if all(sort_key(v)[0] == 0 for v in seen):
        return sorted(seen, key=float)
    given = given or []
    return sorted(seen, key=lambda v: (given.index(v) if v in given else len(given), seen.index(v)))


def sweep_keys(parent: Run) -> dict[str, list[str]]:
    """The swept keys a parent declares (``sweep.<key>`` params), with the values listed where it lists them."""
    return {k.removeprefix("sweep."): [v.strip() for v in text.split(",")] if "…" not in text else []
            for k, text in parent.data.params.items() if k.startswith("sweep.")}


def collect(store: Store, parent_run_id: str) -> tuple[dict[str, list[str]], list[Point]]:
    """The sweep's axes and its points: children (each point once, its latest attempt) and reused runs."""
    parent = store.call("get_run", parent_run_id)
    declared = sweep_keys(parent)  # type: ignore[arg-type]
    keys = list(declared)
    children = store.call("search_runs", [parent.info.experiment_id],  # type: ignore[attr-defined]
                          filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
                          order_by=["attributes.start_time DESC"], max_results=50_000)
    latest: dict[str, Run] = {}
    for run in children:  # type: ignore[attr-defined]
        latest.setdefault(run.data.tags.get(TAG_HASH, run.info.run_id), run)
    points = [point_of(r, keys) for r in latest.values()]
    reused = [v for k, v in sorted(parent.data.tags.items(), key=lambda kv: kv[0]) if k.startswith(TAG_REUSED)]  # type: ignore[attr-defined]
    points += [point_of(store.call("get_run", run_id), keys, reused=True) for run_id in dict.fromkeys(reused)]  # type: ignore[arg-type]
    axes = {k: ordered([p.values[k] for p in points], declared[k]) for k in keys}
    points.sort(key=lambda p: [sort_key(p.values[k]) for k in keys])
    return axes, points


def best(points: list[Point], metric: str = "val/error", mode: str = "min") -> Point | None:
    """The finished point with the lowest (``mode="max"``: highest) ``metric``; the first one on a tie."""
    scored = [(p.metric(metric) * (1 if mode == "min" else -1), i, p) for i, p in enumerate(points)]
    scored = [s for s in scored if math.isfinite(s[0])]
    return min(scored, key=lambda s: s[:2])[2] if scored else None
