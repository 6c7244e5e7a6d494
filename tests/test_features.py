"""Feature components and maps: counts, bases that span the same space, batch-by-batch application, checks, keys."""

from __future__ import annotations

import functools
import itertools
import math
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from overfit.errors import Alone, ConfigError
from overfit.maths import feature_maps, features
from overfit.maths.features import Features, FromCallable, Identity, Polynomial, SeedTransform, polynomial_terms

f64 = torch.float64


def poly(order: int, basis: str = "legendre") -> Polynomial:
    return Polynomial(order=order, basis=basis)


def test_import_does_not_load_torch() -> None:
    code = "import overfit.maths.features, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("d", "k"), [(1, 0), (1, 1), (1, 12), (2, 2), (3, 3), (5, 2), (4, 4)])
@pytest.mark.parametrize("basis", features.BASES)
def test_polynomial_counts(d: int, k: int, basis: str) -> None:
    x = torch.randn(100, d, dtype=f64)  # enough points that whitening keeps every direction
    spec = poly(k, basis)
    feature_map = spec.build(x)
    assert feature_map.out_features == spec.width(d) == polynomial_terms(d, k) - 1 == math.comb(d + k, k) - 1
    assert feature_map(x).shape == (len(x), feature_map.out_features)


def test_polynomial_terms_counts_the_constant() -> None:
    assert [polynomial_terms(2, k) for k in range(4)] == [1, 3, 6, 10]


def test_monomials_are_every_product_of_degree_one_to_k() -> None:
    x = torch.randn(5, 3, dtype=f64)
    combos = [c for t in range(1, 4) for c in itertools.combinations_with_replacement(range(3), t)]
    expected = torch.stack([x[:, list(c)].prod(1) for c in combos], dim=1)
    torch.testing.assert_close(poly(3, "monomial").build(x)(x), expected)


def test_legendre_univariate_is_the_normalised_legendre_polynomials() -> None:
    x = torch.linspace(-1, 1, 9, dtype=f64)[:, None]  # already on [−1, 1]: u = x
    u = x[:, 0]
    p1, p2, p3 = u, (3 * u**2 - 1) / 2, (5 * u**3 - 3 * u) / 2
    expected = torch.stack([math.sqrt(3) * p1, math.sqrt(5) * p2, math.sqrt(7) * p3], 1)
    torch.testing.assert_close(poly(3).build(x)(x), expected)


@pytest.mark.parametrize(("d", "k"), [(1, 3), (1, 12), (2, 3)])
def test_legendre_and_monomial_span_the_same_space(d: int, k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(60, d, generator=gen, dtype=f64) * 2 - 0.5
    y = torch.sin(3 * x).sum(1, keepdim=True) + 0.1 * torch.randn(60, 1, generator=gen, dtype=f64)
    x_new = torch.rand(20, d, generator=gen, dtype=f64) * 2 - 0.5

    def fitted(basis: str) -> torch.Tensor:
        phi = poly(k, basis).build(x)
        design = torch.cat([torch.ones(len(x), 1, dtype=f64), phi(x)], 1)  # the bias column
        coef = torch.linalg.lstsq(design, y, driver="gelsd").solution
        return torch.cat([torch.ones(len(x_new), 1, dtype=f64), phi(x_new)], 1) @ coef

    torch.testing.assert_close(fitted("legendre"), fitted("monomial"), atol=1e-6, rtol=1e-6)


def test_legendre_is_better_conditioned_at_order_12() -> None:
    x = torch.rand(50, 1, dtype=f64) * 4 + 1  # inputs on [1, 5]: monomials up to x^12 are nearly collinear
    cond = {b: torch.linalg.cond(poly(12, b).build(x)(x)).item() for b in ("legendre", "monomial")}
    assert cond["legendre"] < 1e-6 * cond["monomial"]


def test_legendre_scaling_is_from_the_training_set_and_moves_with_the_module() -> None:
    x_train = torch.tensor([[0.0, 5.0], [10.0, 5.0]])  # the second input is constant
    feature_map = poly(1).build(x_train)
    out = feature_map(torch.tensor([[0.0, 5.0], [5.0, 5.0], [10.0, 5.0]]))
    torch.testing.assert_close(out / math.sqrt(3), torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))
    assert {"low", "high"} <= set(feature_map.state_dict())
    assert not any(name.startswith(("base", "column")) for name in feature_map.state_dict())


