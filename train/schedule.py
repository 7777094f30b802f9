"""A run's schedule: micro-batches per optimizer step and the learning-rate multiplier."""

from __future__ import annotations

import math

from hapflow.sections import ConfigError

__all__ = ["accumulation_steps", "warmup_cosine"]


def accumulation_steps(effective_batch: int, batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step so that one step sees ``effective_batch`` items.

    Raises
    ------
    ConfigError
        When ``effective_batch`` is not a multiple of ``batch_size x world_size``.
    """
    per_step = batch_size * world_size
    if effective_batch % per_step:
        raise ConfigError(
            f"[train] effective_batch = {effective_batch} is not a multiple of [loader] "
            f"batch_size x devices = {batch_size} x {world_size} = {per_step}: choose an "
            f"effective batch of {max(1, effective_batch // per_step) * per_step} or another "
            "batch size")
    return effective_batch // per_step


def warmup_cosine(warmup: int, total: int, min_ratio: float = 0.0):
    """LR multiplier for LambdaLR: linear 0 -> 1 over ``warmup`` steps, cosine to ``min_ratio``
    at ``total``. (A plain function, which LambdaLR leaves out of its state dict.)"""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        span = max(total - warmup, 1)
        progress = min(max(step - warmup, 0) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
