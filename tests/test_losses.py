"""Losses, output activations and the Linear layer: analytic gradients equal autograd's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from overfit.maths import activations, losses
from overfit.errors import ConfigError
from overfit.maths.layers import Linear

COMBOS = [(name, output) for name in losses.LOSSES for output in losses.SUPPORTED_OUTPUTS[name]]
N, C = 6, 4


def make(name: str, output: str, gradient: str, task: str = "classification") -> losses.Loss:
    cfg = OmegaConf.create({"name": name, "output": output, "gradient": gradient})
    return losses.build_loss(cfg, task, None if task == "regression" else (2 if name == "hinge" else C))


def batch(name: str, task: str, dtype: torch.dtype, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    if task == "regression":
        return torch.randn(N, 3, generator=gen, dtype=dtype), torch.randn(N, 3, generator=gen, dtype=dtype)
    if name == "hinge":
        return scale * torch.randn(N, 1, generator=gen, dtype=dtype), torch.randint(0, 2, (N,), generator=gen)
    return scale * torch.randn(N, C, generator=gen, dtype=dtype), torch.randint(0, C, (N,), generator=gen)


def value_and_grad(loss: nn.Module, scores: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = scores.clone().requires_grad_()
    value = loss(scores, target)
    (grad,) = torch.autograd.grad(value, scores)
    return value.detach(), grad


def tasks_for(name: str) -> list[str]:
    return ["classification"] if name in losses.CLASSIFICATION_ONLY else ["classification", "regression"]


@pytest.mark.parametrize(("name", "output"), COMBOS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_analytic_equals_autograd(name: str, output: str, dtype: torch.dtype, tol: float) -> None:
    for task in tasks_for(name):
        scores, target = batch(name, task, dtype)
        value_a, grad_a = value_and_grad(make(name, output, "analytic", task), scores, target)
        value_r, grad_r = value_and_grad(make(name, output, "autograd", task), scores, target)
        assert value_a.dtype == dtype
        torch.testing.assert_close(value_a, value_r, atol=tol, rtol=tol)
        torch.testing.assert_close(grad_a, grad_r, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_plain_function_matches_its_analytic_twin(name: str) -> None:
    scores, target = batch(name, "classification", torch.float64)
    if name in ("log_likelihood", "cross_entropy"):
        scores = torch.softmax(scores, 1)
    value_a, grad_a = value_and_grad(lambda s, y: losses.apply(name, s, y, analytic=True), scores, target)
    value_r, grad_r = value_and_grad(getattr(losses, name), scores, target)
    torch.testing.assert_close(value_a, value_r)
    torch.testing.assert_close(grad_a, grad_r)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_analytic_runs_the_closed_form(name: str) -> None:
    # Were analytic=True to fall back to autograd, every analytic == autograd check would pass vacuously.
    scores, target = batch(name, "classification", torch.float64)
    scores.requires_grad_()
    assert type(losses.apply(name, scores, target, analytic=True).grad_fn).__name__ == "ClosedFormBackward"
    assert type(losses.apply(name, scores, target, analytic=False).grad_fn).__name__ != "ClosedFormBackward"


def test_losses_are_means_over_examples() -> None:
    scores, target = batch("multiclass_hinge", "classification", torch.float64)
    for name in ("mse", "l1", "multiclass_hinge"):
        whole = getattr(losses, name)(scores, target)
        parts = torch.stack([getattr(losses, name)(scores[i : i + 1], target[i : i + 1]) for i in range(N)])
        torch.testing.assert_close(whole, parts.mean())


def test_hinge_reads_zero_one_and_plus_minus_one_labels_alike() -> None:
    scores = torch.tensor([[0.5], [-2.0], [0.3]])
    zero_one = losses.hinge(scores, torch.tensor([1, 0, 0]))
    plus_minus = losses.hinge(scores, torch.tensor([1, -1, -1]))
    assert zero_one.item() == plus_minus.item() == pytest.approx((0.5 + 0 + 1.3) / 3)


@pytest.mark.parametrize(("name", "output"), [("log_likelihood", "softmax"), ("cross_entropy", "softmax"),
                                              ("cross_entropy", "sigmoid")])
@pytest.mark.parametrize("gradient", ["autograd", "analytic"])
def test_saturated_scores_stay_finite(name: str, output: str, gradient: str) -> None:
    scores = torch.tensor([[500.0, -500.0, 0.0], [0.0, 200.0, -90.0]])
    value, grad = value_and_grad(make(name, output, gradient), scores, torch.tensor([1, 1]))
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_fused_softmax_cross_entropy_is_accurate_when_confident() -> None:
    # p_top = 1 − ε with ε ≈ e^{-40}: log(1 − p_top) ≈ −40, lost by a naive log(1 − p) in float32.
    scores = torch.tensor([[40.0, 0.0, -60.0]])
    value = make("cross_entropy", "softmax", "autograd")(scores, torch.tensor([1])).item()
    exact = make("cross_entropy", "softmax", "autograd")(scores.double(), torch.tensor([1])).item()
    assert value == pytest.approx(exact, rel=1e-5)
    assert exact == pytest.approx(40 + 40, rel=1e-3)  # −log p_1 ≈ 40, −log(1 − p_0) ≈ 40


def test_shape_mismatches_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"target shape \(4,\) does not fit input shape \(4, 1\)"):
        losses.mse(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        losses.hinge(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        losses.multiclass_hinge(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        losses.cross_entropy(torch.zeros(4), torch.zeros(4, dtype=torch.long))


def test_mse_one_hot_encodes_class_indices() -> None:
    scores = torch.tensor([[0.2, 0.9, 0.1]])
    torch.testing.assert_close(losses.mse(scores, torch.tensor([1])), losses.mse(scores, torch.tensor([[0.0, 1, 0]])))


def test_output_dim_and_predict() -> None:
    hinge = make("hinge", "identity", "autograd")
    assert hinge.output_dim("classification", 2, None) == 1
    assert hinge.predict(torch.tensor([[0.3], [-0.1]])).tolist() == [1, 0]
    softmax = make("log_likelihood", "softmax", "autograd")
    assert softmax.task == "classification"
    assert softmax.output_dim("classification", 10, None) == 10
    assert softmax.predict(torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])).tolist() == [1, 0]
    one_hot_l2 = make("mse", "sigmoid", "autograd")
    assert one_hot_l2.output_dim("classification", 10, None) == 10
    regression = make("mse", "identity", "autograd", task="regression")
    assert regression.output_dim("regression", None, 3) == 3
    scores = torch.randn(5, 3)
    assert torch.equal(regression.predict(scores), scores)
    squashed = make("l1", "sigmoid", "autograd", task="regression")
    torch.testing.assert_close(squashed.predict(scores), torch.sigmoid(scores))


def test_build_loss_defaults_output_and_gradient() -> None:
    loss = losses.build_loss(SimpleNamespace(name="cross_entropy"), "classification", 3)
    assert (loss.output, loss.gradient) == ("softmax", "autograd")


@pytest.mark.parametrize(
    ("cfg", "task", "classes", "key", "needle"),
    [
        ({"name": "log_likelihood", "output": "softmax"}, "regression", None, "loss", "mse, l1"),
        ({"name": "hinge", "output": "identity"}, "classification", 10, "loss", "multiclass_hinge"),
        ({"name": "hinge", "output": "softmax"}, "classification", 2, "loss.output", "identity"),
        ({"name": "log_likelihood", "output": "sigmoid"}, "classification", 3, "loss.output", "softmax"),
        ({"name": "mse", "output": "tanh"}, "regression", None, "loss.output", "identity, sigmoid, softmax"),
        ({"name": "mse", "gradient": "numeric"}, "regression", None, "loss.gradient", "analytic, autograd"),
        ({"name": "svm"}, "classification", 3, "loss", "multiclass_hinge"),
    ],
)
def test_check_rejects_bad_configs(cfg: dict, task: str, classes: int | None, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        losses.build_loss(OmegaConf.create(cfg), task, classes)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ") and needle in str(caught.value)


def test_check_accepts_l1_l2_on_classification_and_binary_hinge() -> None:
    for name in ("mse", "l1"):
        losses.check(SimpleNamespace(name=name, output="softmax", gradient="analytic"), "classification", 10)
    losses.check(SimpleNamespace(name="hinge", output="identity", gradient="analytic"), "classification", 2)


def test_tables_are_consistent() -> None:
    assert set(losses.SUPPORTED_OUTPUTS) == set(losses.LOSSES)
    assert set(losses.CLASSIFICATION_ONLY) < set(losses.LOSSES)
    assert all(set(outs) <= set(activations.OUTPUTS) for outs in losses.SUPPORTED_OUTPUTS.values())


# --- activations ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reference"), [("sigmoid", torch.sigmoid), ("softmax", lambda x: x.softmax(-1))])
def test_activation_backward_is_the_closed_form(name: str, reference) -> None:
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 4, dtype=torch.float64)
    (analytic,) = torch.autograd.grad((getattr(activations, name)(x) * upstream).sum(), x)
    (auto,) = torch.autograd.grad((reference(x) * upstream).sum(), x)
    torch.testing.assert_close(getattr(activations, name)(x), reference(x))
    torch.testing.assert_close(analytic, auto)


@pytest.mark.parametrize("name", ["sigmoid", "softmax"])
def test_analytic_activation_runs_the_closed_form(name: str) -> None:
    x = torch.randn(3, 4, requires_grad=True)
    assert type(activations.apply(name, x, analytic=True).grad_fn).__name__ == "ClosedFormBackward"
    assert type(activations.apply(name, x, analytic=False).grad_fn).__name__ != "ClosedFormBackward"


def test_softmax_vjp_equals_explicit_jacobian() -> None:
    x = torch.randn(3, dtype=torch.float64)
    p = torch.softmax(x, 0)
    jacobian = torch.diag(p) - torch.outer(p, p)  # D_ab = p_a(δ_ab − p_b)
    upstream = torch.randn(3, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    (vjp,) = torch.autograd.grad((activations.softmax(xr) * upstream).sum(), xr)
    torch.testing.assert_close(vjp, upstream @ jacobian)


def test_unknown_activation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="loss.output"):
        activations.apply("tanh", torch.zeros(2), analytic=True)


# --- the Linear layer ---------------------------------------------------------------


def test_linear_is_a_drop_in_for_nn_linear() -> None:
    torch.manual_seed(3)
    ours = Linear(5, 2, analytic=True)
    torch.manual_seed(3)
    theirs = nn.Linear(5, 2)
    assert (ours.in_features, ours.out_features) == (5, 2)
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    x = torch.randn(7, 5)
    torch.testing.assert_close(ours(x), theirs(x))
    assert Linear(5, 2, bias=False).bias is None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5)])
def test_linear_analytic_backward_equals_autograd(bias: bool, shape: tuple[int, ...]) -> None:
    layer = Linear(5, 3, bias=bias, analytic=True, dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 3, dtype=torch.float64)
    params = [x, *layer.parameters()]
    analytic = torch.autograd.grad((layer(x) * upstream).sum(), params)
    layer.analytic = False
    auto = torch.autograd.grad((layer(x) * upstream).sum(), params)
    for a, r in zip(analytic, auto, strict=True):
        torch.testing.assert_close(a, r)
    # The closed forms themselves: ∂L/∂W = gᵀx, ∂L/∂x = gW.
    g, xs = upstream.reshape(-1, 3), x.detach().reshape(-1, 5)
    torch.testing.assert_close(analytic[1], g.T @ xs)
    torch.testing.assert_close(analytic[0], (g @ layer.weight.detach()).reshape(shape))
