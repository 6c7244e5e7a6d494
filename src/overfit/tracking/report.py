"""A sweep's comparison, rebuilt from the MLflow store alone.

The summary table and the generalization curves (error on the three splits
against each swept knob, best point by validation error marked) are derived
from the parent run and its children, so a sweep that ran on a cluster can be
reported on a laptop: ``overfit report <parent run id>``.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

SPLITS = ("train", "val", "test")
COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:red"}


@dataclass(frozen=True)
class Point:
    """One sweep point as the store has it."""

    run_id: str
    values: dict[str, str]
    status: str
    reason: str
    reused: bool
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.values.items())

    def error(self, split: str) -> float:
        return self.metrics.get(f"{split}/error", math.nan) if self.status == "FINISHED" else math.nan


def _point(run: Run, axes: dict[str, list[str]], reused: bool) -> Point:
    tags = run.data.tags
    reason = tags.get("failure.reason", "")
    if tags.get("failure") == "diverged":
        reason = f"diverged — {reason}"
    return Point(
        run_id=run.info.run_id,
        values={k: run.data.params.get(k, "?") for k in axes},
        status=run.info.status,
        reason=reason,
        reused=reused,
        metrics=dict(run.data.metrics),
    )


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def collect(client: MlflowClient, parent_run_id: str) -> tuple[dict[str, list[str]], list[Point]]:
    """The sweep's axes (from the parent) and its points (children and reused runs)."""
    from overfit.tracking.sweeps import TAG_REUSED

    parent = client.get_run(parent_run_id)
    axes = {k.removeprefix("sweep."): v.split(",") for k, v in parent.data.params.items() if k.startswith("sweep.")}
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10_000
    )
    points = [_point(r, axes, reused=False) for r in children]
    reused = [v for k, v in sorted(parent.data.tags.items()) if k.startswith(TAG_REUSED)]
    points += [_point(client.get_run(run_id), axes, reused=True) for run_id in reused]
    points.sort(key=lambda p: [_sort_key(p.values[k]) for k in axes])
    return axes, points


def best(points: list[Point]) -> Point | None:
    """The finished point with the lowest validation error."""
    finished = [p for p in points if not math.isnan(p.error("val"))]
    return min(finished, key=lambda p: p.error("val")) if finished else None


def write_table(axes: dict[str, list[str]], points: list[Point], out: Path) -> list[Path]:
    """summary.csv and summary.md: one row per point, swept values, errors, status."""
    columns = [*axes, *(f"{s}/error" for s in SPLITS), "status", "reused", "run_id", "reason"]
    rows = []
    for p in points:
        errors = {f"{s}/error": (f"{p.error(s):.6g}" if not math.isnan(p.error(s)) else "") for s in SPLITS}
        rows.append({**p.values, **errors, "status": p.status, "reused": str(p.reused).lower(),
                     "run_id": p.run_id, "reason": p.reason})
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    chosen = best(points)
    lines = ["| " + " | ".join(columns[:-2] + ["reason"]) + " |", "|" + "---|" * (len(columns) - 1)]
    for p, row in zip(points, rows):
        mark = " ★" if chosen is not None and p.run_id == chosen.run_id else ""
        cells = [row[c] for c in columns[:-2]] + [row["reason"].replace("|", "/")[:120]]
        cells[0] += mark
        lines.append("| " + " | ".join(cells) + " |")
    if chosen is not None:
        lines += ["", f"★ best by validation error: {chosen.label} — test error {chosen.error('test'):.6g}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return [out / "summary.csv", out / "summary.md"]


def ordered(values: list[str], given: list[str] | None = None) -> list[str]:
    """A knob's values: numbers ascending, anything else in the order given (or first seen)."""
    seen = list(dict.fromkeys(values))
    if all(_sort_key(v)[0] == 0 for v in seen):
        return sorted(seen, key=float)
    given = given or []
    return sorted(seen, key=lambda v: (given.index(v) if v in given else len(given), seen.index(v)))


def x_axis(ax: plt.Axes, knob: str, xs: list[str]) -> list[float]:
    """Positions for the knob's values: log scale when they span decades (λ, lr), ticks for words."""
    if all(_sort_key(v)[0] == 0 for v in xs):
        positions = [float(v) for v in xs]
        positive = [v for v in positions if v > 0]
        if positive and max(positive) / min(positive) >= 20:
            if len(positive) == len(positions):
                ax.set_xscale("log")
            else:  # λ = 0 has no place on a log axis: linear near zero
                ax.set_xscale("symlog", linthresh=min(positive))
    else:
        positions = [float(i) for i in range(len(xs))]
        ax.set_xticks(positions, xs)
    ax.set_xlabel(knob.removesuffix(".name"))
    return positions


def y_axis(ax: plt.Axes, ys: list[float], label: str = "error") -> None:
    """Log scale when the errors span decades (an over-fitted order-12 model)."""
    finite = [y for y in ys if math.isfinite(y) and y > 0]
    if finite and max(finite) / min(finite) > 50:
        ax.set_yscale("log")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _failed(ax: plt.Axes, points: list[Point], knob: str, xs: list[str], positions: list[float]) -> None:
    """Diverged or failed points: a crimson × on the x-axis with the word."""
    for n, p in enumerate(q for q in points if q.status != "FINISHED" and q.values.get(knob) in xs):
        x = positions[xs.index(p.values[knob])]
        word = "diverged" if p.reason.startswith("diverged") else p.status.lower()
        ax.plot([x], [0.03], "x", color="crimson", markersize=11, mew=2.5, transform=ax.get_xaxis_transform())
        ax.annotate(word, (x, 0.07 + 0.05 * (n % 2)), xycoords=("data", "axes fraction"), color="crimson",
                    ha="center", fontsize=8, fontweight="bold")


def _panel(ax: plt.Axes, points: list[Point], knob: str, xs: list[str], all_y: list[float],
           chosen: Point | None, chosen_label: str, title: str) -> None:
    """Train / val / test error of ``points`` against ``knob``: one generalization curve."""
    positions = x_axis(ax, knob, xs)
    by_x = {p.values.get(knob): p for p in points}
    for s in SPLITS:
        ax.plot(positions, [by_x[x].error(s) if x in by_x else math.nan for x in xs], "o-", color=COLORS[s],
                label=f"{s} error")
    y_axis(ax, all_y)
    if chosen is not None and any(p.run_id == chosen.run_id for p in points) and chosen.values.get(knob) in xs:
        x = positions[xs.index(chosen.values[knob])]
        ax.axvline(x, color="gold", lw=6, alpha=0.35, zorder=0)
        ax.scatter([x], [chosen.error("test")], marker="*", s=260, color="gold", edgecolor="black", zorder=5,
                   label=f"{chosen_label}: test error {chosen.error('test'):.4g}")
    _failed(ax, points, knob, xs, positions)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def curve_figure(points: list[Point], knob: str, others: list[str], chosen: Point | None,
                 chosen_label: str = "best by val", name: str = "generalization",
                 order: list[str] | None = None) -> Figure:
    """Error on the three splits against ``knob``; one panel per combination of the other knobs."""
    xs = ordered([p.values[knob] for p in points if knob in p.values], order)
    all_y = [p.error(s) for p in points for s in SPLITS]
    if not others:
        fig, ax = plt.subplots(figsize=(7.5, 4.4))
        _panel(ax, points, knob, xs, all_y, chosen, chosen_label, f"{name}: error vs {knob.removesuffix('.name')}")
    else:
        groups = list(dict.fromkeys(tuple(p.values.get(k) for k in others) for p in points))
        groups.sort(key=lambda g: [_sort_key(v or "") for v in g])
        cols = min(len(groups), 3)
        rows = math.ceil(len(groups) / cols)
        fig, panels = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), sharey=True, squeeze=False)
        for ax, group in zip(panels.flat, groups):
            members = [p for p in points if tuple(p.values.get(k) for k in others) == group]
            label = " ".join(f"{k.removesuffix('.name')}={v}" for k, v in zip(others, group))
            _panel(ax, members, knob, xs, all_y, chosen, chosen_label, f"{name}: {label}")
        for ax in list(panels.flat)[len(groups):]:
            ax.set_visible(False)
    fig.tight_layout()
    return fig


