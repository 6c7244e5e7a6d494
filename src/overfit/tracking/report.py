"""A sweep's comparison, rebuilt from the MLflow store alone, and published on its parent run.

The summary table and the generalization curves are derived from the parent
run and its children, so a sweep that ran on a cluster can be reported on a
laptop: ``overfit report <parent run id>``. The parent's description (MLflow's
note) holds the table with the winner, each point linking to its run; the
parent's own ``train/error``, ``val/error`` and ``test/error`` are the winner's.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

from overfit.tracking.points import SPLITS, Point, best, collect
from overfit.tracking.runs import TAG_NOTE, TAG_REUSED
from overfit.tracking.store import Store, StoreError, store_for


NOTE_ROWS = 25  # a parent's description: the winner, then at most this many points


def _cell(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else ""


def _outcome(p: Point) -> str:
    if p.finished:
        return "finished (reused)" if p.reused else "finished"
    return "diverged" if p.diverged else p.status.lower()


def write_table(axes: dict[str, list[str]], points: list[Point], out: Path) -> list[Path]:
    """summary.csv (every value) and summary.md (the same, readable): one row per point."""
    columns = [*axes, *(f"{s}/error" for s in SPLITS), "status", "failure", "reused", "run_id", "reason"]
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for p in points:
            writer.writerow({**p.values, **{f"{s}/error": _cell(p.error(s)) for s in SPLITS}, "status": p.status,
                             "failure": p.failure, "reused": str(p.reused).lower(), "run_id": p.run_id,
                             "reason": p.reason})
    (out / "summary.md").write_text(markdown(axes, points) + "\n")
    return [out / "summary.csv", out / "summary.md"]


def markdown(axes: dict[str, list[str]], points: list[Point], experiment_id: str | None = None,
             rows: int | None = None) -> str:
    """The winner in a sentence, then the table; with ``experiment_id``, each point links to its run in the UI.

    ``rows``: at most this many points, the best by validation error first (MLflow keeps 8000
    characters of a description; the whole table is ``report/summary.md``).
    """
    chosen = best(points)

    def link(p: Point) -> str:
        text = p.label.replace("|", "/")
        return f"[{text}](#/experiments/{experiment_id}/runs/{p.run_id})" if experiment_id else text

    lines = []
    if not points:
        return "No point of this sweep ended: it was stopped before any did."
    if chosen is not None:
        lines += [f"**Best by validation error: {link(chosen)}** — val error {_cell(chosen.error('val'))}, "
                  f"test error {_cell(chosen.error('test'))}, train error {_cell(chosen.error('train'))}.", ""]
    failed = [p for p in points if not p.finished]
    lines.append(f"{len(points)} points, {len(points) - len(failed)} finished"
                 + (f", {len(failed)} did not ({', '.join(sorted({_outcome(p) for p in failed}))})" if failed else "")
                 + ".")
    shown = points
    if rows is not None and len(points) > rows:
        ranked = sorted(points, key=lambda p: (not p.finished, p.error("val") if p.finished else 0.0))
        shown = ranked[:rows]
        lines += ["", f"The {rows} best by validation error; every point is in `report/summary.md`."]
    lines += ["", "| point | train error | val error | test error | outcome |", "|---|---|---|---|---|"]
    for p in shown:
        star = " ★" if chosen is not None and p.run_id == chosen.run_id else ""
        why = f": {p.reason[:80]}" if p.reason and not p.finished else ""
        lines.append(f"| {link(p)}{star} | " + " | ".join(_cell(p.error(s)) for s in SPLITS)
                     + f" | {_outcome(p)}{why.replace('|', '/')} |")
    return "\n".join(lines)


def write(axes: dict[str, list[str]], points: list[Point], out: Path) -> list[Path]:
    """Every report file into ``out``: the table and one curve PNG per knob."""
    from overfit.tracking.curves import curves, plt

    out.mkdir(parents=True, exist_ok=True)
    files = write_table(axes, points, out)
    for name, fig in curves(axes, points).items():
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(out / name)
    return files


def publish(store: Store, parent_run_id: str, out: Path | None = None) -> tuple[dict[str, list[str]], list[Point]]:
    """Build the report from the store and put it on the parent: files under ``report/``, note, winner."""
    from mlflow.entities import Metric, RunTag

    axes, points = collect(store, parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        target = out or Path(tmp)
        write(axes, points, target)
        store.call("log_artifacts", parent_run_id, str(target), "report")
    experiment_id = store.call("get_run", parent_run_id).info.experiment_id  # type: ignore[attr-defined]
    tags = {TAG_NOTE: markdown(axes, points, experiment_id, rows=NOTE_ROWS), "points": str(len(points)),
            "failed_points": str(sum(not p.finished for p in points))}
    metrics = []
    chosen = best(points)
    if chosen is not None:
        tags.update({"best.point": chosen.label, "best.run_id": chosen.run_id})
        now = int(time.time() * 1000)
        metrics = [Metric(f"{s}/error", chosen.error(s), now, 0) for s in SPLITS if math.isfinite(chosen.error(s))]
    store.call("log_batch", parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    return axes, points


def main(argv: list[str]) -> int:
    """``overfit report RUN_ID [--out DIR] [--tracking-uri URI]``"""
    parser = argparse.ArgumentParser(prog="overfit report", description="Rebuild a sweep's table and curves "
                                     "from the store and log them on its parent run.")
    parser.add_argument("run_id", help="the sweep's parent run id")
    parser.add_argument("--out", type=Path, default=None, help="also write the report files here")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    store = store_for(args.tracking_uri)
    try:
        parent = store.call("get_run", args.run_id)
    except StoreError as exc:
        raise StoreError(f"no run {args.run_id!r} in {store.uri}") from exc
    tags = parent.data.tags  # type: ignore[attr-defined]
    if not any(k.startswith("sweep.") for k in parent.data.params) and not any(k.startswith(TAG_REUSED) for k in tags):  # type: ignore[attr-defined]
        raise StoreError(f"run {args.run_id} ({tags.get('mlflow.runName', '?')}) is not a sweep's parent run: "
                         "overfit report takes the id a sweep printed")
    _, points = publish(store, args.run_id, args.out)
    print(f"[overfit] report of {len(points)} points logged to run {args.run_id} under report/")
    if args.out:
        print(f"[overfit] files in {args.out}")
    return 0
