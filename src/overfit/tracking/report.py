"""A sweep's comparison, rebuilt from the MLflow store alone, and published on its parent run.

The summary table and the generalization curves are derived from the parent
run and its children, so a sweep that ran on a cluster can be reported on a
laptop: ``overfit report <parent run id>``. The parent's description (MLflow's
note) holds the winner and the table, each point linking to its run; the parent's
own metrics are the winner's under keys of their own (``best/val/error``), never
the points' keys, so sorting the runs table by ``val/error`` ranks points only.

A sweep with a replicate axis (``seed`` with several values) compares cells — a
point's replicates — by mean ± 95 % interval, names the lowest mean and the
one-standard-error choice, and, where the dataset knows its true function,
decomposes each cell's error into bias², variance and noise
(:mod:`overfit.tracking.replicates`).
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from overfit.tracking import replicates
from overfit.tracking.points import SPLITS, Point, best, collect
from overfit.tracking.replicates import Cell
from overfit.tracking.runs import REPLICATE_KEY, TAG_NOTE, TAG_REUSED
from overfit.tracking.store import Store, StoreError, store_for

NOTE_ROWS = 25  # a parent's description: the winner, then at most this many points


@dataclass
class Comparison:
    """What a sweep's report compares: its points, or with replicates its cells, and what the rules chose."""

    axes: dict[str, list[str]]  # the swept keys (the seed left out when it is the replicate axis)
    points: list[Point]  # every run, each point and seed once
    cells: list[Cell] = field(default_factory=list)  # with replicates: one per point
    simpler: dict[str, str] = field(default_factory=dict)
    decomposed: bool = False

    @property
    def replicated(self) -> bool:
        return bool(self.cells)

    @property
    def rows(self) -> list[Point] | list[Cell]:
        return self.cells if self.replicated else self.points

    @cached_property
    def chosen(self) -> Point | Cell | None:
        """The lowest (mean) validation error."""
        return replicates.lowest(self.cells) if self.replicated else best(self.points)

    @cached_property
    def one_se(self) -> Cell | None:
        """With replicates: the simplest cell within one standard error of the lowest mean."""
        return replicates.one_standard_error(self.cells, self.simpler) if self.replicated else None

    @property
    def seeds(self) -> int:
        return max((len(c.replicates) for c in self.cells), default=1)


def compare(store: Store, parent_run_id: str) -> Comparison:
    """The sweep's points from the store, grouped into cells when it has a replicate axis."""
    axes, points = collect(store, parent_run_id)
    if not replicates.replicated(axes):
        return Comparison(axes, points)
    kept, grouped = replicates.cells(axes, points)
    parent = store.call("get_run", parent_run_id)
    comparison = Comparison(kept, points, grouped, replicates.simpler_of(parent))  # type: ignore[arg-type]
    comparison.decomposed = replicates.decompose(grouped)
    return comparison


