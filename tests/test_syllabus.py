"""Every pure-maths worked example of SYLLABUS.md §1–§7, to the printed (corrected) precision."""

from __future__ import annotations

import math

import pytest
import torch

from overfit.maths import losses
from overfit.maths.features import Polynomial, SeedTransform, polynomial_terms
from overfit.maths.layers import Linear

f64 = torch.float64

# §4's score table has the examples as columns; rows here are examples (cat, car, frog true).
SCORES = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]], dtype=f64)
TRUE = torch.tensor([0, 1, 2])
# p = (0.1, 0.7, 0, …, 0.2) with the true class second, and the matching one-hot y.
P = torch.tensor([[0.1, 0.7, 0, 0, 0, 0, 0, 0, 0, 0.2]], dtype=f64)
CLASS_2 = torch.tensor([1])


def loss(cls: type[losses.Loss], output: str, gradient: str = "autograd") -> losses.Loss:
    return cls(output, gradient).fit("classification", 3)


# §1 -----------------------------------------------------------------------------------


def test_line_example_least_squares_optimum() -> None:
    x = torch.tensor([2.0, 4.0, 6.0, 8.0], dtype=f64)
    y = torch.tensor([3.0, 4.0, 5.0, 6.0], dtype=f64)
    design = torch.stack([x, torch.ones_like(x)], 1)
    w, b = torch.linalg.lstsq(design, y[:, None]).solution.squeeze(1).tolist()
    assert round(w, 1) == 0.5
    assert round(b, 1) == 2.0
    assert round(w * 10 + b, 1) == 7.0


@pytest.mark.parametrize("d", [1, 2, 3, 10, 784])
def test_polynomial_term_counts(d: int) -> None:
    assert polynomial_terms(d, 1) == d + 1  # a d-dimensional linear model has d + 1 variables
    assert polynomial_terms(d, 2) == (d + 1) * (d + 2) // 2
    for k in range(5):
        assert polynomial_terms(d, k) == math.comb(d + k, k)


def test_polynomial_feature_map_leaves_the_constant_to_the_bias() -> None:
    x = torch.randn(5, 3, dtype=f64)
    assert Polynomial(order=2, basis="monomial").build(x).out_features == (3 + 1) * (3 + 2) // 2 - 1


def test_seed_transform_images_and_separating_line() -> None:
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=f64)  # a, b, c, d
    images = SeedTransform().build(corners)(corners)
    expected = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.4, 0.4]]
    assert [[round(v, 1) for v in row] for row in images.tolist()] == expected
    side = images.sum(1) - 1  # x1' + x2' = 1
    assert (side[[0, 3]] < 0).all() and (side[[1, 2]] > 0).all()  # a, d on one side; b, c on the other


# §3 -----------------------------------------------------------------------------------


def test_linear_classifier_scores() -> None:
    layer = Linear(4, 3, dtype=f64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.2, -0.5, 0.1, 2.0], [1.5, 1.3, 2.1, 0.0], [0.0, 0.25, 0.2, -0.3]]))
        layer.bias.copy_(torch.tensor([1.1, 3.2, -1.2]))
    scores = layer(torch.tensor([[56.0, 231.0, 24.0, 2.0]], dtype=f64))
    assert [round(s, 2) for s in scores[0].tolist()] == [-96.8, 437.9, 60.75]  # the slide's 61.95 forgot −1.2


# §4 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient", ["autograd", "analytic"])
def test_multiclass_hinge(gradient: str) -> None:
    svm = loss(losses.MulticlassHinge, "identity", gradient)
    per_example = [round(svm(SCORES[i : i + 1], TRUE[i : i + 1]).item(), 1) for i in range(3)]
    assert per_example == [2.9, 0.0, 12.9]
    mean = svm(SCORES, TRUE).item()
    assert round(mean, 2) == 5.27
    assert mean == pytest.approx(15.8 / 3, abs=1e-12)


def test_hinge_loss_does_not_determine_w() -> None:
    layer = Linear(3, 3, bias=False, dtype=f64)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(SCORES[1]))
    x = torch.ones(1, 3, dtype=f64)
    svm = loss(losses.MulticlassHinge, "identity")
    assert svm(layer(x), TRUE[1:2]).item() == 0
    with torch.no_grad():
        layer.weight.mul_(2)
    doubled = layer(x)
    assert doubled[0].tolist() == pytest.approx([2.6, 9.8, 4.0])
    assert svm(doubled, TRUE[1:2]).item() == 0  # max(0, 2.6 − 9.8 + 1) + max(0, 4.0 − 9.8 + 1)


