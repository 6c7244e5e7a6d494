"""The sweep report's statistics: t intervals against scipy.stats, their coverage, the one-SE rule, bias-variance."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from overfit.tracking.stats import (
    Decomposition,
    Summary,
    bias_variance,
    lowest_mean,
    one_standard_error,
    summarize,
)

VALUE_LISTS = [
    [0.1, 0.2],
    [1.0, 2.0, 4.0],
    [0.0423, 0.0451, 0.0398, 0.0440, 0.0419],
    [-3.5, 2.25, 7.0, 0.0, 1e-3, 12.5, -8.0],
    list(np.linspace(-1.0, 3.0, 25) ** 2),
]


@pytest.mark.parametrize("values", VALUE_LISTS)
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_summarize_matches_scipy_t_interval(values: list[float], confidence: float) -> None:
    s = summarize(values, confidence=confidence)
    x = np.asarray(values)
    n = len(values)
    low, high = scipy.stats.t.interval(confidence, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert s.n == n
    assert s.mean == pytest.approx(x.mean(), abs=1e-12)
    assert s.sd == pytest.approx(x.std(ddof=1), abs=1e-12)
    assert s.se == pytest.approx(x.std(ddof=1) / math.sqrt(n), abs=1e-12)
    assert s.low == pytest.approx(low, abs=1e-12)
    assert s.high == pytest.approx(high, abs=1e-12)


def test_lower_confidence_gives_narrower_interval() -> None:
    values = VALUE_LISTS[2]
    assert summarize(values, confidence=0.9).half_width < summarize(values, confidence=0.95).half_width


def test_summarize_accepts_a_generator() -> None:
    assert summarize(v for v in [1.0, 2.0, 4.0]) == summarize([1.0, 2.0, 4.0])


@pytest.mark.parametrize("n", [10, 3])
def test_interval_covers_true_mean_about_95_percent(n: int) -> None:
    rng = np.random.default_rng(20240611 + n)
    true_mean, draws = 1.7, 2000
    covered = 0
    for _ in range(draws):
        s = summarize(rng.normal(true_mean, 0.8, size=n))
        covered += s.low <= true_mean <= s.high
    assert 0.93 <= covered / draws <= 0.97


def test_one_value_has_nan_spread_and_no_interval_text() -> None:
    s = summarize([0.0423])
    assert s.n == 1 and s.mean == 0.0423
    assert math.isnan(s.sd) and math.isnan(s.se) and math.isnan(s.half_width)
    assert math.isnan(s.low) and math.isnan(s.high)
    assert s.text() == "0.0423"


def test_text_formats_mean_and_half_width() -> None:
    s = Summary(n=5, mean=0.042312, sd=0.0035, se=0.0016, half_width=0.0031234)
    assert s.text() == "0.0423 ± 0.0031"  # the mean to the interval's second significant digit
    assert s.text(digits=3) == "0.04231 ± 0.00312"
    assert Summary(n=3, mean=12.5, sd=1, se=1, half_width=4.2).text() == "12.5 ± 4.2"
    assert Summary(n=3, mean=1.175e7, sd=1, se=1, half_width=3.26e7).text() == "1.18e+07 ± 3.3e+07"


def test_no_values_raise() -> None:
    with pytest.raises(ValueError, match="no values"):
        summarize([])


@pytest.mark.parametrize(
    ("bad", "message"),
    [([1.0, math.nan, 2.0, math.inf, 3.0], "2 of 5 values"), ([-math.inf], "1 of 1 values")],
)
def test_non_finite_values_raise_with_their_count(bad: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message} are not finite"):
        summarize(bad)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0])
def test_confidence_outside_unit_interval_raises(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=confidence)


def test_module_imports_neither_scipy_nor_torch() -> None:
    code = "import sys, overfit.tracking.stats; print(sorted(m for m in ('scipy', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# One-SE rule: index i is a point; simplicity[i] lower means simpler.


def test_one_se_picks_simpler_point_within_one_se() -> None:
    points = [(0.30, 0.01), (0.215, 0.02), (0.25, 0.01), (0.20, 0.02), (0.21, 0.01)]
    assert lowest_mean([m for m, _ in points]) == 3
    assert one_standard_error(points, simplicity=[0, 1, 2, 3, 4]) == 1


def test_one_se_returns_best_when_nothing_simpler_is_close() -> None:
    points = [(0.30, 0.01), (0.25, 0.01), (0.20, 0.02), (0.225, 0.01)]
    assert one_standard_error(points, simplicity=[0, 1, 2, 3]) == 2


def test_one_se_follows_simplicity_keys_not_index_order() -> None:
    points = [(0.20, 0.05), (0.22, 0.01), (0.24, 0.01), (0.30, 0.01)]
    assert one_standard_error(points, simplicity=[(2, "c"), (1, "b"), (0, "a"), (-1, "z")]) == 2


def test_one_se_boundary_is_inclusive() -> None:
    points = [(0.5, 0.25), (0.25, 0.25)]
    assert one_standard_error(points, simplicity=[0, 1]) == 0


def test_one_se_skips_non_finite_means() -> None:
    points = [(math.nan, 0.01), (0.30, 0.01), (math.inf, 0.0), (0.20, 0.02)]
    assert one_standard_error(points, simplicity=[0, 1, 2, 3]) == 3
    assert lowest_mean([math.nan, 0.3, -math.inf, 0.2]) == 3


def test_all_nan_means_give_none() -> None:
    points = [(math.nan, 0.01), (math.nan, math.nan)]
    assert one_standard_error(points, simplicity=[0, 1]) is None
    assert lowest_mean([math.nan, math.nan]) is None
    assert lowest_mean([]) is None


def test_ties_take_the_first_index() -> None:
    assert lowest_mean([0.3, 0.2, 0.2, 0.4]) == 1
    points = [(0.3, 0.0), (0.2, 0.0), (0.2, 0.0), (0.4, 0.0)]
    assert one_standard_error(points, simplicity=[5, 1, 1, 0]) == 1
    assert one_standard_error(points, simplicity=[5, 2, 1, 0]) == 2


def test_nan_se_of_best_returns_the_best() -> None:
    points = [(0.2001, 0.01), (0.2, math.nan), (0.21, 0.01)]
    assert one_standard_error(points, simplicity=[0, 1, 2]) == 1


def test_one_se_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="simplicity"):
        one_standard_error([(0.1, 0.01), (0.2, 0.01)], simplicity=[0])


# Bias-variance decomposition.


@pytest.mark.parametrize("shape", [(2, 7), (5, 1), (13, 40)])
def test_bias_plus_variance_is_mean_squared_deviation(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    predictions = rng.normal(size=shape) * 3.0 + 1.0
    truth = rng.normal(size=shape[1])
    d = bias_variance(predictions, truth, noise_variance=0.25)
    assert d.bias2 + d.variance == pytest.approx(np.mean((predictions - truth) ** 2), abs=1e-12)
    assert d.noise == 0.25
    assert d.total == pytest.approx(np.mean((predictions - truth) ** 2) + 0.25, abs=1e-12)
    assert d.variance == pytest.approx(np.mean(predictions.var(axis=0, ddof=1)), abs=1e-12)
    centre = predictions.mean(axis=0)
    assert d.bias2 == pytest.approx(np.mean((centre - truth) ** 2) - d.variance / shape[0], abs=1e-12)


def test_one_replicate_cannot_tell_bias_from_variance() -> None:
    d = bias_variance(np.ones((1, 7)), np.zeros(7), noise_variance=0.25)
    assert math.isnan(d.bias2) and math.isnan(d.variance) and d.noise == 0.25


def test_the_estimates_are_unbiased_over_many_draws() -> None:
    """Five replicates of f + b + N(0, s²): the plug-in bias² would average b² + s²/5; these average b² and s²."""
    rng = np.random.default_rng(5)
    truth, b, s = np.linspace(-1.0, 1.0, 10), 0.3, 0.8
    draws = [bias_variance(truth + b + rng.normal(0.0, s, size=(5, 10)), truth, 0.0) for _ in range(4000)]
    assert np.mean([d.bias2 for d in draws]) == pytest.approx(b**2, abs=0.01)
    assert np.mean([d.variance for d in draws]) == pytest.approx(s**2, rel=0.02)


def test_constant_offset_is_pure_bias() -> None:
    truth = np.sin(np.linspace(0.0, 3.0, 30))
    c = 0.7
    d = bias_variance(np.tile(truth + c, (8, 1)), truth, noise_variance=0.0)
    assert d.bias2 == pytest.approx(c**2, abs=1e-12)
    assert d.variance == pytest.approx(0.0, abs=1e-12)
    assert d == Decomposition(bias2=d.bias2, variance=d.variance, noise=0.0)


def test_independent_zero_mean_noise_is_pure_variance() -> None:
    rng = np.random.default_rng(11)
    replicates, grid, s = 2000, 50, 0.5
    truth = np.cos(np.linspace(0.0, 4.0, grid))
    d = bias_variance(truth + rng.normal(0.0, s, size=(replicates, grid)), truth, noise_variance=0.1)
    # variance estimates s² with relative sd √(2/(R·G)) ≈ 0.5 %; allow 5 %.
    assert d.variance == pytest.approx(s**2, rel=0.05)
    # bias² estimates 0: within a few of its standard errors, about s²·√(2/G)/R.
    assert abs(d.bias2) < 5 * s**2 * math.sqrt(2 / grid) / replicates


@pytest.mark.parametrize(
    ("predictions", "truth"),
    [
        (np.zeros((3, 4)), np.zeros(5)),
        (np.zeros(4), np.zeros(4)),
        (np.zeros((3, 4)), np.zeros((3, 4))),
        (np.zeros((0, 4)), np.zeros(4)),
        (np.zeros((3, 0)), np.zeros(0)),
    ],
)
def test_bad_shapes_raise(predictions: np.ndarray, truth: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"shape .*\("):
        bias_variance(predictions, truth, noise_variance=0.0)


@pytest.mark.parametrize("noise", [-0.1, math.nan, math.inf])
def test_bad_noise_variance_raises(noise: float) -> None:
    with pytest.raises(ValueError, match="noise_variance"):
        bias_variance(np.zeros((2, 3)), np.zeros(3), noise_variance=noise)