@pytest.mark.parametrize("spec", [poly(3), poly(2, "monomial"), Polynomial(2), Identity()])
def test_batch_by_batch_equals_whole(spec: Features) -> None:
    x = torch.randn(40, 3, dtype=f64)
    feature_map = spec.build(x)
    whole = feature_map(x)
    torch.testing.assert_close(torch.cat([feature_map(b) for b in x.split(7)]), whole)


def test_order_two_on_mnist_sized_inputs_works_batch_by_batch() -> None:
    x_train = torch.rand(100, 1, 28, 28)
    feature_map = poly(2).build(x_train)
    assert feature_map.out_features == 785 * 786 // 2 - 1 == 308_504
    # Only index structures of size out_features live on the module, nothing per example.
    stored = sum(t.numel() for t in feature_map.buffers())
    assert stored < 3 * feature_map.out_features
    out = feature_map(x_train[:8])
    assert out.shape == (8, 308_504) and torch.isfinite(out).all()


def test_identity_flattens() -> None:
    x = torch.randn(4, 1, 2, 3)
    feature_map = Identity().build(x)
    assert isinstance(feature_map, feature_maps.IdentityMap)
    assert feature_map.out_features == Identity().width(6) == 6
    torch.testing.assert_close(feature_map(x), x.reshape(4, 6))


def test_order_zero_leaves_only_the_bias() -> None:
    x = torch.randn(4, 2)
    feature_map = poly(0).build(x)
    assert feature_map.out_features == 0 and feature_map(x).shape == (4, 0)


def test_seed_transform_separates_xor() -> None:
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    feature_map = SeedTransform().build(corners)
    assert isinstance(feature_map, feature_maps.SeedTransformMap)
    assert feature_map.out_features == SeedTransform().width(2) == 2
    torch.testing.assert_close(feature_map(corners), torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.4, 0.4]]))


