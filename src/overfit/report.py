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
LOG_KNOBS = ("strength", "lr")  # knobs that span decades: log x-axis
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
    from overfit.sweeps import TAG_REUSED

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


def _numeric(values: list[str]) -> bool:
    return all(_sort_key(v)[0] == 0 for v in values)


def _style_axes(ax: plt.Axes, knob: str, xs: list[str], ys: list[float]) -> list[float] | list[int]:
    """Positions for the knob's values; log x for λ and lr, log y when errors span decades."""
    if _numeric(xs):
        positions = [float(v) for v in xs]
        lo, hi = min(positions), max(positions)
        if knob.endswith(LOG_KNOBS) and hi > 0:
            if lo > 0:
                ax.set_xscale("log")
                ax.set_xlim(lo / 2, hi * 2)
            else:  # λ = 0 has no place on a log axis: linear near zero
                ax.set_xscale("symlog", linthresh=min(v for v in positions if v > 0))
                ax.set_xlim(lo, hi * 2)
        else:
            pad = 0.05 * (hi - lo or 1.0)
            ax.set_xlim(lo - pad, hi + pad)  # failed points too, so their marks show
    else:
        positions = list(range(len(xs)))
        ax.set_xticks(positions, xs)
    finite = [y for y in ys if math.isfinite(y) and y > 0]
    if finite and max(finite) / min(finite) > 50:
        ax.set_yscale("log")
    ax.set_xlabel(knob)
    ax.set_ylabel("error")
    ax.grid(alpha=0.3)
    return positions


def _mark(ax: plt.Axes, chosen: Point | None, knob: str, xs: list[str], positions: list) -> None:
    if chosen is None:
        return
    x = positions[xs.index(chosen.values[knob])]
    ax.scatter([x], [chosen.error("test")], marker="*", s=220, color="gold", edgecolor="black", zorder=5,
               label=f"best by val: {knob}={chosen.values[knob]}, test error {chosen.error('test'):.4g}")


def _failed(ax: plt.Axes, points: list[Point], knob: str, xs: list[str], positions: list) -> None:
    """Diverged or failed points: a red × on the x-axis with the word."""
    for p in points:
        if p.status != "FINISHED" and p.values[knob] in xs:
            x = positions[xs.index(p.values[knob])]
            word = "diverged" if p.reason.startswith("diverged") else p.status.lower()
            ax.annotate(f"× {word}", (x, 0.02), xycoords=("data", "axes fraction"), color="crimson",
                        ha="center", fontsize=9, fontweight="bold")


def curves(axes: dict[str, list[str]], points: list[Point]) -> dict[str, Figure]:
    """Error on train / val / test against each swept knob."""
    chosen = best(points)
    figures = {}
    for knob in axes:
        xs = sorted({p.values[knob] for p in points}, key=_sort_key)
        others = [k for k in axes if k != knob]
        if not others:
            fig, ax = plt.subplots(figsize=(6.5, 4.2))
            by_x = {p.values[knob]: p for p in points}
            ys = {s: [by_x[x].error(s) for x in xs] for s in SPLITS}
            positions = _style_axes(ax, knob, xs, [y for v in ys.values() for y in v])
            for s in SPLITS:
                ax.plot(positions, ys[s], "o-", color=COLORS[s], label=f"{s} error")
            _mark(ax, chosen, knob, xs, positions)
            _failed(ax, points, knob, xs, positions)
            ax.set_title(f"generalization: error vs {knob}")
            ax.legend(fontsize=8)
        else:
            fig, panels = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
            groups = sorted({tuple(p.values[k] for k in others) for p in points}, key=lambda g: [_sort_key(v) for v in g])
            all_y = [p.error(s) for p in points for s in SPLITS]
            for ax, s in zip(panels, SPLITS):
                positions = _style_axes(ax, knob, xs, all_y)
                for group in groups:
                    by_x = {p.values[knob]: p for p in points if tuple(p.values[k] for k in others) == group}
                    label = " ".join(f"{k}={v}" for k, v in zip(others, group))
                    ax.plot(positions, [by_x[x].error(s) if x in by_x else math.nan for x in xs], "o-", label=label)
                if s == "test":
                    _mark(ax, chosen, knob, xs, positions)
                _failed(ax, points, knob, xs, positions)
                ax.set_title(f"{s} error vs {knob}")
            panels[-1].legend(fontsize=7)
        fig.tight_layout()
        figures[f"curves_{knob.replace('.', '_')}.png"] = fig
    return figures


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

    from overfit import tracking

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
