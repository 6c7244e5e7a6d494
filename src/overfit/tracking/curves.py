"""Generalization curves: train / val / test error against a swept knob, the chosen point starred and named.

The rows drawn are a sweep's points, or with replicates its cells (:class:`overfit.tracking.replicates.Cell`):
then each line is the mean over seeds inside its shaded 95 % interval, and the one-standard-error
choice is marked beside the lowest mean.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from overfit.tracking.points import SPLITS, Point, ordered, sort_key

if TYPE_CHECKING:
    from overfit.tracking.replicates import Cell

# Okabe-Ito colours (safe for colour-blind readers), and a marker and a dash per split as well,
# so the three lines stay apart in grey print and where they overlap.
SPLIT_STYLE: dict[str, dict[str, str]] = {
    "train": {"color": "#0072B2", "marker": "o", "linestyle": ":"},
    "val": {"color": "#E69F00", "marker": "s", "linestyle": "--"},
    "test": {"color": "#009E73", "marker": "^", "linestyle": "-"},
}
MAX_TICKS = 20  # a knob with more values than this gets a locator's ticks, not one label per value
LOG_RATIO = 10  # errors spanning more than this factor are drawn on a log axis


MAX_PANELS = 6  # beyond this many combinations of the other knobs, a figure shows a slice through the winner


def number(value: float, _pos: int | None = None) -> str:
    """A tick's text a person reads at a glance: 0.02, 0.1398, 12, 10⁻⁶ — never 2×10⁻² for 0.02."""
    if value == 0 or not math.isfinite(value) or 1e-4 <= abs(value) < 1e5:
        return f"{value:.4g}"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = round(value / 10**exponent, 3)
    return f"$10^{{{exponent}}}$" if mantissa == 1 else f"${mantissa:g}\\times10^{{{exponent}}}$"


def short(values: dict[str, str]) -> str:
    """``features.order=3 regularizer.strength=0.1398``: a search's trial values need not print 17 digits."""
    text = {k: f"{float(v):.4g}" if sort_key(str(v))[0] == 0 else v for k, v in values.items()}
    return " ".join(f"{k.removesuffix('.name')}={v}" for k, v in text.items())


def log_ticks(axis: Axis, lo: float, hi: float) -> None:
    """Labels 0.02, 0.05, 0.1, 0.2 where a plain log axis would label only 0.01, 0.1 and 1."""
    if math.log10(hi / lo) <= 3:
        axis.set_major_locator(LogLocator(10, subs=(1, 2, 5), numticks=50))
    axis.set_major_formatter(FuncFormatter(number))
    axis.set_minor_formatter(NullFormatter())


def x_axis(ax: plt.Axes, knob: str, xs: list[str]) -> list[float]:
    """Positions for the knob's values; log scale when they span decades (λ, lr).

    A grid's values (1..12, 0 / 1e-4 / ... / 10) are each labelled; a search's
    trials (0.04430375...) are marked by minor ticks under round-number labels.
    """
    if not all(sort_key(v)[0] == 0 for v in xs):
        positions = [float(i) for i in range(len(xs))]
        ax.set_xticks(positions, xs)
        ax.set_xlabel(knob.removesuffix(".name"))
        return positions
    positions = [float(v) for v in xs]
    positive = [v for v in positions if v > 0]
    if positive and max(positive) / min(positive) >= 20:
        if len(positive) == len(positions):
            ax.set_xscale("log")
            log_ticks(ax.xaxis, min(positive), max(positive))
        else:  # λ = 0 has no place on a log axis: linear near zero
            ax.set_xscale("symlog", linthresh=min(positive))
    if len(positions) <= MAX_TICKS and all(float(f"{v:.4g}") == v for v in positions):
        labels = [number(v) for v in positions]
        crowded = len(labels) > 8 and max(map(len, labels)) > 4
        ax.set_xticks(positions, labels, rotation=35 if crowded else 0, ha="right" if crowded else "center")
    else:
        if all(v.is_integer() for v in positions):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(number))
        ax.set_xticks(positions, minor=True)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(knob.removesuffix(".name"))
    return positions


def y_axis(ax: plt.Axes, ys: list[float], label: str = "error") -> None:
    """Limits fitted to the finite values; a log scale with 1-2-5 labels when they span a decade or more.

    An over-fitted order-12 model's error can be 30 times the best one's; on a linear
    axis the interesting part (0.02-0.1) would be a flat line at the bottom.
    """
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.grid(which="minor", axis="y", alpha=0.12)
    finite = [y for y in ys if math.isfinite(y)]
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    if lo > 0 and hi / lo > LOG_RATIO:
        ax.set_yscale("log")
        log_ticks(ax.yaxis, lo, hi)
        margin = (hi / lo) ** 0.06
        ax.set_ylim(lo / margin, hi * margin)
    else:
        margin = 0.08 * ((hi - lo) or abs(hi) or 1.0)
        ax.set_ylim(lo - margin, hi + margin)


