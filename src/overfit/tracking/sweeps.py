"""Sweeps as MLflow parent/child runs: a parent opened before any point runs, closed with its report.

The parent holds the sweep's definition (``sweep.<key>`` params), is named after
it, and ends with the report (:mod:`overfit.tracking.report`); its id reaches the
points as ``sweep.parent_run_id`` in their config, whatever the launcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overfit import paths
from overfit.tracking import runs
from overfit.tracking.points import Point
from overfit.tracking.replicates import TAG_SIMPLER
from overfit.tracking.report import Comparison, compare, publish
from overfit.tracking.store import Store


@dataclass
class Outcome:
    """What a sweep left in the store: its parent and its points."""

    parent_run_id: str
    points: list[Point] = field(default_factory=list)
    comparison: Comparison | None = None  # what the report compared and chose
    report: str = ""  # where the report's files are (the parent's report/ artifacts)
    store: str = ""  # the store's URI, for the UI command

    def details(self) -> list[str]:
        """The winner, the table, where the report is and how to look at it: the end of a sweep on a terminal."""
        from overfit.tracking import ui
        from overfit.tracking.report import terminal

        lines = terminal(self.comparison) if self.comparison is not None else []
        if self.report:
            lines.append(f"[overfit] report: {self.report} (summary.md, summary.csv, the curves)")
        if self.store:
            lines.append(f"[overfit] open the MLflow UI: {ui.command(self.store)}")
        return lines

    @property
    def failed(self) -> list[Point]:
        return [p for p in self.points if not p.finished]

    def summary(self) -> list[str]:
        """What a user reads at the end: how many finished, and each point that did not, with why."""
        if not self.failed:
            return [f"[overfit] sweep {self.parent_run_id}: {len(self.points)} points finished"]
        lines = [f"[overfit] sweep {self.parent_run_id}: {len(self.failed)} of {len(self.points)} points did not finish:"]
        for p in self.failed:
            kind = f" ({p.failure})" if p.failure else ""
            lines.append(f"  {p.label}: {p.status}{kind} — {p.reason}")
        return lines


def axes(task_overrides: list[str]) -> dict[str, str]:
    """``{"features.order": "1,3,12"}``: each swept key and its sweep as written.

    Sweeping a group (``model=linear,mlp``) is the param ``model.name``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    found = {}
    for o in OverridesParser.create().parse_overrides(task_overrides):
        if o.is_sweep_override():
            key = o.get_key_element().lstrip("+~")
            value = o.value()
            if isinstance(value, IntervalSweep):  # an adaptive sweeper's range: its ends, and "log" if log-scaled
                text = f"{value.start:g}…{value.end:g}" + (" log" if "log" in value.tags else "")
            else:
                text = ",".join(str(v) for v in o.sweep_string_iterator())
            found[f"{key}.name" if key in paths.config_groups() else key] = text
    return found


def sweep_name(swept: dict[str, str]) -> str:
    """``features.order=1…12`` or ``λ=0,0.1,1 × lr=0.01,0.1``: what the sweep varies."""
    parts = []
    for key, text in swept.items():
        values = text.split(",") if "(" not in text else [text]
        shown = f"{values[0]}…{values[-1]}" if len(values) > 4 else ",".join(values)
        parts.append(f"{runs.SHORT.get(key, key.removesuffix('.name'))}={shown}")
    return " × ".join(parts) or "one point"


def open_parent(store: Store, experiment_id: str, task_overrides: list[str], launcher: str,
                nest_under: str | None = None, name: str | None = None, status: str = "RUNNING",
                simpler: dict[str, str] | None = None) -> str:
    """Create a sweep's parent run (beneath a pipeline run when ``nest_under``), named after what it sweeps.

    ``simpler``: the swept capacity knobs and which way is simpler, for the report's one-standard-error rule.
    """
    import json

    swept = axes(task_overrides)
    tags = {"overrides": " ".join(task_overrides), "launcher": launcher, TAG_SIMPLER: json.dumps(simpler or {})}
    run_id = runs.create(store, experiment_id, "sweep", name or f"sweep {sweep_name(swept)}", tags,
                         parent=nest_under, status=status)
    from mlflow.entities import Param

    store.call("log_batch", run_id, params=[Param(f"sweep.{k}", v[:6000]) for k, v in swept.items()])
    store.call("log_text", run_id, "\n".join(task_overrides) + "\n", "sweep/overrides.txt")
    return run_id


def close_parent(store: Store, parent_run_id: str, status: str = "FINISHED") -> Outcome:
    """Publish the sweep's report on its parent and end the parent with ``status``.

    A finished sweep's winner gets its LoggedModel, linked from the parent: made by one of the sweep's writers
    (when it has them) while this process draws and writes the report.
    """
    from overfit.tracking.models import keep_best, keep_best_at
    from overfit.tracking.recorder import beside

    comparison = compare(store, parent_run_id)
    winner = comparison.chosen.run_id if status == "FINISHED" and comparison.chosen is not None else None
    model = beside(store.uri, keep_best_at, store.uri, store.deadline, parent_run_id, winner) if winner else None
    publish(store, parent_run_id, compared=comparison)
    if model is not None:
        model.result()
    elif winner is not None:
        keep_best(store, parent_run_id, winner)
    runs.end(store, parent_run_id, status)
    where = store.call("get_run", parent_run_id).info.artifact_uri
    return Outcome(parent_run_id, comparison.points, comparison, f"{where}/report", store.uri)
