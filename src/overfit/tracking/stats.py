"""Statistics for a sweep with a replicate axis: intervals over seeds, the one-SE rule, bias and variance.

Confidence interval. For n replicate values x_1..x_n with mean x̄ and sample standard
deviation s (divisor n - 1), the standard error of the mean is se = s / √n. If the x_i
are independent draws from a normal distribution, (x̄ - μ) / se follows Student's t with
n - 1 degrees of freedom, so x̄ ± t_{1-α/2, n-1} · se covers μ with probability c = 1 - α.
With one value there is no spread to estimate: s, se and the half-width are NaN.

One-standard-error rule (Hastie, Tibshirani & Friedman, ESL §7.10). Let b be the point
with the lowest mean error and se_b its standard error. Every point with mean ≤ mean_b + se_b
is indistinguishable from b at the noise level of the estimate; choose the simplest of them.

Bias-variance decomposition. With R models f̂_r fitted on independent training sets and
evaluated on a grid x_1..x_G where the true function f is known, let f̄ = mean_r f̂_r. Then
    mean_g mean_r (f̂_r(x_g) - f(x_g))² = mean_g (f̄ - f)² + mean_g mean_r (f̂_r - f̄)²,
because the cross term mean_r (f̂_r - f̄) vanishes. The first term overstates the bias: f̄ is
itself an average of R noisy models, E (f̄ - f)² = bias² + variance / R. So the estimates are
    variance = mean_g s²_g   (s²_g: the sample variance over replicates at x_g, divisor R - 1)
    bias²    = mean_g (f̄ - f)² - variance / R,
each unbiased, and their sum is still the replicates' mean squared deviation from f. For test
targets y = f(x) + ε with Var ε = σ², the expected squared test error is bias² + variance + σ².
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Summary:
    """Mean of replicate values with its spread and a Student-t confidence interval."""

    n: int
    mean: float
    sd: float
    se: float
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def text(self, digits: int = 2) -> str:
        """``"0.106 ± 0.025"`` for a report: the half-width to ``digits`` significant digits and the mean to the
        same decimal place (digits past what the interval allows are noise); the mean alone for one value."""
        if self.n == 1:
            return f"{self.mean:.4g}"
        width = self.half_width
        if not (math.isfinite(width) and width > 0):
            return f"{self.mean:.4g} ± {width:.{digits}g}"
        decimals = digits - 1 - math.floor(math.log10(width))
        if 0 <= decimals <= 10 and abs(self.mean) < 1e6:
            return f"{self.mean:.{decimals}f} ± {width:.{decimals}f}"
        return f"{self.mean:.{digits + 1}g} ± {width:.{digits}g}"


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    """Summarize replicates; non-finite values are refused, since averaging them would hide a failed run."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(list(values), dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {x.shape}")
    n = x.size
    if n == 0:
        raise ValueError("cannot summarize no values")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{bad} of {n} values are not finite")
    mean = float(x.mean())
    if n == 1:
        return Summary(n=1, mean=mean, sd=math.nan, se=math.nan, half_width=math.nan)
    from scipy.special import stdtrit

    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    t = float(stdtrit(n - 1, 1.0 - (1.0 - confidence) / 2.0))
    return Summary(n=n, mean=mean, sd=sd, se=se, half_width=t * se)


def lowest_mean(means: Sequence[float]) -> int | None:
    """Index of the lowest finite mean (first on ties), or None when no mean is finite."""
    finite = [i for i, m in enumerate(means) if math.isfinite(m)]
    return min(finite, key=lambda i: means[i]) if finite else None


def one_standard_error(means_and_ses: Sequence[tuple[float, float]], simplicity: Sequence[Any]) -> int | None:
    """Index of the simplest point within one SE of the best: prefers a simpler model the data cannot tell apart."""
    if len(means_and_ses) != len(simplicity):
        raise ValueError(f"{len(means_and_ses)} (mean, se) pairs but {len(simplicity)} simplicity keys")
    means = [m for m, _ in means_and_ses]
    best = lowest_mean(means)
    if best is None:
        return None
    se = means_and_ses[best][1]
    if math.isnan(se):  # one replicate: no spread, so no tolerance
        return best
    threshold = means[best] + se
    within = [i for i, m in enumerate(means) if math.isfinite(m) and m <= threshold]
    return min(within, key=lambda i: simplicity[i])


@dataclass(frozen=True)
class Decomposition:
    """Expected squared error split into squared bias, variance over training sets, and irreducible noise."""

    bias2: float
    variance: float
    noise: float

    @property
    def total(self) -> float:
        return self.bias2 + self.variance + self.noise


def bias_variance(predictions: ArrayLike, truth: ArrayLike, noise_variance: float) -> Decomposition:
    """Decompose the squared error of R replicate models ``predictions[R, G]`` against ``truth[G]``.

    Unbiased estimates (see the module's docstring): bias2 + variance equals the replicates'
    mean squared deviation from the truth exactly; adding ``noise_variance`` (σ²) estimates the
    expected test MSE, up to the test set's sampling error. A single replicate cannot tell bias
    from variance: both are NaN.
    """
    p = np.asarray(predictions, dtype=float)
    f = np.asarray(truth, dtype=float)
    if p.ndim != 2 or f.ndim != 1 or p.shape[1] != f.shape[0]:
        raise ValueError(f"predictions must have shape [R, G] and truth [G], got {p.shape} and {f.shape}")
    if p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"need at least one replicate and one grid point, got shape {p.shape}")
    if not (math.isfinite(noise_variance) and noise_variance >= 0.0):
        raise ValueError(f"noise_variance must be finite and ≥ 0, got {noise_variance}")
    replicates = p.shape[0]
    if replicates == 1:
        return Decomposition(bias2=math.nan, variance=math.nan, noise=float(noise_variance))
    centre = p.mean(axis=0)
    variance = float(np.mean(p.var(axis=0, ddof=1)))
    bias2 = float(np.mean((centre - f) ** 2)) - variance / replicates
    return Decomposition(bias2=bias2, variance=variance, noise=float(noise_variance))