def curves(axes: dict[str, list[str]], points: list[Point]) -> dict[str, Figure]:
    """One figure per swept knob, the best point by validation error starred."""
    chosen = best(points)
    return {
        f"curves_{knob.replace('.', '_')}.png": curve_figure(points, knob, [k for k in axes if k != knob], chosen,
                                                            order=axes[knob])
        for knob in axes
    }


def write(axes: dict[str, list[str]], points: list[Point], out: Path) -> list[Path]:
    """Every report file into ``out``: the table and one curve PNG per knob."""
    out.mkdir(parents=True, exist_ok=True)
    files = write_table(axes, points, out)
    for name, fig in curves(axes, points).items():
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(out / name)
    return files


def publish(parent_run_id: str, out: Path | None = None) -> list[Point]:
    """Build the report from the store and log it on the parent run (under ``report/``)."""
    client = MlflowClient()
    axes, points = collect(client, parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        target = out or Path(tmp)
        write(axes, points, target)
        client.log_artifacts(parent_run_id, str(target), "report")
    chosen = best(points)
    if chosen is not None:
        client.set_tag(parent_run_id, "best_run_id", chosen.run_id)
        for s in SPLITS:
            client.log_metric(parent_run_id, f"best/{s}/error", chosen.error(s))
    client.set_tag(parent_run_id, "points", str(len(points)))
    client.set_tag(parent_run_id, "failed_points", str(sum(p.status != "FINISHED" for p in points)))
    return points


def close_parent(parent_run_id: str, status: str) -> None:
    MlflowClient().set_terminated(parent_run_id, status)


def main(argv: list[str]) -> int:
    """``overfit report RUN_ID [--out DIR] [--tracking-uri URI]``"""
    import mlflow

    from overfit.tracking import runs as tracking

    parser = argparse.ArgumentParser(prog="overfit report", description=main.__doc__)
    parser.add_argument("run_id", help="the sweep's parent run id")
    parser.add_argument("--out", type=Path, default=None, help="also write the report files here")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    mlflow.set_tracking_uri(args.tracking_uri or tracking.tracking_uri())
    points = publish(args.run_id, args.out)
    print(f"[overfit] report of {len(points)} points logged to run {args.run_id} under report/")
    if args.out:
        print(f"[overfit] files in {args.out}")
    return 0
