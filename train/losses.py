"""Loss terms of the fine-tuning strategies; one registry, terms compose, each counted once.

Each term reads one batch **stream** (a loader mode with its settings) and the model's
predictions on that batch; a step's loss is the weighted sum of the configured terms
(``[train] terms``), each term once, and every stream a term needs contributes one batch per
micro-step.

=========================  ==========  ======================================================
term                       stream      loss
=========================  ==========  ======================================================
single                     samples     SMAPE(ŷ, Y) (the paper's single-sample model), or
                                       MSE(ŷ, Z) with ``single_target = "Z"``
pairwise_regression        pairs       MSE(ŷa − ŷb, Za − Zb) (the paper's best strategy)
pairwise_classification    pairs_p     BCE(Φ((2√(ŷa+3/8) − 2√(ŷb+3/8)) / √2), 1[Ya > Yb]) on a
                                       track head (ŷ ≥ 0), pairs with percentile gap > 25
in_batch                   gene        α·MSE(ŷ, z) + (1 − α)·mean over i<j of
                                       ((ŷi − ŷj) − (zi − zj))², one gene per batch
=========================  ==========  ======================================================

Joint-data terms (issue 16) read streams of other data, not of the study's individuals:

=========================  ==============  ==================================================
enformer_human             enformer_human  Poisson NLL ŷ − y·log(ŷ + ε) of Enformer's human
                                           head (softplus) over all 896 bins x 5,313 tracks
                                           of Basenji2 records (196,608 bp), mean
enformer_mouse             enformer_mouse  the same on the mouse head (1,643 tracks)
mpra                       mpra            masked MSE of the predicted effect
                                           head(alt) − head(ref) vs the measured (normalised)
                                           alt − ref effect, over measured cell types
=========================  ==============  ==================================================

A new term is a :class:`Term` whose ``stream`` names a :data:`STREAMS` entry and whose ``fn``
takes (model outputs, batch, cfg); its name goes into
:data:`hapflow.sections.LOSS_TERM_HEADS` and :data:`hapflow.sections.LOSS_TERM_STREAMS` too (the
config side checks ``[train] terms`` there without importing torch); this module asserts at
import that they agree.

Each term is counted once, with its configured weight: the original code
(ni-lab/finetuning-enformer) added the pairwise term twice in joint training (once as the
"main" loss, once among the summed terms), doubling its effective weight; here
``{pairwise_regression = 1.0, mpra = 0.1}`` means exactly 1.0 x pairwise + 0.1 x mpra. Which
streams a micro-step draws is ``[train] mixing`` (:mod:`loader.mix`); a term whose stream the
micro-step does not draw adds nothing to that micro-step's loss.

Every function masks padding rows (``valid`` False) and returns a scalar tensor; an all-padding
batch gives 0 (with a gradient path), never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hapflow.sections import LOSS_TERM_HEADS, LOSS_TERM_STREAMS, TrainConfig

__all__ = [
    "Term",
    "TERMS",
    "STREAMS",
    "is_personal",
    "weighted_loss",
    "smape",
    "masked_mean",
    "clean_target",
    "single_loss",
    "pairwise_regression_loss",
    "pairwise_classification_loss",
    "in_batch_loss",
    "pair_probability",
    "poisson_nll_loss",
    "mpra_effect_loss",
]


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (N,) over ``valid`` (N,) bool rows; 0 when none is. Padding rows may
    hold NaN (their targets are NaN): they are replaced, not multiplied by 0."""
    w = valid.to(values.dtype)
    return torch.where(valid, values, torch.zeros_like(values)).sum() / w.sum().clamp(min=1.0)


