"""Rank discovery and gathering eval predictions across ranks.

Eval loaders pad every rank to the same number of batches; padding rows have ``valid`` False.
:func:`gather_predictions` collects each rank's rows (``torch.distributed.all_gather_object``),
drops padding and restores manifest order::

    preds = {"index": batch["index"], "valid": batch["valid"], "pred": out, "gene": batch["gene"]}
    ...  # concatenate over batches with merge_batches, then
    allp = gather_predictions(merge_batches(per_batch))   # on every rank
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["rank_and_world", "merge_batches", "gather_predictions"]


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): the arguments, else torch.distributed, else RANK/WORLD_SIZE, else (0, 1).

    Raises
    ------
    ValueError
        ``rank`` outside ``[0, world_size)``.
    """
    if rank is None or world_size is None:
        if dist.is_available() and dist.is_initialized():
            r, w = dist.get_rank(), dist.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


def _to_numpy(value):
    """Tensors (any device, bf16 included) to NumPy; other values unchanged."""
    if hasattr(value, "detach"):
        t = value.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    return value


def merge_batches(batches: Sequence[Mapping]) -> dict:
    """Concatenate per-batch dicts (tensors, arrays or lists per key) along the first axis."""
    if not batches:
        return {}
    out = {}
    for key in batches[0]:
        values = [_to_numpy(b[key]) for b in batches]
        if isinstance(values[0], np.ndarray):
            out[key] = np.concatenate(values)
        else:
            out[key] = [x for v in values for x in v]
    return out


def gather_predictions(local: Mapping, valid_key: str = "valid", order_key: str | None = "index",
                       group=None) -> dict:
    """Gather per-rank prediction columns, drop padding, order by ``order_key``.

    Parameters
    ----------
    local : mapping of str to tensor, np.ndarray or list, each of length M (this rank's rows)
        Must hold ``valid_key`` (bool); tensors may live on any device.
    valid_key : str
        Rows where it is False (padding) are dropped.
    order_key : str, optional
        Rows are sorted by it (the manifest row ``index``); None keeps rank order.
    group : torch.distributed ProcessGroup, optional

    Returns
    -------
    dict
        The same keys, NumPy arrays or lists, every rank's valid rows once, on every rank.
        Without an initialized process group, this rank's rows alone.

    Raises
    ------
    ValueError
        Columns of different lengths, a missing ``valid_key``, or a duplicated ``order_key``
        value (a sample predicted twice).
    """
    cols = {k: _to_numpy(v) for k, v in local.items()}
    if valid_key not in cols:
        raise ValueError(f"gather_predictions needs a {valid_key!r} column (the batches' mask)")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns have different lengths: {lengths}")
    parts = [cols]
    if dist.is_available() and dist.is_initialized():
        parts = [None] * dist.get_world_size(group)
        dist.all_gather_object(parts, cols, group=group)
    merged = merge_batches(parts)
    keep = np.asarray(merged[valid_key], dtype=bool)
    idx = np.flatnonzero(keep)
    if order_key is not None and order_key in merged:
        key = np.asarray(merged[order_key])[idx]
        if len(np.unique(key)) != len(key):
            raise ValueError(f"some {order_key} values appear on more than one row")
        idx = idx[np.argsort(key, kind="stable")]
    return {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx])
            for k, v in merged.items()}
