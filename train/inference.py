"""Predictions on the device: one-hot there, forward and reverse-complement averaged, gathered.

Used by validation in the loop and by ``python -m train.predict``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from hapflow.metrics import grouped_pearson
from loader.device import reverse_complement_one_hot, to_one_hot
from loader.distributed import gather_predictions, merge_batches

__all__ = ["autocast", "forward_codes", "predict_codes", "predict_loader", "per_gene_pearson"]


def autocast(device: torch.device, precision: str):
    """bf16 autocast on the device when ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_codes(model, seq: torch.Tensor, tss_index: torch.Tensor, device: torch.device,
                  precision: str = "fp32") -> torch.Tensor:
    """Model predictions for uint8 windows.

    Parameters
    ----------
    model : callable ``model(x, tss_index) -> (N,)``
    seq : (N, 2, L) uint8 codes (CPU or device)
    tss_index : (N,) int64, the TSS's index in each window (0-based)

    Returns
    -------
    (N,) float32 predictions on ``device``.
    """
    x = to_one_hot(seq, torch.float32, device)  # (N, 2, L, 4)
    tss = tss_index.to(device, non_blocking=True)
    with autocast(device, precision):
        return model(x, tss).float()


def predict_codes(model, seq: torch.Tensor, tss_index: torch.Tensor, device: torch.device,
                  precision: str = "fp32", rc_average: bool = True) -> dict[str, torch.Tensor]:
    """Forward, reverse-complement and averaged predictions (no grad).

    The reverse complement of a window flips positions and bases, so its TSS moves from index t
    to L - 1 - t.

    Returns
    -------
    dict of (N,) float32 tensors: ``forward``, ``rc`` (NaN when ``rc_average`` is False),
    ``prediction`` (their mean, or ``forward``).
    """
    with torch.no_grad():
        x = to_one_hot(seq, torch.float32, device)
        tss = tss_index.to(device, non_blocking=True)
        with autocast(device, precision):
            fwd = model(x, tss).float()
            if rc_average:
                rc = model(reverse_complement_one_hot(x), x.shape[-2] - 1 - tss).float()
            else:
                rc = torch.full_like(fwd, float("nan"))
    pred = (fwd + rc) / 2 if rc_average else fwd
    return {"forward": fwd, "rc": rc, "prediction": pred}


def predict_loader(model, loader, device: torch.device, precision: str = "fp32",
                   rc_average: bool = True) -> dict:
    """Predict every sample of an eval-mode loader, gathered from all ranks in manifest order.

    Returns
    -------
    dict of NumPy arrays / lists, one row per sample (padding dropped): ``index`` (manifest
    row), ``gene``, ``individual``, ``Y``, ``Z``, ``prediction_forward``, ``prediction_rc``,
    ``prediction``.
    """
    parts = []
    for batch in loader:
        out = predict_codes(model, batch["seq"], batch["tss_index"], device, precision,
                            rc_average)
        parts.append({
            "index": batch["index"], "valid": batch["valid"], "gene": batch["gene"],
            "individual": batch["individual"], "Y": batch["Y"], "Z": batch["Z"],
            "prediction_forward": out["forward"], "prediction_rc": out["rc"],
            "prediction": out["prediction"],
        })
    local = merge_batches(parts)
    gathered = gather_predictions(local)
    gathered.pop("valid")
    return gathered


def per_gene_pearson(gene: list, pred: np.ndarray, obs: np.ndarray,
                     min_individuals: int = 3) -> dict[str, float]:
    """Pearson r between predictions and observations across individuals, per gene.

    :func:`hapflow.metrics.grouped_pearson` after grouping rows by gene: constant predictions
    give r = 0, as the paper counts them; genes with constant observations or fewer than
    ``min_individuals`` rows are left out.

    Parameters
    ----------
    gene : list of str, length N
    pred, obs : (N,) float arrays

    Returns
    -------
    dict gene -> r
    """
    gene_arr = np.asarray(gene)
    order = np.argsort(gene_arr, kind="stable")
    names, starts, counts = np.unique(gene_arr[order], return_index=True, return_counts=True)
    offsets = np.append(starts, len(order))
    r, _, _ = grouped_pearson(np.asarray(pred, np.float64)[order],
                              np.asarray(obs, np.float64)[order], offsets)
    keep = (counts >= min_individuals) & np.isfinite(r)
    return {str(g): float(x) for g, x in zip(names[keep], r[keep], strict=True)}
