"""Feature maps: counts, bases that span the same space, batch-by-batch application, validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf

from overfit.maths import features
from overfit.errors import ConfigError
from overfit.maths.features import build_features, polynomial_terms

f64 = torch.float64


def poly(order: int, basis: str = "legendre") -> OmegaConf:
    return OmegaConf.create({"name": "polynomial", "order": order, "basis": basis})


@pytest.mark.parametrize(("d", "k"), [(1, 0), (1, 1), (1, 12), (2, 2), (3, 3), (5, 2), (4, 4)])
@pytest.mark.parametrize("basis", features.BASES)
def test_polynomial_counts(d: int, k: int, basis: str) -> None:
    x = torch.randn(100, d, dtype=f64)  # enough points that whitening keeps every direction
    feature_map = build_features(poly(k, basis), x)
    assert feature_map.out_features == polynomial_terms(d, k) - 1 == math.comb(d + k, k) - 1
    assert feature_map(x).shape == (len(x), feature_map.out_features)


def test_monomials_are_every_product_of_degree_one_to_k() -> None:
    x = torch.randn(5, 3, dtype=f64)
    combos = [c for t in range(1, 4) for c in itertools.combinations_with_replacement(range(3), t)]
    expected = torch.stack([x[:, list(c)].prod(1) for c in combos], dim=1)
    torch.testing.assert_close(build_features(poly(3, "monomial"), x)(x), expected)


def test_legendre_univariate_is_the_normalised_legendre_polynomials() -> None:
    x = torch.linspace(-1, 1, 9, dtype=f64)[:, None]  # already on [−1, 1]: u = x
    u = x[:, 0]
    p1, p2, p3 = u, (3 * u**2 - 1) / 2, (5 * u**3 - 3 * u) / 2
    expected = torch.stack([math.sqrt(3) * p1, math.sqrt(5) * p2, math.sqrt(7) * p3], 1)
    torch.testing.assert_close(build_features(poly(3), x)(x), expected)


@pytest.mark.parametrize(("d", "k"), [(1, 3), (1, 12), (2, 3)])
def test_legendre_and_monomial_span_the_same_space(d: int, k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(60, d, generator=gen, dtype=f64) * 2 - 0.5
    y = torch.sin(3 * x).sum(1, keepdim=True) + 0.1 * torch.randn(60, 1, generator=gen, dtype=f64)
    x_new = torch.rand(20, d, generator=gen, dtype=f64) * 2 - 0.5

    def fitted(basis: str) -> torch.Tensor:
        phi = build_features(poly(k, basis), x)
        design = torch.cat([torch.ones(len(x), 1, dtype=f64), phi(x)], 1)  # the bias column
        coef = torch.linalg.lstsq(design, y, driver="gelsd").solution
        return torch.cat([torch.ones(len(x_new), 1, dtype=f64), phi(x_new)], 1) @ coef

    torch.testing.assert_close(fitted("legendre"), fitted("monomial"), atol=1e-6, rtol=1e-6)


def test_legendre_is_better_conditioned_at_order_12() -> None:
    x = torch.rand(50, 1, dtype=f64) * 4 + 1  # inputs on [1, 5]: monomials up to x^12 are nearly collinear
    cond = {b: torch.linalg.cond(build_features(poly(12, b), x)(x)).item() for b in ("legendre", "monomial")}
    assert cond["legendre"] < 1e-6 * cond["monomial"]


def test_legendre_scaling_is_from_the_training_set_and_moves_with_the_module() -> None:
    x_train = torch.tensor([[0.0, 5.0], [10.0, 5.0]])  # the second input is constant
    feature_map = build_features(poly(1), x_train)
    out = feature_map(torch.tensor([[0.0, 5.0], [5.0, 5.0], [10.0, 5.0]]))
    torch.testing.assert_close(out / math.sqrt(3), torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))
    assert {"low", "high"} <= set(feature_map.state_dict())
    assert not any(name.startswith(("base", "column")) for name in feature_map.state_dict())


@pytest.mark.parametrize("cfg", [poly(3), poly(2, "monomial"), OmegaConf.create({"name": "identity"})])
def test_batch_by_batch_equals_whole(cfg: OmegaConf) -> None:
    x = torch.randn(40, 3, dtype=f64)
    feature_map = build_features(cfg, x)
    whole = feature_map(x)
    torch.testing.assert_close(torch.cat([feature_map(b) for b in x.split(7)]), whole)


def test_order_two_on_mnist_sized_inputs_works_batch_by_batch() -> None:
    x_train = torch.rand(100, 1, 28, 28)
    feature_map = build_features(poly(2), x_train)
    assert feature_map.out_features == 785 * 786 // 2 - 1 == 308_504
    # Only index structures of size out_features live on the module, nothing per example.
    stored = sum(t.numel() for t in feature_map.buffers())
    assert stored < 3 * feature_map.out_features
    out = feature_map(x_train[:8])
    assert out.shape == (8, 308_504) and torch.isfinite(out).all()


def test_identity_flattens() -> None:
    x = torch.randn(4, 1, 2, 3)
    feature_map = build_features(OmegaConf.create({"name": "identity"}), x)
    assert feature_map.out_features == 6
    torch.testing.assert_close(feature_map(x), x.reshape(4, 6))


def test_order_zero_leaves_only_the_bias() -> None:
    x = torch.randn(4, 2)
    feature_map = build_features(poly(0), x)
    assert feature_map.out_features == 0 and feature_map(x).shape == (4, 0)


def test_seed_transform_separates_xor() -> None:
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    feature_map = build_features(OmegaConf.create({"name": "seed_transform"}), corners)
    assert feature_map.out_features == 2
    torch.testing.assert_close(feature_map(corners), torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.4, 0.4]]))


@pytest.mark.parametrize(
    ("cfg", "key", "needle"),
    [
        ({"name": "polynomial", "order": -1, "basis": "legendre"}, "features.order", "≥ 0"),
        ({"name": "polynomial", "order": 2.5, "basis": "legendre"}, "features.order", "integer"),
        ({"name": "polynomial", "order": 2, "basis": "chebyshev"}, "features.basis", "legendre, monomial"),
        ({"name": "fourier"}, "features", "identity, polynomial, seed_transform"),
    ],
)
def test_check_rejects_bad_configs(cfg: dict, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        features.check(OmegaConf.create(cfg))
    assert caught.value.key == key and needle in str(caught.value)


def test_seed_transform_needs_two_inputs() -> None:
    with pytest.raises(ConfigError) as caught:
        build_features(OmegaConf.create({"name": "seed_transform"}), torch.randn(4, 3))
    assert caught.value.key == "features" and "d=3" in str(caught.value)


def test_absurd_feature_counts_are_refused_before_allocating() -> None:
    with pytest.raises(ConfigError) as caught:
        build_features(poly(3), torch.rand(2, 784))
    assert caught.value.key == "features.order"


def test_basis_defaults_to_orthonormal_legendre() -> None:
    feature_map = build_features(OmegaConf.create({"name": "polynomial", "order": 2}), torch.randn(50, 2))
    assert isinstance(feature_map, features.Orthonormal) and feature_map.polynomial.basis == "legendre"


def test_orthonormal_basis_is_white_on_the_training_set_and_spans_the_same_space() -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 1, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x)
    ortho = build_features(poly(12, "orthonormal"), x)
    phi = ortho(x)
    torch.testing.assert_close(phi.T @ phi / len(x), torch.eye(ortho.out_features, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(phi.mean(0), torch.zeros(ortho.out_features, dtype=torch.float64), atol=1e-10, rtol=0)

    def fitted(basis: str) -> torch.Tensor:
        f = build_features(poly(12, basis), x)
        design = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), f(x)], 1)
        grid = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(1)
        coef = torch.linalg.lstsq(design, y).solution
        return torch.cat([torch.ones(50, 1, dtype=torch.float64), f(grid)], 1) @ coef

    torch.testing.assert_close(fitted("orthonormal"), fitted("legendre"), atol=1e-6, rtol=1e-6)


def test_orthonormal_drops_directions_the_training_set_cannot_see() -> None:
    x = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(1)
    ortho = build_features(poly(12, "orthonormal"), x)
    assert ortho.out_features == 4  # 5 points determine a constant + 4 directions


def test_orthonormal_refuses_huge_feature_counts() -> None:
    with pytest.raises(ConfigError, match="features.basis"):
        build_features(poly(2, "orthonormal"), torch.rand(10, 784))
