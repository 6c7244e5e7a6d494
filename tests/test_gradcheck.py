"""The gradient-check report: every item passes, is printed, and a wrong gradient would fail."""

from __future__ import annotations

import pytest
import torch

from overfit.maths import gradcheck, losses, regularizers


def test_main_passes_and_prints_a_row_per_item(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    assert gradcheck.main([]) == 0
    printed = capsys.readouterr().out
    rows = gradcheck.run()
    for row in rows:
        assert row.what in printed
    assert printed.count("pass") >= len(rows)


def test_run_covers_every_loss_output_regularizer_activation_and_the_layer() -> None:
    names = {row.what for row in gradcheck.run()}
    expected = {f"{cls().name} · {output}" for cls in losses.SHIPPED for output in cls.outputs}
    assert "multiclass_hinge · identity" in expected and "cross_entropy · sigmoid" in expected
    expected |= {f"regularizer {getattr(reg, '__name__', type(reg).__name__)}" for reg in regularizers.SHIPPED}
    expected |= {"sigmoid", "softmax", "linear layer"}
    assert names == expected


def test_each_shipped_regularizer_gets_the_knobs_it_takes() -> None:
    built = {type(reg).__name__: reg for reg in map(gradcheck._shipped_regularizer, regularizers.SHIPPED)}
    assert built["ElasticNet"].strength == 0.3 and built["ElasticNet"].beta == 0.7
    assert built["MaxNorm"].c == 1.0
    assert built["L2"].strength == built["NoPenalty"].strength == 0.3


def test_every_row_is_tight_in_float64() -> None:
    for row in gradcheck.run(torch.float64):
        assert row.passed, row
        assert row.rel_autograd < 1e-12 and row.abs_fd < 1e-7, row


def test_a_wrong_gradient_fails() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    wrong = [3 * x**2 + 1e-3]  # the true gradient of Σx³ is 3x²
    row = gradcheck._row("cube", wrong, lambda v: (v**3).sum(), [x])
    assert not row.passed and row.abs_fd > 1e-4


def test_float32_passes_too() -> None:
    assert gradcheck.main(["--dtype", "float32"]) == 0