def _cell(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else ""


def _outcome(p: Point) -> str:
    if p.finished:
        return "finished (reused)" if p.reused else "finished"
    return "diverged" if p.diverged else p.status.lower()


def _cell_outcome(c: Cell) -> str:
    """``20 finished`` or ``18 finished, 2 diverged``."""
    counts: dict[str, int] = {}
    for p in c.replicates:
        word = "finished" if p.finished else _outcome(p)
        counts[word] = counts.get(word, 0) + 1
    return ", ".join(f"{n} {w}" for w, n in sorted(counts.items(), key=lambda kv: kv[0] != "finished"))


def write_runs(axes: dict[str, list[str]], points: list[Point], path: Path) -> Path:
    """Every run in one row: its swept values, errors, status and why it did not finish."""
    columns = [*axes, *(f"{s}/error" for s in SPLITS), "status", "failure", "reused", "run_id", "reason"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for p in points:
            writer.writerow({**p.values, **{f"{s}/error": _cell(p.error(s)) for s in SPLITS}, "status": p.status,
                             "failure": p.failure, "reused": str(p.reused).lower(), "run_id": p.run_id,
                             "reason": p.reason})
    return path


def write_cells(c: Comparison, path: Path) -> Path:
    """One row per point over its replicates: n, mean, sd and the 95 % interval per split; bias², variance, σ²."""
    stats = [f"{s}/error_{x}" for s in SPLITS for x in ("mean", "sd", "ci95_low", "ci95_high")]
    columns = [*c.axes, "n", "replicates", *stats, "bias2", "variance", "noise", "outcome", "run_ids"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for cell in c.cells:
            row: dict[str, str] = {**cell.values, "n": str(cell.n), "replicates": str(len(cell.replicates)),
                                   "outcome": _cell_outcome(cell), "run_ids": " ".join(p.run_id for p in cell.replicates)}
            for s in SPLITS:
                found = cell.summary(s)
                if found is not None:
                    row.update({f"{s}/error_mean": _cell(found.mean), f"{s}/error_sd": _cell(found.sd),
                                f"{s}/error_ci95_low": _cell(found.low), f"{s}/error_ci95_high": _cell(found.high)})
            if cell.decomposition is not None:
                d = cell.decomposition
                row.update({"bias2": _cell(d.bias2), "variance": _cell(d.variance), "noise": _cell(d.noise)})
            writer.writerow(row)
    return path


def write_table(c: Comparison, out: Path) -> list[Path]:
    """summary.csv (every value) and summary.md (the same, readable); with replicates also runs.csv."""
    files = [write_cells(c, out / "summary.csv") if c.replicated else write_runs(c.axes, c.points, out / "summary.csv")]
    if c.replicated:
        files.append(write_runs({**c.axes, REPLICATE_KEY: []}, c.points, out / "runs.csv"))
    (out / "summary.md").write_text(markdown(c) + "\n")
    return [*files, out / "summary.md"]


def _link(label: str, run_id: str, experiment_id: str | None) -> str:
    text = label.replace("|", "/")
    return f"[{text}](#/experiments/{experiment_id}/runs/{run_id})" if experiment_id else text


def headline(c: Comparison, experiment_id: str | None = None) -> list[str]:
    """The winner in a sentence — with replicates its interval, and the one-standard-error choice beside it."""
    chosen = c.chosen
    if chosen is None:
        return []
    link = _link(chosen.label, chosen.run_id, experiment_id)
    if not c.replicated:
        assert isinstance(chosen, Point)
        return [f"**Best by validation error: {link}** — val error {_cell(chosen.error('val'))}, "
                f"test error {_cell(chosen.error('test'))}, train error {_cell(chosen.error('train'))}."]
    assert isinstance(chosen, Cell)
    lines = [f"**Lowest mean validation error: {link}** — val error {chosen.text('val')}, test error "
             f"{chosen.text('test')}, train error {chosen.text('train')} (mean ± 95 % CI half-width over "
             f"n = {chosen.n} seeds)."]
    rule = c.one_se
    found = chosen.summary("val")
    if rule is None:
        lines.append("One-standard-error rule: no swept knob declares which way is simpler, so it does not apply.")
    elif found is not None:
        knobs = ", ".join(f"{'lower' if c.simpler[k] == 'lower' else 'higher'} {k}" for k in c.simpler
                          if k in c.axes)
        same = " — the same point" if rule is chosen else ""
        lines.append(f"**One-standard-error rule: {_link(rule.label, rule.run_id, experiment_id)}**{same} — the "
                     f"simplest point ({knobs}) whose mean val error, {rule.text('val')}, is within one standard "
                     f"error ({_cell(found.se)}) of the lowest; test error {rule.text('test')}.")
    return lines


def decomposition_lines(c: Comparison) -> list[str]:
    """How bias² + variance + σ² compares with the mean test error, and how well the test set can say."""
    done = [cell for cell in c.cells if cell.decomposition is not None and math.isfinite(cell.error("test"))]
    if not done:
        return []
    worst = max(abs(cell.decomposition.total - cell.error("test")) / cell.error("test")  # type: ignore[union-attr]
                for cell in done)
    noise, n_test = done[0].decomposition.noise, done[0].n_test  # type: ignore[union-attr]
    error = replicates.noise_error(n_test, noise)
    test = (f"; its {n_test} test points estimate σ² = {noise:.4g} within ±{error:.2g} (σ²·√(2/n))"
            if n_test and math.isfinite(error) else "")
    return [f"Bias–variance from each point's replicates on the dataset's grid of inputs: bias² + variance + σ² "
            f"is within {100 * worst:.1f} % of the mean test error at every point{test}. Bias² is the unbiased "
            "estimate (the squared error of the replicates' mean overstates it by variance / n): a value below zero "
            "is a bias too small for this many seeds to measure."]


def best_rows(c: Comparison, rows: int | None) -> list:
    """Every row in sweep order, or (more than ``rows``) the ``rows`` finished ones with the lowest val error."""
    shown: list = list(c.rows)
    if rows is None or len(shown) <= rows:
        return shown
    return sorted(shown, key=lambda r: (r.status != "FINISHED", r.error("val") if r.status == "FINISHED" else 0.0))[:rows]


def markdown(c: Comparison, experiment_id: str | None = None, rows: int | None = None) -> str:
    """The winner in a sentence, then the table; with ``experiment_id``, each point links to its run in the UI.

    ``rows``: at most this many points, the best by validation error first (MLflow keeps 8000
    characters of a description; the whole table is ``report/summary.md``).
    """
    if not c.points:
        return "No point of this sweep ended: it was stopped before any did."
    lines = headline(c, experiment_id)
    lines += [""] if lines else []
    failed = [p for p in c.points if not p.finished]
    kind = f"{len(c.cells)} points × {c.seeds} seeds = {len(c.points)} runs" if c.replicated else f"{len(c.points)} points"
    lines.append(f"{kind}, {len(c.points) - len(failed)} finished"
                 + (f", {len(failed)} did not ({', '.join(sorted({_outcome(p) for p in failed}))})" if failed else "")
                 + ".")
    lines += decomposition_lines(c)
    shown = best_rows(c, rows)
    if rows is not None and len(c.rows) > rows:
        lines += ["", f"The {rows} best by validation error; every point is in `report/summary.md`."]
    chosen, rule = c.chosen, c.one_se
    if c.replicated:
        extra = c.decomposed
        lines += ["", "| point | n | train error | val error | test error |" + (" bias² | variance |" if extra else "")
                  + " outcome |", "|---|---|---|---|---|" + ("---|---|" if extra else "") + "---|"]
        for cell in shown:
            mark = (" ★" if cell is chosen else "") + (" ◆" if rule is not None and cell is rule else "")
            d = cell.decomposition
            parts = [_cell(d.bias2), _cell(d.variance)] if extra and d is not None else ["", ""] if extra else []
            lines.append(f"| {_link(cell.label, cell.run_id, experiment_id)}{mark} | {cell.n} | "
                         + " | ".join(cell.text(s) for s in SPLITS) + " | " + "".join(f"{x} | " for x in parts)
                         + f"{_cell_outcome(cell)} |")
        lines += ["", "★ lowest mean validation error" + (", ◆ one-standard-error rule" if rule is not None else "")
                  + "; errors are mean ± 95 % CI half-width over seeds."]
        return "\n".join(lines)
    lines += ["", "| point | train error | val error | test error | outcome |", "|---|---|---|---|---|"]
    for p in shown:
        star = " ★" if chosen is not None and p.run_id == chosen.run_id else ""
        why = f": {p.reason[:80]}" if p.reason and not p.finished else ""
        lines.append(f"| {_link(p.label, p.run_id, experiment_id)}{star} | " + " | ".join(_cell(p.error(s)) for s in SPLITS)
                     + f" | {_outcome(p)}{why.replace('|', '/')} |")
    return "\n".join(lines)


def terminal(c: Comparison, rows: int = 15) -> list[str]:
    """The winner and the table as plain aligned text, for the end of ``overfit train -m``."""
    chosen = c.chosen
    if chosen is None:
        return []
    lines = [f"[overfit] best by {'lowest mean ' if c.replicated else ''}validation error: {chosen.label} — "
             + ", ".join(f"{s} error {chosen.text(s) if isinstance(chosen, Cell) else _cell(chosen.error(s))}"
                         for s in ("val", "test", "train"))
             + (f" (mean ± 95 % CI over {chosen.n} seeds)" if isinstance(chosen, Cell) else "")]
    rule = c.one_se
    if rule is not None:
        lines.append(f"[overfit] one-standard-error rule: {rule.label}"
                     + (" (the same point)" if rule is chosen else f" — val error {rule.text('val')}, "
                        f"test error {rule.text('test')}"))
    table = [["point", *(["n"] if c.replicated else []), *(f"{s} error" for s in SPLITS), "outcome"]]
    for r in best_rows(c, rows):
        mark = (" ★" if r is chosen else "") + (" ◆" if rule is not None and r is rule else "")
        if isinstance(r, Cell):
            table.append([r.label + mark, str(r.n), *(r.text(s) for s in SPLITS), _cell_outcome(r)])
        else:
            table.append([r.label + mark, *(_cell(r.error(s)) for s in SPLITS), _outcome(r)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    if len(c.rows) > rows:
        lines.append(f"  ... the {rows} best by validation error of {len(c.rows)}; every point is in report/summary.md")
    return lines


def write(c: Comparison, out: Path) -> list[Path]:
    """Every report file into ``out``: the table, one curve PNG per knob, and the decomposition where known."""
    from overfit.tracking.curves import curves, history_figure, plt

    out.mkdir(parents=True, exist_ok=True)
    files = write_table(c, out)
    figures = curves(c.axes, c.rows, c.chosen, c.one_se, "lowest mean val" if c.replicated else "best by val")
    if c.decomposed:
        figures.update(decomposition_figures(c))
    figures.update(history_figure(c.points))  # an adaptive search's trials in the order they were proposed
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(out / name)
    return files


def decomposition_figures(c: Comparison) -> dict:
    """bias², variance and noise against each knob, through the lowest-mean point (see :mod:`overfit.tracking.curves`)."""
    from overfit.tracking.curves import bias_variance_figure

    chosen = c.chosen
    return bias_variance_figure(c.axes, c.cells, chosen if isinstance(chosen, Cell) else None, c.seeds)


def metrics_of(c: Comparison) -> dict[str, float]:
    """The parent's own metrics: the winner's under ``best/``, with replicates its interval and the one-SE choice's."""
    found: dict[str, float] = {}
    chosen = c.chosen
    if chosen is None:
        return found
    for s in SPLITS:
        found[f"best/{s}/error"] = chosen.error(s)
        if isinstance(chosen, Cell) and (summary := chosen.summary(s)) is not None and summary.n > 1:
            found[f"best/{s}/error_ci95"] = summary.half_width
            found[f"best/{s}/error_sd"] = summary.sd
    rule = c.one_se
    if rule is not None:
        found.update({f"one_se/{s}/error": rule.error(s) for s in SPLITS})
    return {k: v for k, v in found.items() if math.isfinite(v)}


def publish(store: Store, parent_run_id: str, out: Path | None = None,
            compared: Comparison | None = None) -> Comparison:
    """Build the report from the store and put it on the parent: files under ``report/``, note, winner.

    ``compared``: the sweep's comparison, if the caller has just read it (:func:`compare`).
    """
    from mlflow.entities import Metric, RunTag

    c = compared if compared is not None else compare(store, parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        target = out or Path(tmp)
        write(c, target)
        store.call("log_artifacts", parent_run_id, str(target), "report")
    experiment_id = store.call("get_run", parent_run_id).info.experiment_id  # type: ignore[attr-defined]
    tags = {TAG_NOTE: markdown(c, experiment_id, rows=NOTE_ROWS), "points": str(len(c.points)),
            "failed_points": str(sum(not p.finished for p in c.points))}
    chosen, rule = c.chosen, c.one_se
    if chosen is not None:
        tags.update({"best.point": chosen.label, "best.run_id": chosen.run_id})
    if rule is not None:
        tags.update({"one_se.point": rule.label, "one_se.run_id": rule.run_id})
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in metrics_of(c).items()]
    store.call("log_batch", parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    return c


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
    c = publish(store, args.run_id, args.out)
    print(f"[overfit] report of {len(c.points)} points logged to run {args.run_id} under report/")
    if args.out:
        print(f"[overfit] files in {args.out}")
    return 0
