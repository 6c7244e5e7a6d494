"""Generalization curves: train / val / test error against a swept knob, the chosen point starred and named."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from overfit.tracking.points import SPLITS, Point, best, ordered, sort_key

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


def _log_ticks(axis: Axis, lo: float, hi: float) -> None:
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
            _log_ticks(ax.xaxis, min(positive), max(positive))
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
        _log_ticks(ax.yaxis, lo, hi)
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


def _panel(ax: plt.Axes, points: list[Point], knob: str, xs: list[str], all_y: list[float],
           chosen: Point | None, chosen_label: str, title: str) -> None:
    """Train / val / test error of ``points`` against ``knob``: one generalization curve."""
    positions = x_axis(ax, knob, xs)
    by_x = {p.values.get(knob): p for p in points}
    for s in SPLITS:
        ax.plot(positions, [by_x[x].error(s) if x in by_x else math.nan for x in xs], **SPLIT_STYLE[s],
                lw=1.8, markersize=6, label=f"{s} error")
    y_axis(ax, all_y)
    if chosen is not None and any(p.run_id == chosen.run_id for p in points) and chosen.values.get(knob) in xs:
        x = positions[xs.index(chosen.values[knob])]
        ax.axvline(x, color="gold", lw=6, alpha=0.35, zorder=0)
        ax.scatter([x], [chosen.error("test")], marker="*", s=260, color="gold", edgecolor="black", zorder=5,
                   label=f"{chosen_label}: {short(chosen.values)} — test error {chosen.error('test'):.3g}")
    _failed(ax, points, knob, xs, positions)
    ax.set_title(title, fontsize=10)


def curve_figure(points: list[Point], knob: str, others: list[str], chosen: Point | None,
                 chosen_label: str = "best by val", name: str = "generalization",
                 order: list[str] | None = None) -> Figure:
    """Error on the three splits against ``knob``; one panel per combination of the other knobs.

    One legend below the panels, so it never hides a curve; its star entry names the winner.
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
        _panel(ax, points, knob, xs, all_y, chosen, chosen_label, f"{name}: error vs {knob.removesuffix('.name')}")
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
            _panel(ax, members, knob, xs, all_y, chosen, chosen_label, f"{name}: {short(dict(zip(others, group)))}")
        for ax in list(grid.flat)[len(groups):]:
            ax.set_visible(False)
    entries = {label: handle for ax in panels for handle, label in zip(*ax.get_legend_handles_labels())}
    fits_one_row = sum(len(label) + 5 for label in entries) <= 15 * fig.get_figwidth()  # ~15 characters an inch
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", fontsize=8,
               ncols=len(entries) if fits_one_row else 2)
    return fig


def curves(axes: dict[str, list[str]], points: list[Point]) -> dict[str, Figure]:
    """One figure per swept knob, the best point by validation error starred; none for a sweep without points."""
    if not points:
        return {}
    chosen = best(points)
    return {
        f"curves_{knob.replace('.', '_')}.png": curve_figure(points, knob, [k for k in axes if k != knob], chosen,
                                                            order=axes[knob])
        for knob in axes
    }
