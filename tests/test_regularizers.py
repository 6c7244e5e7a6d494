"""Regularizer components: penalty values, analytic gradients, max-norm projection, checks, batch keys."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from overfit.errors import ConfigError
from overfit.maths import regularizers
from overfit.maths.regularizers import L1, L2, ElasticNet, MaxNorm, NoPenalty, Regularizer

W = [torch.tensor([[1.0, -2.0], [0.5, 0.0]]), torch.tensor([[3.0, -4.0, 0.0]])]


def test_import_does_not_load_torch() -> None:
    code = "import overfit.maths.regularizers, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("reg", "expected"),
    [
        (NoPenalty(0.5), 0.0),
        (L2(0.5), 0.5 * (1 + 4 + 0.25 + 9 + 16)),
        (L1(0.5), 0.5 * (1 + 2 + 0.5 + 3 + 4)),
        (ElasticNet(0.5, beta=2.0), 0.5 * (2 * 30.25 + 10.5)),
    ],
)
def test_penalty_is_lambda_times_r(reg: Regularizer, expected: float) -> None:
    reg.check()
    penalty = reg.penalty(W)
    assert penalty.dim() == 0
    assert penalty.item() == pytest.approx(expected)
    assert reg.strength == 0.5


def test_max_norm_has_no_penalty() -> None:
    reg = MaxNorm(c=1.0)
    reg.check()
    assert reg.strength == 0 and reg.penalty(W).item() == 0 and reg.projects
    assert not any(cls.projects for cls in regularizers.SHIPPED if cls is not MaxNorm)


def test_zero_strength_gives_zero_penalty() -> None:
    assert L2(0.0).penalty(W).item() == 0
    assert L2().strength == 0  # the default


def test_penalty_is_on_the_weights_device_and_dtype() -> None:
    weights = [torch.ones(2, 2, dtype=torch.float64, device="meta")]
    penalty = L2(1.0).penalty(weights)
    assert penalty.dtype == torch.float64 and penalty.device.type == "meta" and penalty.dim() == 0


def test_penalty_of_no_weights_is_zero() -> None:
    assert L2(1.0).penalty([]).item() == 0


@pytest.mark.parametrize("reg", [L2(0.3), L1(0.3), ElasticNet(0.3, beta=0.7)])
def test_analytic_grad_equals_autograd(reg: Regularizer) -> None:
    weights = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(2, 3, dtype=torch.float64)]
    weights[1].requires_grad_()
    auto = torch.autograd.grad(reg.penalty(weights), weights)
    for a, r in zip(reg.grad(weights), auto, strict=True):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("reg", [NoPenalty(0.3), MaxNorm(c=1.0)])
def test_grad_is_zero_without_a_penalty(reg: Regularizer) -> None:
    for w, g in zip(W, reg.grad(W), strict=True):
        assert torch.equal(g, torch.zeros_like(w))


def test_penalty_accepts_a_generator_and_keeps_dtype() -> None:
    weights = [torch.ones(2, 2, dtype=torch.float64)]
    penalty = L2(1.0).penalty(w for w in weights)
    assert penalty.dtype == torch.float64 and penalty.item() == 4


def test_max_norm_projects_rows_onto_the_ball() -> None:
    reg = MaxNorm(c=2.0)
    w = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]], requires_grad=True)
    before = w.detach().clone()
    reg.project_([w])
    torch.testing.assert_close(torch.linalg.vector_norm(w.detach(), dim=1), torch.tensor([2.0, 1.0, 0.0]))
    torch.testing.assert_close(w.detach()[0], before[0] * 2 / 5)  # rescaled, direction kept
    assert torch.equal(w.detach()[1:], before[1:])  # rows inside the ball untouched
    assert w.grad_fn is None  # the projection is not part of the graph


def test_max_norm_projects_a_1d_weight_as_one_row() -> None:
    w = torch.tensor([6.0, 8.0])
    MaxNorm(c=5.0).project_([w])
    torch.testing.assert_close(w, torch.tensor([3.0, 4.0]))


def test_max_norm_defaults_to_c_3() -> None:
    assert MaxNorm().c == 3.0


@pytest.mark.parametrize("reg", [NoPenalty(1.0), L2(1.0), L1(1.0), ElasticNet(1.0, beta=0.5)])
def test_projection_is_a_no_op_for_penalties(reg: Regularizer) -> None:
    w = torch.randn(3, 3) * 10
    before = w.clone()
    reg.project_([w])
    assert torch.equal(w, before)


@pytest.mark.parametrize(
    ("reg", "key"),
    [
        (L2(-0.1), "regularizer.strength"),
        (L1("big"), "regularizer.strength"),  # type: ignore[arg-type]
        (L2(True), "regularizer.strength"),  # a bool is not a number
        (L2(float("nan")), "regularizer.strength"),
        (NoPenalty(-1.0), "regularizer.strength"),
        (ElasticNet(0.1, beta=None), "regularizer.beta"),
        (ElasticNet(0.1), "regularizer.beta"),
        (ElasticNet(0.1, beta=-1.0), "regularizer.beta"),
        (ElasticNet(-0.1, beta=1.0), "regularizer.strength"),
        (MaxNorm(c=0.0), "regularizer.c"),
        (MaxNorm(c=None), "regularizer.c"),  # type: ignore[arg-type]
        (MaxNorm(c=float("inf")), "regularizer.c"),
    ],
)
def test_check_rejects_bad_knobs(reg: Regularizer, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        reg.check()
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_check_messages() -> None:
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        L2(-1).check()
    with pytest.raises(ConfigError, match="elastic_net needs beta, the weight of its L2 part"):
        ElasticNet(0.1).check()


def test_max_norm_refuses_a_strength() -> None:
    with pytest.raises(TypeError):
        MaxNorm(strength=0.1)  # type: ignore[call-arg]
    with pytest.raises(InstantiationException, match="strength"):
        instantiate({"_target_": "overfit.maths.regularizers.MaxNorm", "strength": 0.1, "c": 1.0})


def test_yaml_keys_are_constructor_kwargs() -> None:
    reg = instantiate({"_target_": "overfit.maths.regularizers.ElasticNet", "strength": 1e-3, "beta": 0.5})
    assert isinstance(reg, ElasticNet) and (reg.strength, reg.beta) == (1e-3, 0.5)
    none = instantiate({"_target_": "overfit.maths.regularizers.NoPenalty", "strength": 0})  # a λ = 0 sweep composes
    none.check()
    assert none.penalty(W).item() == 0


def test_shipped() -> None:
    assert regularizers.SHIPPED == (NoPenalty, L2, L1, ElasticNet, MaxNorm)
    assert all(issubclass(cls, Regularizer) for cls in regularizers.SHIPPED)


def test_repr_shows_the_knobs() -> None:
    assert repr(L2(0.5)) == "L2(strength=0.5)"
    assert repr(ElasticNet(0.5, beta=2.0)) == "ElasticNet(strength=0.5, beta=2.0)"
    assert repr(MaxNorm(c=1.0)) == "MaxNorm(c=1.0)"


# --- batch keys ---------------------------------------------------------------------
def test_batch_key_equal_for_equal_knobs_and_when_only_strength_differs() -> None:
    assert L2(0.1).batch_key() == L2(0.1).batch_key() == L2(10.0).batch_key()
    assert ElasticNet(0.1, beta=0.5).batch_key() == ElasticNet(3.0, beta=0.5).batch_key()
    assert MaxNorm(c=2.0).batch_key() == MaxNorm(c=2.0).batch_key()
    hash(L2(0.1).batch_key())


def test_batch_key_differs_when_a_shared_knob_or_the_class_differs() -> None:
    assert ElasticNet(0.1, beta=0.5).batch_key() != ElasticNet(0.1, beta=0.7).batch_key()
    assert MaxNorm(c=2.0).batch_key() != MaxNorm(c=3.0).batch_key()
    assert L2(0.1).batch_key() != L1(0.1).batch_key() != NoPenalty(0.1).batch_key()


def test_a_subclass_knob_is_in_the_batch_key_without_overriding_anything() -> None:
    class Scaled(L2):
        def __init__(self, strength: float = 0.0, scale: float = 1.0) -> None:
            super().__init__(strength)
            self.scale = scale

    assert Scaled(0.1, scale=2.0).batch_key() != Scaled(0.1, scale=3.0).batch_key()
    assert Scaled(0.1, scale=2.0).batch_key() == Scaled(5.0, scale=2.0).batch_key()
    assert Scaled(0.1).batch_key() != L2(0.1).batch_key()
