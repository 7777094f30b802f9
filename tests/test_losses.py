"""Each strategy's loss against a hand computation on a small literal batch."""

from __future__ import annotations

import math

import pytest
import torch

from hapflow.sections import LOSS_TERM_HEADS, TrainConfig
from train.losses import (
    TERMS,
    in_batch_loss,
    masked_mean,
    pairwise_classification_loss,
    pairwise_regression_loss,
    single_loss,
)

T = torch.tensor


def test_single_smape_on_y_by_hand():
    pred = T([1.0, 2.0, 4.0])
    batch = {"Y": T([2.0, 2.0, float("nan")]), "valid": T([True, True, False])}
    # SMAPE: 2|1-2|/(1+2) = 2/3, 0; the padding row (NaN target) is ignored
    assert single_loss(pred, batch, "Y").item() == pytest.approx((2 / 3 + 0) / 2)


def test_single_mse_on_z_by_hand():
    pred = T([0.5, -1.0])
    batch = {"Z": T([1.5, 1.0]), "valid": T([True, True])}
    assert single_loss(pred, batch, "Z").item() == pytest.approx((1.0 + 4.0) / 2)


def test_pairwise_regression_by_hand():
    pa, pb = T([1.0, 0.0, 3.0]), T([0.0, 0.0, 1.0])
    batch = {"Z_a": T([0.5, 1.0, 9.0]), "Z_b": T([0.0, 0.0, 9.0]),
             "valid": T([True, True, True])}
    # (1 - 0.5)^2 = 0.25, (0 - 1)^2 = 1, (2 - 0)^2 = 4
    assert pairwise_regression_loss(pa, pb, batch).item() == pytest.approx((0.25 + 1 + 4) / 3)


def test_pairwise_classification_by_hand():
    pa, pb = T([4.0, 1.0]), T([1.0, 1.0])
    batch = {"Y_a": T([2.0, 0.0]), "Y_b": T([1.0, 3.0]), "valid": T([True, True])}

    def phi(x):
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    d0 = (2 * math.sqrt(4.375) - 2 * math.sqrt(1.375)) / math.sqrt(2)
    p0, p1 = phi(d0), phi(0.0)  # pair 0: a > b observed; pair 1: a < b observed
    expected = (-math.log(p0) - math.log(1 - p1)) / 2
    assert pairwise_classification_loss(pa, pb, batch).item() == pytest.approx(expected,
                                                                             rel=1e-6)


def test_pairwise_classification_is_finite_for_extreme_gaps():
    pa, pb = T([1e6]), T([0.0])
    batch = {"Y_a": T([0.0]), "Y_b": T([1.0]), "valid": T([True])}  # confidently wrong
    value = pairwise_classification_loss(pa, pb, batch)
    assert torch.isfinite(value) and value.item() > 100


def test_in_batch_by_hand():
    pred = T([1.0, 2.0, 0.0, 7.0])
    batch = {"Z": T([0.0, 2.0, 1.0, float("nan")]), "valid": T([True, True, True, False])}
    # residuals r = pred - z over valid rows: 1, 0, -1; MSE = 2/3
    # pairs i<j: (1-0)^2, (1+1)^2, (0+1)^2 -> 1, 4, 1 -> mean 2
    alpha = 0.3
    expected = alpha * (2 / 3) + (1 - alpha) * 2.0
    assert in_batch_loss(pred, batch, alpha).item() == pytest.approx(expected)


def test_padding_targets_never_poison_gradients():
    pred = T([1.0, 2.0], requires_grad=True)
    nan = float("nan")
    batch = {"Y": T([nan, nan]), "Z": T([nan, nan]), "Z_a": T([0.5, nan]),
             "Z_b": T([0.0, nan]), "valid": T([False, False])}
    for value in (single_loss(pred, batch, "Y"), single_loss(pred, batch, "Z"),
                  in_batch_loss(pred, batch), pairwise_regression_loss(pred, pred * 2, batch)):
        pred.grad = None
        value.backward()
        assert value.item() == 0.0 and torch.equal(pred.grad, torch.zeros(2))
    assert masked_mean(T([nan, 3.0]), T([False, True])).item() == 3.0


def test_terms_compose_and_config_checks_them():
    cfg = TrainConfig(strategy="pairwise_regression",
                      terms={"pairwise_regression": 1.0, "single": 0.5})
    assert cfg.loss_terms == {"pairwise_regression": 1.0, "single": 0.5}
    assert {TERMS[t].stream for t in cfg.loss_terms} == {"pairs", "samples"}
    assert TrainConfig(strategy="single").loss_terms == {"single": 1.0}
    with pytest.raises(ValueError, match="unknown loss term"):
        TrainConfig(terms={"pairwise_regression": 1.0, "poisson": 1.0})
    with pytest.raises(ValueError, match="must include the strategy"):
        TrainConfig(strategy="single", terms={"in_batch": 1.0})
    assert TERMS["pairwise_classification"].head == "track"


def test_terms_are_the_config_registry_of_terms_and_heads():
    assert TERMS.keys() == LOSS_TERM_HEADS.keys()
    for name, term in TERMS.items():
        assert term.name == name and term.head == LOSS_TERM_HEADS[name]