def test_log_likelihood() -> None:
    assert round(losses.log_likelihood(P, CLASS_2).item(), 4) == 0.3567


def test_cross_entropy() -> None:
    value = losses.cross_entropy(P, CLASS_2).item()
    assert round(value, 4) == 0.6852
    assert value == pytest.approx(-math.log(0.9) - math.log(0.7) - math.log(0.8))


@pytest.mark.parametrize("gradient", ["autograd", "analytic"])
def test_softmax_log_likelihood(gradient: str) -> None:
    p_ex1 = torch.softmax(SCORES[0], 0)
    assert [round(v, 2) for v in p_ex1.tolist()] == [0.13, 0.87, 0.0]
    softmax_classifier = loss(losses.LogLikelihood, "softmax", gradient)
    per_example = [round(softmax_classifier(SCORES[i : i + 1], TRUE[i : i + 1]).item(), 4) for i in range(3)]
    assert per_example == [2.0404, 0.0791, 6.1565]  # the slide's 0.89 is −log10 0.13
    assert round(softmax_classifier(SCORES, TRUE).item(), 4) == 2.7587


@pytest.mark.parametrize("gradient", ["autograd", "analytic"])
def test_softmax_cross_entropy(gradient: str) -> None:
    value = loss(losses.CrossEntropy, "softmax", gradient)(SCORES[:1], TRUE[:1]).item()
    assert round(value, 4) == 4.0743
    assert round(value / math.log(10), 4) == 1.7694  # the slide's "0.89·2" is in base 10


@pytest.mark.parametrize("target", [CLASS_2, torch.tensor([[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=f64)])
def test_regression_l1_and_l2(target: torch.Tensor) -> None:
    scores = P  # s = (0.1, 0.7, 0, …, 0.2), y = (0, 1, 0, …, 0)
    assert round(losses.l1(scores, target).item(), 4) == 0.6
    assert round(losses.mse(scores, target).item(), 4) == 0.14


# §6 -----------------------------------------------------------------------------------


def test_gradient_descent_on_a_parabola() -> None:
    x = torch.tensor(0.0, dtype=f64, requires_grad=True)
    for _ in range(200):
        f = x**2 - 4 * x + 3
        (grad,) = torch.autograd.grad(f, x)
        assert grad.item() == pytest.approx(2 * x.item() - 4)  # f'(x) = 2x − 4
        with torch.no_grad():
            x -= 0.1 * grad
    assert round(x.item(), 4) == 2.0
    assert round((x**2 - 4 * x + 3).item(), 4) == -1.0


# §7 -----------------------------------------------------------------------------------


def six_hump(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[0], x[1]
    return (4 - 2.1 * x1**2 + x1**4 / 3) * x1**2 + x1 * x2 + (-4 + 4 * x2**2) * x2**2


@pytest.mark.parametrize("point", [(0.0, 1.0), (1.5, -0.5), (-0.7, 0.3)])
def test_gradient_example(point: tuple[float, float]) -> None:
    x = torch.tensor(point, dtype=f64, requires_grad=True)
    (grad,) = torch.autograd.grad(six_hump(x), x)
    x1, x2 = point
    closed = [2 * x1**5 - 8.4 * x1**3 + 8 * x1 + x2, 16 * x2**3 - 8 * x2 + x1]
    assert grad.tolist() == pytest.approx(closed, abs=1e-12)


def test_jacobian_example() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([2 * x[0] + x[1] ** 2, -x[0] ** 2 + 3 * x[1], 4 * x[0] * x[1]])

    jacobian = torch.autograd.functional.jacobian(f, torch.tensor([2.0, 1.0], dtype=f64))
    assert jacobian.tolist() == [[2, 2], [-4, 3], [4, 8]]


def test_hessian_example() -> None:
    hessian = torch.autograd.functional.hessian(six_hump, torch.tensor([0.0, 1.0], dtype=f64))
    assert [[round(v, 4) for v in row] for row in hessian.tolist()] == [[8, 1], [1, 40]]


@pytest.mark.parametrize("point", [-1.3, 0.0, 0.5, 2.0])
def test_chain_rule_example(point: float) -> None:
    x = torch.tensor(point, dtype=f64, requires_grad=True)
    inner = 2 * x**2 - 1
    (grad,) = torch.autograd.grad(3 * inner**2 - 2 * inner + 5, x)
    assert grad.item() == pytest.approx(48 * point**3 - 32 * point, abs=1e-12)