def clean_target(batch: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    """``batch[key]`` as ``like``'s dtype with padding rows (NaN targets) set to 0, so no NaN
    reaches the arithmetic (a NaN there would poison gradients even where it is masked)."""
    value = batch[key].to(device=like.device, dtype=like.dtype)
    return torch.where(batch["valid"], value, torch.zeros_like(value))


def smape(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample symmetric absolute percentage error 2|ŷ − y| / (|ŷ| + |y|), shape (N,)."""
    return 2 * (pred - target).abs() / (pred.abs() + target.abs() + eps)


def single_loss(pred: torch.Tensor, batch: dict, target: str = "Y") -> torch.Tensor:
    """SMAPE on Y (the paper's single-sample model) or MSE on Z.

    Parameters
    ----------
    pred : (B,) float predictions
    batch : dict with ``Y`` or ``Z`` (B,) float32 and ``valid`` (B,) bool, on pred's device
    target : "Y" or "Z"
    """
    y = clean_target(batch, target, pred)
    per = smape(pred, y) if target == "Y" else (pred - y) ** 2
    return masked_mean(per, batch["valid"])


def pairwise_regression_loss(pred_a: torch.Tensor, pred_b: torch.Tensor,
                             batch: dict) -> torch.Tensor:
    """MSE between predicted and observed differences: mean((ŷa − ŷb) − (Za − Zb))².

    pred_a, pred_b : (B,) predictions for the pairs' two individuals; ``batch`` holds ``Z_a``,
    ``Z_b`` (B,) and ``valid`` (B,).
    """
    dz = clean_target(batch, "Z_a", pred_a) - clean_target(batch, "Z_b", pred_a)
    return masked_mean(((pred_a - pred_b) - dz) ** 2, batch["valid"])


def pair_probability(pred_a: torch.Tensor, pred_b: torch.Tensor) -> torch.Tensor:
    """log P(a expresses more than b) under the variance-stabilised (Anscombe) counts model:
    P = Φ((2√(ŷa + 3/8) − 2√(ŷb + 3/8)) / √2). Returns the normal CDF's argument d, (B,)."""
    ta = 2 * torch.sqrt(pred_a.clamp(min=0) + 0.375)
    tb = 2 * torch.sqrt(pred_b.clamp(min=0) + 0.375)
    return (ta - tb) / math.sqrt(2.0)


def pairwise_classification_loss(pred_a: torch.Tensor, pred_b: torch.Tensor,
                                 batch: dict) -> torch.Tensor:
    """BCE of P(ya > yb) = Φ(d) against 1[Ya > Yb], computed with log Φ for stability.

    pred_a, pred_b : (B,) non-negative track predictions (counts scale); ``batch`` holds ``Y_a``,
    ``Y_b`` (B,) and ``valid`` (B,).
    """
    d = pair_probability(pred_a, pred_b)
    t = (clean_target(batch, "Y_a", d) > clean_target(batch, "Y_b", d)).to(d.dtype)
    nll = -(t * torch.special.log_ndtr(d) + (1 - t) * torch.special.log_ndtr(-d))
    return masked_mean(nll, batch["valid"])


def in_batch_loss(pred: torch.Tensor, batch: dict, alpha: float = 0.5) -> torch.Tensor:
    """α·MSE(ŷ, z) + (1 − α)·mean over valid pairs i < j of ((ŷi − ŷj) − (zi − zj))².

    pred : (B,) predictions for B individuals of one gene; ``batch`` holds ``Z`` (B,) and
    ``valid`` (B,). With fewer than two valid rows the pairwise part is 0.
    """
    z = clean_target(batch, "Z", pred)
    valid = batch["valid"]
    mse = masked_mean((pred - z) ** 2, valid)
    r = pred - z  # (ŷi − ŷj) − (zi − zj) = ri − rj
    diff = (r[:, None] - r[None, :]) ** 2  # (B, B)
    both = valid[:, None] & valid[None, :]
    upper = torch.triu(torch.ones_like(both), diagonal=1)
    pair = masked_mean(diff.reshape(-1), (both & upper).reshape(-1))
    return alpha * mse + (1 - alpha) * pair


def poisson_nll_loss(pred: torch.Tensor, batch: dict, eps: float = 1e-6) -> torch.Tensor:
    """Poisson NLL (Keras' ``poisson``, Enformer's loss): mean over valid records, bins and
    tracks of ŷ − y·log(ŷ + ε) (the y-only terms dropped).

    pred : (B, bins, tracks) non-negative (softplus) predictions; ``batch`` holds ``target``
    (B, bins, tracks) float and ``valid`` (B,) bool.
    """
    y = clean_target(batch, "target", pred)
    per = (pred - y * torch.log(pred + eps)).flatten(1).mean(dim=1)  # (B,)
    return masked_mean(per, batch["valid"])


def mpra_effect_loss(pred: torch.Tensor, batch: dict) -> torch.Tensor:
    """Masked MSE of predicted vs measured MPRA effects, both alt − ref.

    pred : (B, C) predicted effects head(alt) − head(ref); ``batch`` holds ``effect`` (B, C)
    float32 (normalised alt − ref, 0 where unmeasured), ``mask`` (B, C) bool and ``valid``
    (B,). Mean over the measured (row, cell type) entries of valid rows; 0 when none is.
    """
    keep = batch["mask"].to(pred.device) & batch["valid"].to(pred.device)[:, None]
    y = batch["effect"].to(device=pred.device, dtype=pred.dtype)
    y = torch.where(keep, y, torch.zeros_like(y))
    return masked_mean(((pred - y) ** 2).reshape(-1), keep.reshape(-1))


@dataclass(frozen=True)
class Term:
    """One loss term: the stream it reads and how it scores the model's predictions.

    Attributes
    ----------
    name : str
    stream : str
        Key of :data:`STREAMS`: which batches this term needs.
    fn : callable
        ``fn(outputs, batch, cfg) -> scalar tensor``; ``outputs`` is ``{"pred": (B,)}`` for
        sample streams or ``{"pred_a", "pred_b"}`` for pair streams; ``cfg`` the TrainConfig.
    """

    name: str
    stream: str
    fn: Callable

    @property
    def head(self) -> str | None:
        """The ``[model] head`` the term needs ("track" for pairwise_classification), None: any.

        The config side's registry, :data:`hapflow.sections.LOSS_TERM_HEADS`, says it (the study
        is checked against it at load, without importing torch)."""
        return LOSS_TERM_HEADS[self.name]


STREAMS: dict[str, dict] = {
    # stream -> how the loop builds its loader: mode + LoaderConfig overrides taken from
    # TrainConfig fields ({loader_field: train_field}); pair streams yield seq_a / seq_b.
    "samples": {"mode": "train", "pairs": False},
    "pairs": {"mode": "pairwise", "pairs": True},
    "pairs_p": {"mode": "pairwise", "pairs": True,
                "from_train": {"min_percentile_diff": "classification_min_percentile_diff"}},
    "gene": {"mode": "gene", "pairs": False},
    # joint-data streams (loader.joint): no [loader] mode; kind says which loader and output
    "enformer_human": {"kind": "enformer", "organism": "human", "pairs": False},
    "enformer_mouse": {"kind": "enformer", "organism": "mouse", "pairs": False},
    "mpra": {"kind": "mpra", "pairs": False},
}
"""Batch streams. ``mode`` is the loader mode of the study's own shards; ``from_train`` maps
LoaderConfig fields to the TrainConfig fields that set them for this stream; ``kind`` (joint
data) is ``enformer`` (``organism``: which head) or ``mpra``."""


def is_personal(stream: str) -> bool:
    """Whether ``stream`` reads the study's own shards (not joint data)."""
    return "kind" not in STREAMS[stream]

TERMS: dict[str, Term] = {
    "single": Term("single", "samples",
                   lambda out, b, cfg: single_loss(out["pred"], b, cfg.single_target)),
    "pairwise_regression": Term("pairwise_regression", "pairs",
                                lambda out, b, cfg: pairwise_regression_loss(
                                    out["pred_a"], out["pred_b"], b)),
    "pairwise_classification": Term("pairwise_classification", "pairs_p",
                                    lambda out, b, cfg: pairwise_classification_loss(
                                        out["pred_a"], out["pred_b"], b)),
    "in_batch": Term("in_batch", "gene",
                     lambda out, b, cfg: in_batch_loss(out["pred"], b, cfg.in_batch_alpha)),
    "enformer_human": Term("enformer_human", "enformer_human",
                           lambda out, b, cfg: poisson_nll_loss(out["tracks"], b)),
    "enformer_mouse": Term("enformer_mouse", "enformer_mouse",
                           lambda out, b, cfg: poisson_nll_loss(out["tracks"], b)),
    "mpra": Term("mpra", "mpra", lambda out, b, cfg: mpra_effect_loss(out["effect"], b)),
}
"""Every loss term by name; add joint-data terms here (see the module docstring)."""

assert TERMS.keys() == LOSS_TERM_HEADS.keys() == LOSS_TERM_STREAMS.keys() and all(
    term.name == name and term.stream == LOSS_TERM_STREAMS[name]
    for name, term in TERMS.items()), (
    "train.losses.TERMS and hapflow.sections.LOSS_TERM_HEADS / LOSS_TERM_STREAMS must name the "
    "same loss terms and streams")


def _to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device``, except the uint8 sequences (the model's caller
    one-hot encodes those on the device itself)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
                and not k.startswith("seq") else v) for k, v in batch.items()}


def weighted_loss(outputs: dict[str, dict[str, torch.Tensor]], group: dict[str, dict],
                  cfg: TrainConfig, device: torch.device
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of the configured terms (``cfg.loss_terms``) whose streams ``group``
    holds, each term once (terms of streams not drawn this micro-step add nothing).

    Parameters
    ----------
    outputs : {stream: {"pred": (B,)}, {"pred_a": (B,), "pred_b": (B,)}, {"tracks":
        (B, bins, tracks)} or {"effect": (B, C)}}, on ``device``
    group : {stream: batch} the predictions were made on
    cfg : TrainConfig (terms, weights and the terms' own settings)

    Returns
    -------
    (loss, {term: value}) scalar tensors on ``device`` (the values detached; only the terms
    of drawn streams).
    """
    parts = {}
    total = torch.zeros((), device=device)
    for name, weight in cfg.loss_terms.items():
        term = TERMS[name]
        if term.stream not in group:
            continue
        value = term.fn(outputs[term.stream], _to_device(group[term.stream], device), cfg)
        parts[name] = value.detach()
        total = total + weight * value
    return total, parts