def _failed(ax: plt.Axes, points: list[Point], knob: str, xs: list[str], positions: list[float]) -> None:
    """Diverged or failed points: a crimson × on the x-axis with the word."""
    for n, p in enumerate(q for q in points if q.status != "FINISHED" and q.values.get(knob) in xs):
        x = positions[xs.index(p.values[knob])]
        word = "diverged" if p.diverged else p.status.lower()
        ax.plot([x], [0.03], "x", color="crimson", markersize=11, mew=2.5, transform=ax.get_xaxis_transform())
        ax.annotate(word, (x, 0.07 + 0.05 * (n % 2)), xycoords=("data", "axes fraction"), color="crimson",
                    ha="center", fontsize=8, fontweight="bold")


def _panel(ax: plt.Axes, points: list[Any], knob: str, xs: list[str], all_y: list[float],
           chosen: Any, chosen_label: str, title: str, second: Any = None) -> None:
    """Train / val / test error of ``points`` (or cells: mean and 95 % band) against ``knob``."""
    positions = x_axis(ax, knob, xs)
    by_x = {p.values.get(knob): p for p in points}
    bands = {s: [by_x[x].band(s) if x in by_x and hasattr(by_x[x], "band") else None for x in xs] for s in SPLITS}
    # The axis fits the means and the bands' upper ends; a band reaching below zero (a t interval of skewed
    # errors) is cut at the axis, so it never forces a log axis to linear.
    y_axis(ax, [*all_y, *(b[1] for s in SPLITS for b in bands[s] if b is not None)])
    floor = ax.get_ylim()[0]
    banded = False
    for s in SPLITS:
        ax.plot(positions, [by_x[x].error(s) if x in by_x else math.nan for x in xs], **SPLIT_STYLE[s],
                lw=1.8, markersize=6, label=f"{s} error" + (" (mean)" if hasattr(points[0], "band") else ""))
        if any(b is not None for b in bands[s]):
            banded = True
            ax.fill_between(positions, [max(b[0], floor) if b else math.nan for b in bands[s]],
                            [b[1] if b else math.nan for b in bands[s]], color=SPLIT_STYLE[s]["color"], alpha=0.18,
                            lw=0)
    if banded:
        ax.fill_between([], [], [], color="grey", alpha=0.25, lw=0, label="95 % interval of the mean")
    inside = {p.run_id for p in points}
    if chosen is not None and chosen.run_id in inside and chosen.values.get(knob) in xs:
        x = positions[xs.index(chosen.values[knob])]
        ax.axvline(x, color="gold", lw=6, alpha=0.35, zorder=0)
        ax.scatter([x], [chosen.error("test")], marker="*", s=260, color="gold", edgecolor="black", zorder=5,
                   label=f"{chosen_label}: {short(chosen.values)} — test error {chosen.error('test'):.3g}")
    if second is not None and second is not chosen and second.run_id in inside and second.values.get(knob) in xs:
        x = positions[xs.index(second.values[knob])]
        ax.scatter([x], [second.error("test")], marker="D", s=110, color="white", edgecolor="black", lw=1.5,
                   zorder=5, label=f"one-standard-error rule: {short(second.values)} — test error "
                                   f"{second.error('test'):.3g}")
    _failed(ax, points, knob, xs, positions)
    ax.set_title(title, fontsize=10)


def curve_figure(points: list[Any], knob: str, others: list[str], chosen: Any,
                 chosen_label: str = "best by val", name: str = "generalization",
                 order: list[str] | None = None, second: Any = None) -> Figure:
    """Error on the three splits against ``knob``; one panel per combination of the other knobs.

    ``points``: a sweep's points, or its cells (mean ± band). One legend below the panels, so it
    never hides a curve; its star entry names the winner, a diamond the one-SE choice (``second``).
    """
    xs = ordered([p.values[knob] for p in points if knob in p.values], order)
    if len({tuple(p.values.get(k) for k in others) for p in points}) > MAX_PANELS and chosen is not None:
        # Too many combinations to read: a slice through the winner, one panel per value of one knob at most.
        keep = next((k for k in others if len({p.values.get(k) for p in points}) <= MAX_PANELS), None)
        fixed = {k: chosen.values.get(k, "?") for k in others if k != keep}
        points = [p for p in points if all(p.values.get(k) == v for k, v in fixed.items())]
        others = [keep] if keep is not None else []
        name = f"{name} at the best point's {short(fixed)}"
    all_y = [p.error(s) for p in points for s in SPLITS]
    if not others:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
        _panel(ax, points, knob, xs, all_y, chosen, chosen_label, f"{name}: error vs {knob.removesuffix('.name')}",
               second)
        panels = [ax]
    else:
        groups = list(dict.fromkeys(tuple(p.values.get(k) for k in others) for p in points))
        groups.sort(key=lambda g: [sort_key(v or "") for v in g])
        cols = 2 if len(groups) == 4 else min(len(groups), 3)  # 2×2 rather than 3 + 1
        rows = math.ceil(len(groups) / cols)
        fig, grid = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows + 0.6), sharey=True, squeeze=False,
                                 layout="constrained")
        panels = list(grid.flat)[: len(groups)]
        for ax, group in zip(panels, groups):
            members = [p for p in points if tuple(p.values.get(k) for k in others) == group]
            _panel(ax, members, knob, xs, all_y, chosen, chosen_label, f"{name}: {short(dict(zip(others, group)))}",
                   second)
        for ax in list(grid.flat)[len(groups):]:
            ax.set_visible(False)
    entries = {label: handle for ax in panels for handle, label in zip(*ax.get_legend_handles_labels())}
    fits_one_row = sum(len(label) + 5 for label in entries) <= 15 * fig.get_figwidth()  # ~15 characters an inch
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", fontsize=8,
               ncols=len(entries) if fits_one_row else 2)
    return fig


