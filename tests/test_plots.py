"""The pictures a person compares: what must be on them, checked on the figures (no training, no store)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from overfit.data.base import Splits
from overfit.data.synthetic import Line, Polynomial
from overfit.data.tabular import Digits
from overfit.lifecycle import pictures
from overfit.tracking import curves
from overfit.tracking.points import Point, best
from overfit.lifecycle.pictures import picture

ORDER = "features.order"
LAMBDA = "regularizer.strength"
# An order sweep's shape: under-fit at 1-2, the story between 0.02 and 0.1, order 12 blown up.
ERRORS = {1: (0.11, 0.13, 0.125), 2: (0.07, 0.1, 0.099), 3: (0.031, 0.0403, 0.04412), 4: (0.029, 0.041, 0.046),
          5: (0.028, 0.042, 0.047), 6: (0.028, 0.042, 0.048), 7: (0.027, 0.043, 0.049), 8: (0.026, 0.045, 0.05),
          9: (0.022, 0.06, 0.064), 10: (0.021, 0.055, 0.058), 11: (0.02, 0.057, 0.062), 12: (0.016, 0.68, 0.75)}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def point(values: dict[str, str], errors: tuple[float, float, float] | None, failure: str = "") -> Point:
    """A finished point with (train, val, test) errors, or a failed one when ``errors`` is None."""
    metrics = {} if errors is None else {f"{s}/error": e for s, e in zip(("train", "val", "test"), errors)}
    status = "FAILED" if errors is None else "FINISHED"
    name = " ".join(f"{k}={v}" for k, v in values.items())
    return Point(f"run-{name}", name, values, status, failure, "", False, metrics)


def order_sweep() -> list[Point]:
    return [point({ORDER: str(k)}, e) for k, e in ERRORS.items()]


def drawn(fig: Figure) -> Figure:
    fig.canvas.draw()  # tick labels are only formatted at draw time
    return fig


def labelled(ax: Axes, axis: str) -> dict[float, str]:
    """Visible major tick positions inside the view, with their text."""
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    return {t.get_position()[0 if axis == "x" else 1]: t.get_text() for t in ticks
            if t.get_text() and lo <= t.get_position()[0 if axis == "x" else 1] <= hi}


def lines(ax: Axes) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines() if line.get_label().endswith(" error")}


def test_every_integer_order_is_labelled() -> None:
    fig = drawn(curves.curve_figure(order_sweep(), ORDER, [], best(order_sweep())))
    assert set(labelled(fig.axes[0], "x").values()) >= {str(k) for k in range(1, 13)}
    assert_apart(fig.axes[0])


def test_every_swept_lambda_is_labelled_on_its_log_axis() -> None:
    strengths = ["0", "0.0001", "0.001", "0.01", "0.1", "1", "10"]
    points = [point({LAMBDA: v}, (0.02, 0.05 + i / 100, 0.06 + i / 100)) for i, v in enumerate(strengths)]
    ax = drawn(curves.curve_figure(points, LAMBDA, [], best(points))).axes[0]
    assert ax.get_xscale() == "symlog"
    assert set(labelled(ax, "x").values()) >= set(strengths)
    assert_apart(ax)


def assert_apart(ax: Axes) -> None:
    """No two x tick labels overlap on the rendered figure."""
    boxes = sorted((t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))


def test_a_search_trials_get_short_labels_that_do_not_overlap() -> None:
    gen = torch.Generator().manual_seed(1)
    lambdas = (10 ** (torch.rand(12, generator=gen) * 6 - 5)).tolist()  # optuna's 1e-5..10, 17-digit floats
    points = [point({LAMBDA: repr(v)}, (0.02, 0.05 + v / 100, 0.06 + v / 100)) for v in lambdas]
    fig = drawn(curves.curve_figure(points, LAMBDA, [], best(points)))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.xaxis.get_minorticklocs()) >= 12  # each trial marked
    assert all(len(text) <= 12 for text in labelled(ax, "x").values())
    assert_apart(ax)
    winner = best(points).values[LAMBDA]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(f"regularizer.strength={float(winner):.4g} —" in t for t in legend), legend
    assert fig.legends[0].get_window_extent().width <= fig.bbox.width  # wrapped, not cut off at the edges


def test_log_error_axis_labels_the_range_that_matters() -> None:
    ax = drawn(curves.curve_figure(order_sweep(), ORDER, [], best(order_sweep()))).axes[0]
    assert ax.get_yscale() == "log"
    inside = {y: text for y, text in labelled(ax, "y").items() if 0.02 <= y <= 0.1}
    assert len(inside) >= 3, labelled(ax, "y")
    assert {"0.02", "0.05", "0.1"} <= set(inside.values())
    lo, hi = ax.get_ylim()  # fitted to the data, with a margin
    assert 0.008 < lo < 0.016 and 0.75 < hi < 1.5


def test_narrow_errors_get_a_linear_axis_fitted_to_finite_values() -> None:
    fig, ax = plt.subplots()
    curves.y_axis(ax, [0.04, 0.05, 0.06, math.nan, math.inf])
    assert ax.get_yscale() == "linear"
    lo, hi = ax.get_ylim()
    assert 0.03 < lo < 0.04 and 0.06 < hi < 0.07
    drawn(fig)
    assert len(labelled(ax, "y")) >= 3


def test_train_val_test_lines_differ_in_colour_marker_and_style() -> None:
    ax = curves.curve_figure(order_sweep(), ORDER, [], best(order_sweep())).axes[0]
    styled = lines(ax)
    assert set(styled) == {"train error", "val error", "test error"}
    for prop in (lambda l: to_hex(l.get_color()), lambda l: l.get_marker(), lambda l: l.get_linestyle()):
        assert len({prop(line) for line in styled.values()}) == 3


def test_legend_names_the_winner_and_its_value() -> None:
    fig = curves.curve_figure(order_sweep(), ORDER, [], best(order_sweep()))
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "best by val: features.order=3 — test error 0.0441" in texts
    pipeline = curves.curve_figure(order_sweep(), ORDER, [], order_sweep()[3], "selected by val/error")
    assert any("selected by val/error: features.order=4 — test error 0.046" in t.get_text()
               for legend in pipeline.legends for t in legend.get_texts())


def test_two_axis_sweep_one_legend_every_order_labelled_failures_marked() -> None:
    points = [point({ORDER: str(k), LAMBDA: lam}, ERRORS[k]) for lam in ("0", "0.1") for k in (2, 3, 6, 12)]
    points[-1] = point({ORDER: "12", LAMBDA: "0.1"}, None, failure="diverged")
    fig = drawn(curves.curve_figure(points, ORDER, [LAMBDA], best(points)))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2 and len(fig.legends) == 1
    for ax in panels:
        assert set(labelled(ax, "x").values()) >= {"2", "3", "6", "12"}
    assert "diverged" in [t.get_text() for t in panels[1].texts]
    assert sum(len(ax.collections) for ax in panels) == 1  # the star, in the winner's panel only


@torch.no_grad()
def cubic_splits(n_test: int = 200) -> Splits:
    gen = torch.Generator().manual_seed(0)
    x = [2 * torch.rand(n, 1, generator=gen) - 1 for n in (20, 20, n_test)]
    truth = Polynomial(target="cubic").true_function()
    y = [truth(xi) + 0.1 * torch.randn(xi.shape, generator=gen) for xi in x]
    return Splits(x[0], y[0], x[1], y[1], x[2], y[2], "regression", None, None)


def test_true_function_is_known_for_polynomial_and_line_only() -> None:
    cubic = Polynomial(target="cubic").true_function()
    line = Line().true_function()
    assert cubic is not None and line is not None
    assert cubic(torch.tensor([[1.0]])).item() == pytest.approx(1.5 - 0.5 - 1 + 0.3)
    assert line(torch.tensor([[10.0]])).item() == pytest.approx(7.0)  # the line example's test point
    assert Digits().true_function() is None


def test_fitted_curve_draws_the_true_function_when_known_and_titles_the_point() -> None:
    splits = cubic_splits()
    truth = Polynomial(target="cubic").true_function()
    title = "features.order=3 · test error 0.04412"
    key, fig = picture(SimpleNamespace(net=torch.nn.Linear(1, 1)), splits, title, truth)
    ax = fig.axes[0]
    assert key == "fit" and ax.get_title() == title
    (true_line,) = [line for line in ax.get_lines() if line.get_label() == pictures.TRUTH_LABEL]
    xs = torch.as_tensor(true_line.get_xdata()).unsqueeze(1)
    assert torch.allclose(torch.as_tensor(true_line.get_ydata()), truth(xs)[:, 0])
    assert pictures.TRUTH_LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    unknown = pictures.fitted_curve(torch.nn.Linear(1, 1), splits, title)
    assert pictures.TRUTH_LABEL not in [line.get_label() for line in unknown.axes[0].get_lines()]


def test_a_points_title_is_drawn_once_and_reads_the_same_on_both_its_pictures() -> None:
    """The band a TitleBand draws is, pixel for pixel, the title of the whole figure drawn with it."""
    splits = cubic_splits()
    title = "features.order=3 λ=0.0001 lr=0.5 · test error 0.04412"
    net = torch.nn.Linear(1, 1)
    whole = pictures.pixels(pictures.FitCanvas(splits).figure_for(net, title))
    titles = pictures.TitleBand()
    band = titles.pixels(title)
    assert band.shape == (pictures.TITLE_ROWS, 600, 3) and (band < 128).any()  # dark glyphs on white
    assert (band == whole[: pictures.TITLE_ROWS]).all()
    fit = pictures.FitCanvas(splits).pixels(net, band)
    curve = {"train/error": ([1, 2, 10], [1.0, 0.5, 0.1]), "val/error": ([1, 2, 10], [1.0, 0.6, 0.3])}
    learning = pictures.LearningCanvas.over([curve], 10).pixels(curve, band)
    assert (fit[: pictures.TITLE_ROWS] == band).all() and (learning[: pictures.TITLE_ROWS] == band).all()
    other = titles.pixels("features.order=4 · test error 0.05")  # the next point's: the old title is gone
    assert not (other == band).all()
    assert (pictures.TitleBand().pixels("features.order=4 · test error 0.05") == other).all()


def test_confusion_matrix_title_names_the_point_and_test_accuracy() -> None:
    target, predicted = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2]), torch.tensor([0, 1, 1, 1, 2, 2, 0, 2])
    fig = pictures.confusion_matrix(predicted, target, ("a", "b", "c"), "λ=0.1 lr=0.01 · test error 0.25")
    title = fig.axes[0].get_title()
    assert "λ=0.1 lr=0.01" in title and "test accuracy 75.00% (6/8)" in title


def test_a_three_knob_grid_shows_a_slice_through_the_winner_not_sixty_panels() -> None:
    """orders × λ × lr: the curve against lr would need 12 × 5 panels; it shows ≤ 6, at the winner's values."""
    rates, lambdas = ("0.01", "0.1", "0.5"), ("0", "0.0001", "0.01", "1", "10")
    points = [point({ORDER: str(k), LAMBDA: lam, "optimizer.lr": lr},
                    tuple(e * (1 + float(lam)) * (1 + float(lr)) for e in ERRORS[k]))
              for k in ERRORS for lam in lambdas for lr in rates]
    winner = best(points)
    fig = curves.curve_figure(points, "optimizer.lr", [ORDER, LAMBDA], winner)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert 1 <= len(panels) <= curves.MAX_PANELS
    assert all(f"features.order={winner.values[ORDER]}" in ax.get_title() for ax in panels)