# --- checks -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "key", "needle"),
    [
        (Polynomial(-1, "legendre"), "features.order", "≥ 0"),
        (Polynomial(2.5, "legendre"), "features.order", "integer"),  # type: ignore[arg-type]
        (Polynomial(True, "legendre"), "features.order", "integer"),  # a bool is not an order
        (Polynomial(features.MAX_ORDER + 1), "features.order", f"≤ {features.MAX_ORDER}"),
        (Polynomial(2, "chebyshev"), "features.basis", "legendre, monomial"),
        (Polynomial(2, None), "features.basis", "orthonormal, legendre, monomial"),  # type: ignore[arg-type]
    ],
)
def test_check_rejects_bad_knobs(spec: Features, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        spec.check()
    assert caught.value.key == key and needle in str(caught.value)


def test_seed_transform_needs_two_inputs() -> None:
    SeedTransform().check(d=2)
    with pytest.raises(ConfigError) as caught:
        SeedTransform().build(torch.randn(4, 3))
    assert caught.value.key == "features" and "d=3" in str(caught.value)


def test_seed_transform_refuses_standardized_inputs() -> None:
    with pytest.raises(ConfigError) as caught:
        SeedTransform().check(d=2, standardized=True)
    assert caught.value.key == "dataset.standardize" and "raw coordinates" in str(caught.value)
    Identity().check(d=2, standardized=True)
    Polynomial(2).check(d=2, standardized=True)


def test_absurd_feature_counts_are_refused_before_allocating() -> None:
    with pytest.raises(ConfigError) as caught:
        poly(3).build(torch.rand(2, 784))
    assert caught.value.key == "features.order"
    with pytest.raises(ConfigError, match="features.order"):
        poly(3).check(d=784)


def test_orthonormal_refuses_huge_feature_counts() -> None:
    with pytest.raises(ConfigError, match="features.basis"):
        poly(2, "orthonormal").build(torch.rand(10, 784))


def test_orthonormal_whitening_must_fit_in_memory() -> None:
    spec = Polynomial(3, "orthonormal")  # 3 inputs: 19 features
    spec.check(d=3, rows=1000, memory=10**9)
    with pytest.raises(ConfigError) as caught:
        spec.check(d=3, rows=10**6, memory=10**8)
    assert caught.value.key == "features.basis" and "whitening" in str(caught.value)
    Polynomial(3, "legendre").check(d=3, rows=10**6, memory=10**8)  # no whitening, no bound


# --- the orthonormal basis ----------------------------------------------------------
def test_basis_defaults_to_orthonormal_legendre() -> None:
    spec = Polynomial()
    assert (spec.order, spec.basis) == (3, "orthonormal")
    feature_map = Polynomial(order=2).build(torch.randn(50, 2))
    assert isinstance(feature_map, feature_maps.OrthonormalMap) and feature_map.polynomial.basis == "legendre"


def test_orthonormal_basis_is_white_on_the_training_set_and_spans_the_same_space() -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 1, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x)
    ortho = poly(12, "orthonormal").build(x)
    phi = ortho(x)
    torch.testing.assert_close(phi.T @ phi / len(x), torch.eye(ortho.out_features, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(phi.mean(0), torch.zeros(ortho.out_features, dtype=torch.float64), atol=1e-10, rtol=0)

    def fitted(basis: str) -> torch.Tensor:
        f = poly(12, basis).build(x)
        design = torch.cat([torch.ones(len(x), 1, dtype=torch.float64), f(x)], 1)
        grid = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(1)
        coef = torch.linalg.lstsq(design, y).solution
        return torch.cat([torch.ones(50, 1, dtype=torch.float64), f(grid)], 1) @ coef

    torch.testing.assert_close(fitted("orthonormal"), fitted("legendre"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("order", [1, 3, 12])
def test_gradient_descent_on_orthonormal_features_reaches_the_least_squares_optimum(order: int) -> None:
    """The MSE Hessian is 2·I for every order: steps of 1/2 land on the optimum at once, whatever the order."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, generator=gen, dtype=f64) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(60, 1, generator=gen, dtype=f64)
    phi = poly(order, "orthonormal").build(x)(x)
    design = torch.cat([torch.ones(len(x), 1, dtype=f64), phi], 1)
    optimum = torch.linalg.lstsq(design, y).solution
    w = torch.zeros(design.shape[1], 1, dtype=f64)
    for _ in range(3):
        w = w - 0.5 * (2 / len(x)) * design.T @ (design @ w - y)
    torch.testing.assert_close(w, optimum, atol=1e-8, rtol=0)


def test_orthonormal_drops_directions_the_training_set_cannot_see() -> None:
    x = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(1)
    ortho = poly(12, "orthonormal").build(x)
    assert ortho.out_features == 4  # 5 points determine a constant + 4 directions
    assert ortho.out_features <= poly(12, "orthonormal").width(1)  # width is an upper bound


# --- components: YAML kwargs, fixed maps, batch keys ---------------------------------
def test_yaml_keys_are_constructor_kwargs() -> None:
    spec = instantiate({"_target_": "overfit.maths.features.Polynomial", "order": 12, "basis": "legendre"})
    assert isinstance(spec, Polynomial) and (spec.order, spec.basis) == (12, "legendre")
    assert isinstance(instantiate({"_target_": "overfit.maths.features.SeedTransform"}), SeedTransform)


def test_shipped_maps_are_fixed() -> None:
    x = torch.rand(20, 2)
    for spec in (Identity(), SeedTransform(), Polynomial(2), Polynomial(2, "monomial")):
        assert spec.fixed
        assert not any(p.requires_grad for p in spec.build(x).parameters())


def test_batch_key_equal_for_equal_knobs() -> None:
    assert Polynomial(3, "legendre").batch_key() == Polynomial(3, "legendre").batch_key()
    assert Identity().batch_key() == Identity().batch_key()
    hash(Polynomial(3).batch_key())


def test_batch_key_differs_when_the_class_differs_not_for_per_point_knobs() -> None:
    # Each point's map is computed on its own data and zero-padded: orders and bases batch together.
    assert Polynomial(3, "legendre").batch_key() == Polynomial(12, "monomial").batch_key()
    assert Identity().batch_key() != SeedTransform().batch_key() != Polynomial().batch_key()


def test_a_subclass_knob_is_in_the_batch_key_without_overriding_anything() -> None:
    class Shifted(Polynomial):
        def __init__(self, order: int = 3, basis: str = "orthonormal", shift: float = 0.0) -> None:
            super().__init__(order, basis)
            self.shift = shift

    assert Shifted(shift=1.0).batch_key() != Shifted(shift=2.0).batch_key()
    assert Shifted(shift=1.0).batch_key() == Shifted(shift=1.0).batch_key()
    assert Shifted().batch_key() != Polynomial().batch_key()


# --- a user's callable ---------------------------------------------------------------
class _Squares(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) ** 2


def squares(x_train: torch.Tensor) -> nn.Module:
    return _Squares()


def test_adopt_keeps_a_component_and_wraps_a_callable() -> None:
    spec = Polynomial(2)
    assert Features.adopt(spec) is spec
    adopted = Features.adopt(squares)
    assert isinstance(adopted, FromCallable) and adopted.fn is squares


def test_from_callable_learns_its_width_by_building() -> None:
    spec = Features.adopt(squares)
    spec.check(d=3)
    assert spec.width(3) is None  # unknown until built
    x = torch.randn(5, 3)
    feature_map = spec.build(x)
    assert feature_map.out_features == 3
    torch.testing.assert_close(feature_map(x), x**2)


def test_from_callable_is_fixed_only_when_it_says_so() -> None:
    assert not FromCallable(squares).fixed

    def fixed_squares(x_train: torch.Tensor) -> nn.Module:
        return _Squares()

    fixed_squares.fixed = True  # type: ignore[attr-defined]
    assert FromCallable(fixed_squares).fixed


def test_from_callable_trains_alone_unless_it_declares_a_batch_key() -> None:
    with pytest.raises(Alone, match="squares declares no batch_key"):
        FromCallable(squares).batch_key()

    def keyed(x_train: torch.Tensor) -> nn.Module:
        return _Squares()

    keyed.batch_key = lambda: ("squares",)  # type: ignore[attr-defined]
    assert FromCallable(keyed).batch_key() == FromCallable(keyed).batch_key()
    # Hydra hands over a partial carrying the YAML's knobs: they are in the key, the declarations still count.
    keyed.fixed = True  # type: ignore[attr-defined]
    one, two = FromCallable(functools.partial(keyed)), FromCallable(functools.partial(keyed))
    assert one.fixed and one.batch_key() == two.batch_key()
    with pytest.raises(Alone, match="squares declares no batch_key"):
        FromCallable(functools.partial(squares)).batch_key()


def test_from_callable_knobs_are_in_its_batch_key() -> None:
    def scaled(x_train: torch.Tensor, scale: float = 1.0) -> nn.Module:
        return _Squares()

    scaled.batch_key = lambda: ()  # type: ignore[attr-defined]
    key = FromCallable(functools.partial(scaled, scale=2.0)).batch_key()
    assert key == FromCallable(functools.partial(scaled, scale=2.0)).batch_key()
    assert key != FromCallable(functools.partial(scaled, scale=3.0)).batch_key()


def test_from_callable_rejects_what_is_not_a_feature_map() -> None:
    with pytest.raises(ConfigError) as caught:
        Features.adopt(42).check()
    assert caught.value.key == "features"
    with pytest.raises(ConfigError, match="an nn.Module"):
        FromCallable(lambda x: x).build(torch.randn(3, 2))