def curves(axes: dict[str, list[str]], rows: list[Any], chosen: Any, second: Any = None,
           label: str = "best by val") -> dict[str, Figure]:
    """One figure per swept knob (rows: points, or cells), ``chosen`` starred, ``second`` (the one-SE choice)
    marked; none for a sweep without points."""
    if not rows:
        return {}
    return {
        f"curves_{knob.replace('.', '_')}.png": curve_figure(rows, knob, [k for k in axes if k != knob], chosen,
                                                            label, order=axes[knob], second=second)
        for knob in axes
    }


DECOMPOSITION_STYLE: dict[str, dict[str, Any]] = {
    "bias²": {"color": "#0072B2", "marker": "o", "linestyle": "-"},
    "variance": {"color": "#D55E00", "marker": "s", "linestyle": "-"},
    "σ² (noise)": {"color": "#666666", "marker": "", "linestyle": ":"},
    "bias² + variance + σ²": {"color": "black", "marker": "", "linestyle": "--"},
}


def bias_variance_figure(axes: dict[str, list[str]], cells: list[Cell], chosen: Cell | None,
                         seeds: int) -> dict[str, Figure]:
    """Per swept knob: bias², variance, σ² and their sum against the knob, beside the mean test error and its
    band, through the ``chosen`` cell's values of the other knobs."""
    figures = {}
    for knob in axes:
        others = {k: chosen.values[k] for k in axes if k != knob} if chosen is not None else {}
        rows = [cell for cell in cells if all(cell.values[k] == v for k, v in others.items())
                and cell.decomposition is not None]
        if not rows:
            continue
        xs = ordered([cell.values[knob] for cell in rows], axes[knob])
        by_x = {cell.values[knob]: cell for cell in rows}
        fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
        positions = x_axis(ax, knob, xs)
        parts = {"bias²": lambda d: d.bias2, "variance": lambda d: d.variance, "σ² (noise)": lambda d: d.noise,
                 "bias² + variance + σ²": lambda d: d.total}
        ys: list[float] = []
        for name, part in parts.items():
            values = [part(by_x[x].decomposition) for x in xs]
            ys += values
            ax.plot(positions, values, lw=1.8, markersize=6, label=name, **DECOMPOSITION_STYLE[name])
        test = [by_x[x].error("test") for x in xs]
        bands = [by_x[x].band("test") for x in xs]
        ax.plot(positions, test, lw=1.4, markersize=6, label="mean test error", **SPLIT_STYLE["test"])
        if any(b is not None for b in bands):
            ax.fill_between(positions, [b[0] if b else math.nan for b in bands], [b[1] if b else math.nan for b in bands],
                            color=SPLIT_STYLE["test"]["color"], alpha=0.18, lw=0, label="its 95 % interval")
        y_axis(ax, [y for y in [*ys, *test] if y > 0], "squared error")
        fixed = f" at {short(others)}" if others else ""
        ax.set_title(f"bias–variance over {seeds} seeds: error vs {knob.removesuffix('.name')}{fixed}", fontsize=10)
        fig.legend(loc="outside lower center", fontsize=8, ncols=3)
        figures[f"bias_variance_{knob.replace('.', '_')}.png"] = fig
    return figures


HISTORY_FILE = "optimization_history.png"


def history_figure(points: list[Point], metric: str = "val/error") -> dict[str, Figure]:
    """An adaptive search's progress: each trial's ``metric`` in proposal order and the best so far (Optuna's
    optimization-history plot). Trials that did not finish are crosses at the top; none without trials."""
    trials = sorted((p for p in points if p.trial is not None), key=lambda p: p.trial)
    if not trials:
        return {}
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    xs = [p.trial for p in trials]
    ys = [p.metric(metric) if p.finished else math.nan for p in trials]
    finite = [y for y in ys if math.isfinite(y)]
    ax.plot(xs, ys, "o", color=SPLIT_STYLE["val"]["color"], alpha=0.7, label=f"trial's {metric}")
    best, running = math.inf, []
    for y in ys:
        best = min(best, y) if math.isfinite(y) else best
        running.append(best if math.isfinite(best) else math.nan)
    ax.step(xs, running, where="post", color="black", label="best so far")
    failed = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
    if failed and finite:
        ax.plot(failed, [max(finite)] * len(failed), "x", color="#D55E00", label="did not finish")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    y_axis(ax, finite, metric)
    ax.set_title(f"optimization history: best {metric} {number(min(finite)) if finite else '—'}")
    ax.legend(loc="best", fontsize="small")
    return {HISTORY_FILE: fig}
