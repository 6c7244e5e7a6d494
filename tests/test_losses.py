"""Losses, output activations and the Linear layer: analytic gradients equal autograd's."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

from overfit.errors import Alone, ConfigError
from overfit.maths import activations, losses
from overfit.maths.layers import Linear

COMBOS = [(cls, output) for cls in losses.SHIPPED for output in cls.outputs]
IDS = [f"{cls.__name__}-{output}" for cls, output in COMBOS]
FUSED = [(losses.LogLikelihood, "softmax"), (losses.CrossEntropy, "softmax"), (losses.CrossEntropy, "sigmoid")]
N, C = 6, 4


def make(cls: type[losses.Loss], output: str, gradient: str, task: str = "classification") -> losses.Loss:
    return cls(output, gradient).fit(task, None if task == "regression" else (2 if cls is losses.Hinge else C))


def batch(cls: type[losses.Loss], task: str, dtype: torch.dtype,
          scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    if task == "regression":
        return torch.randn(N, 3, generator=gen, dtype=dtype), torch.randn(N, 3, generator=gen, dtype=dtype)
    if cls is losses.Hinge:
        return scale * torch.randn(N, 1, generator=gen, dtype=dtype), torch.randint(0, 2, (N,), generator=gen)
    return scale * torch.randn(N, C, generator=gen, dtype=dtype), torch.randint(0, C, (N,), generator=gen)


def value_and_grad(loss: Callable, scores: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = scores.clone().requires_grad_()
    value = loss(scores, target)
    (grad,) = torch.autograd.grad(value, scores)
    return value.detach(), grad


PLAIN = {losses.MSE: losses.mse, losses.L1: losses.l1, losses.Hinge: losses.hinge,
         losses.MulticlassHinge: losses.multiclass_hinge, losses.LogLikelihood: losses.log_likelihood,
         losses.CrossEntropy: losses.cross_entropy}


def test_importing_losses_does_not_import_torch() -> None:
    # `overfit pipeline show` validates configs, which builds losses: it must not load PyTorch.
    code = "import overfit.maths.losses, overfit.maths.activations, sys; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("cls", "output"), COMBOS, ids=IDS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_analytic_equals_autograd(cls: type[losses.Loss], output: str, dtype: torch.dtype, tol: float) -> None:
    for task in cls.tasks:
        scores, target = batch(cls, task, dtype)
        value_a, grad_a = value_and_grad(make(cls, output, "analytic", task), scores, target)
        value_r, grad_r = value_and_grad(make(cls, output, "autograd", task), scores, target)
        assert value_a.dtype == dtype
        torch.testing.assert_close(value_a, value_r, atol=tol, rtol=tol)
        torch.testing.assert_close(grad_a, grad_r, atol=tol, rtol=tol)


@pytest.mark.parametrize("cls", losses.SHIPPED, ids=lambda cls: cls.__name__)
def test_plain_function_matches_its_analytic_twin(cls: type[losses.Loss]) -> None:
    scores, target = batch(cls, "classification", torch.float64)
    if cls in (losses.LogLikelihood, losses.CrossEntropy):
        scores = torch.softmax(scores, 1)
    value_a, grad_a = value_and_grad(lambda s, y: cls().formula(s, y, analytic=True), scores, target)
    value_r, grad_r = value_and_grad(PLAIN[cls], scores, target)
    torch.testing.assert_close(value_a, value_r)
    torch.testing.assert_close(grad_a, grad_r)


@pytest.mark.parametrize("cls", losses.SHIPPED, ids=lambda cls: cls.__name__)
def test_analytic_runs_the_closed_form(cls: type[losses.Loss]) -> None:
    # Were analytic=True to fall back to autograd, every analytic == autograd check would pass vacuously.
    scores, target = batch(cls, "classification", torch.float64)
    scores.requires_grad_()
    assert type(cls().formula(scores, target, analytic=True).grad_fn).__name__ == "ClosedFormBackward"
    assert type(cls().formula(scores, target, analytic=False).grad_fn).__name__ != "ClosedFormBackward"


@pytest.mark.parametrize(("cls", "output"), COMBOS, ids=IDS)
@pytest.mark.parametrize("gradient", ["autograd", "analytic"])
def test_example_under_vmap_is_the_batched_loss_per_example(cls: type[losses.Loss], output: str,
                                                            gradient: str) -> None:
    # The batched trainer takes every example's loss with torch.vmap(loss.example).
    for task in cls.tasks:
        loss = make(cls, output, gradient, task)
        scores, target = batch(cls, task, torch.float64)
        per_example = torch.vmap(loss.example)(scores, target)
        assert per_example.shape == (N,)
        expected = torch.stack([loss(scores[i : i + 1], target[i : i + 1]) for i in range(N)])
        torch.testing.assert_close(per_example, expected)
        torch.testing.assert_close(per_example.mean(), loss(scores, target))


def test_losses_are_means_over_examples() -> None:
    scores, target = batch(losses.MulticlassHinge, "classification", torch.float64)
    for plain in (losses.mse, losses.l1, losses.multiclass_hinge):
        whole = plain(scores, target)
        parts = torch.stack([plain(scores[i : i + 1], target[i : i + 1]) for i in range(N)])
        torch.testing.assert_close(whole, parts.mean())


def test_hinge_reads_zero_one_and_plus_minus_one_labels_alike() -> None:
    scores = torch.tensor([[0.5], [-2.0], [0.3]])
    zero_one = losses.hinge(scores, torch.tensor([1, 0, 0]))
    plus_minus = losses.hinge(scores, torch.tensor([1, -1, -1]))
    assert zero_one.item() == plus_minus.item() == pytest.approx((0.5 + 0 + 1.3) / 3)


@pytest.mark.parametrize(("cls", "output"), FUSED, ids=[f"{cls.__name__}-{output}" for cls, output in FUSED])
@pytest.mark.parametrize("gradient", ["autograd", "analytic"])
def test_saturated_scores_stay_finite(cls: type[losses.Loss], output: str, gradient: str) -> None:
    scores = torch.tensor([[500.0, -500.0, 0.0], [0.0, 200.0, -90.0]])
    value, grad = value_and_grad(make(cls, output, gradient), scores, torch.tensor([1, 1]))
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize(("cls", "output"), FUSED, ids=[f"{cls.__name__}-{output}" for cls, output in FUSED])
def test_autograd_takes_the_fused_path(cls: type[losses.Loss], output: str) -> None:
    scores, target = batch(cls, "classification", torch.float64)
    loss = make(cls, output, "autograd")
    assert loss.fused(scores, target) is not None
    torch.testing.assert_close(loss(scores, target), loss.formula(scores.softmax(1) if output == "softmax"
                                                                  else scores.sigmoid(), target, analytic=False))
    assert make(cls, output, "analytic").fused(scores, target) is not None  # there, but __call__ passes it by


def test_fused_softmax_cross_entropy_is_accurate_when_confident() -> None:
    # p_top = 1 − ε with ε ≈ e^{-40}: log(1 − p_top) ≈ −40, lost by a naive log(1 − p) in float32.
    scores = torch.tensor([[40.0, 0.0, -60.0]])
    value = make(losses.CrossEntropy, "softmax", "autograd")(scores, torch.tensor([1])).item()
    exact = make(losses.CrossEntropy, "softmax", "autograd")(scores.double(), torch.tensor([1])).item()
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
    hinge = make(losses.Hinge, "identity", "autograd")
    assert hinge.output_dim("classification", 2, None) == 1
    assert hinge.predict(torch.tensor([[0.3], [-0.1]])).tolist() == [1, 0]
    softmax = make(losses.LogLikelihood, "softmax", "autograd")
    assert (softmax.task, softmax.num_classes) == ("classification", C)
    assert softmax.output_dim("classification", 10, None) == 10
    assert softmax.predict(torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])).tolist() == [1, 0]
    one_hot_l2 = make(losses.MSE, "sigmoid", "autograd")
    assert one_hot_l2.output_dim("classification", 10, None) == 10
    regression = make(losses.MSE, "identity", "autograd", task="regression")
    assert regression.output_dim("regression", None, 3) == 3
    scores = torch.randn(5, 3)
    assert torch.equal(regression.predict(scores), scores)
    squashed = make(losses.L1, "sigmoid", "autograd", task="regression")
    torch.testing.assert_close(squashed.predict(scores), torch.sigmoid(scores))


def test_defaults_are_the_first_output_and_autograd() -> None:
    for cls in losses.SHIPPED:
        loss = cls()
        assert (loss.output, loss.gradient, loss.task, loss.num_classes) == (cls.outputs[0], "autograd", None, None)
    assert losses.CrossEntropy().fit("classification", 3).output == "softmax"
    assert repr(losses.CrossEntropy()) == "CrossEntropy(output='softmax', gradient='autograd')"


def test_fit_returns_the_loss_itself() -> None:
    loss = losses.MSE()
    assert loss.fit("regression", None) is loss and loss.task == "regression"


@pytest.mark.parametrize(
    ("loss", "task", "classes", "key", "needle"),
    [
        (losses.LogLikelihood("softmax"), "regression", None, "loss",
         "log_likelihood is a classification loss but the dataset is a regression task"),
        (losses.MulticlassHinge(), "regression", None, "loss", "tasks include regression"),
        (losses.Hinge("identity"), "classification", 10, "loss", "use loss=multiclass_hinge"),
        (losses.Hinge("softmax"), "classification", 2, "loss.output", "(allowed: identity)"),
        (losses.LogLikelihood("sigmoid"), "classification", 3, "loss.output", "(allowed: softmax)"),
        (losses.CrossEntropy("identity"), "classification", 3, "loss.output", "softmax, sigmoid"),
        (losses.MSE("tanh"), "regression", None, "loss.output", "identity, sigmoid, softmax"),
        (losses.MSE(gradient="numeric"), "regression", None, "loss.gradient", "analytic, autograd"),
    ],
    ids=str,
)
def test_check_rejects_bad_configs(loss: losses.Loss, task: str, classes: int | None, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loss.fit(task, classes)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ") and needle in str(caught.value)
    assert loss.task is None  # a rejected loss remembers nothing


def test_check_accepts_l1_l2_on_classification_and_binary_hinge() -> None:
    for cls in (losses.MSE, losses.L1):
        cls("softmax", "analytic").check("classification", 10)
    losses.Hinge("identity", "analytic").check("classification", 2)


def test_an_unknown_task_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        losses.MSE().check("ranking", None)


def test_declared_outputs_and_tasks_are_known() -> None:
    for cls in losses.SHIPPED:
        assert cls.outputs and set(cls.outputs) <= set(activations.OUTPUTS), cls
        assert cls.tasks and set(cls.tasks) <= {"regression", "classification"}, cls


def test_batch_key_is_equal_for_equal_configs_only() -> None:
    key = losses.MSE("sigmoid", "analytic").batch_key()
    assert key == losses.MSE("sigmoid", "analytic").fit("classification", C).batch_key()
    assert hash(key) == hash(losses.MSE("sigmoid", "analytic").batch_key())
    different = [losses.MSE("identity", "analytic"), losses.MSE("sigmoid", "autograd"),
                 losses.L1("sigmoid", "analytic")]
    assert all(other.batch_key() != key for other in different)
    assert losses.CrossEntropy("softmax").batch_key() != losses.CrossEntropy("sigmoid").batch_key()
    assert key[0] == "overfit.maths.losses.MSE"


# --- a loss of the user's own -----------------------------------------------------------


def squared_error(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((scores - target) ** 2).sum(1).mean()


class Huber(nn.Module):
    tasks = ("regression",)

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.huber_loss(scores, target)


def test_adopt_keeps_a_loss_and_wraps_a_callable() -> None:
    loss = losses.L1()
    assert losses.Loss.adopt(loss) is loss
    adopted = losses.Loss.adopt(squared_error)
    assert isinstance(adopted, losses.FromCallable) and adopted.fn is squared_error
    assert (adopted.output, adopted.gradient) == ("identity", "autograd")
    assert adopted.tasks == ("regression", "classification")
    assert repr(adopted) == "FromCallable(squared_error)"


def test_a_user_function_trains_as_a_loss() -> None:
    loss = losses.Loss.adopt(squared_error).fit("regression", None)
    scores, target = batch(losses.MSE, "regression", torch.float64)
    value, grad = value_and_grad(loss, scores, target)
    torch.testing.assert_close(value, losses.mse(scores, target))
    torch.testing.assert_close(grad, -2 * (target - scores) / N)
    assert loss.output_dim("regression", None, 3) == 3
    assert torch.equal(loss.predict(scores), scores)
    per_example = torch.vmap(loss.example)(scores, target)
    torch.testing.assert_close(per_example.mean(), value)
    # Behind a partial carrying the YAML's knobs (how Hydra builds a function), it keeps its name.
    assert losses.Loss.adopt(functools.partial(squared_error)).name == "squared_error"


def test_a_user_module_declares_its_tasks() -> None:
    loss = losses.Loss.adopt(Huber())
    assert loss.tasks == ("regression",) and loss.name == "Huber"
    scores, target = batch(losses.MSE, "regression", torch.float64)
    torch.testing.assert_close(loss.fit("regression", None)(scores, target), nn.functional.huber_loss(scores, target))
    with pytest.raises(ConfigError, match="Huber is a regression loss") as caught:
        loss.fit("classification", 3)
    assert caught.value.key == "loss"


def test_a_user_loss_refuses_analytic_and_batching() -> None:
    loss = losses.Loss.adopt(squared_error)
    with pytest.raises(ConfigError, match="no closed-form gradient") as caught:
        loss.formula(torch.zeros(2, 1), torch.zeros(2, 1), analytic=True)
    assert (caught.value.key, caught.value.allowed) == ("loss.gradient", "autograd")
    with pytest.raises(Alone, match="squared_error declares no batch_key"):
        loss.batch_key()
    with pytest.raises(ConfigError, match="neither a Loss nor a callable"):
        losses.Loss.adopt(3).check("regression", None)


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
