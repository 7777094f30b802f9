"""The loader's configuration: TOML section ``[loader]`` of a study file.

Load it with :func:`prep.config.load_config`::

    from prep.config import load_config
    from loader import LoaderConfig
    cfg = load_config(LoaderConfig, "configs/demo.toml", "loader", {"batch_size": 4})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["LoaderConfig"]


@dataclass(frozen=True)
class LoaderConfig:
    """How shards become batches (TOML section ``[loader]``)."""

    batch_size: int = 8
    """Samples (or pairs) per batch on each rank."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0: load in the main process)."""
    shuffle_buffer: int = 1024
    """Train modes: samples (pairs) read together in each worker (rounded up to a multiple of
    batch_size); each lane is shuffled in blocks of shuffle_buffer / lanes items (see lanes);
    memory is about shuffle_buffer x 2 x L bytes."""
    lanes: int | None = None
    """Train modes (train, pairwise, gene): the epoch's reading order is cut into this many lanes
    read side by side (one sample, in gene mode one batch, of each lane in turn), so a batch
    holds samples of about min(lanes, batch_size) genes, where consecutive samples of the
    gene-sorted shards would give few. Default (None): batch_size. More lanes than batch_size
    (read in a spread order) make the genes a run of batches sees change faster: each lane
    covers fewer genes of the epoch. Each worker then reads that many places of its shards at
    once and holds about lanes x group_size decoded samples besides the shuffle buffer; 1: one
    lane (consecutive samples, a plain block shuffle)."""
    seed: int = 0
    """Seed of shard order, shuffling, pair sampling and augmentation (with epoch, rank, worker)."""
    rc_prob: float = 0.5
    """Train modes: probability of reverse-complementing a sample (both haplotypes together)."""
    max_shift: int = 3
    """Train modes: the TSS moves by a uniform random shift in [-max_shift, max_shift] bases."""
    shift_fill: Literal["flank", "N"] = "flank"
    """Bases shifted into the window: the stored real flanks (needs [shard] flank >= max_shift)
    or N."""
    length: int | None = None
    """Length of the windows in batches, cropped around the TSS (default: the stored L)."""
    epoch_batches: int | None = None
    """Train modes: batches per rank per epoch (default: every sample or pair once, less the
    remainder that does not fill a batch on every rank)."""
    pairs_per_gene: int = 250
    """Pairwise mode on the train split: pairs drawn per gene per epoch (the paper: 250)."""
    val_pairs_per_gene: int = 100
    """Pairwise mode on other splits: the fixed pairs per gene (the paper: 100)."""
    min_percentile_diff: float | None = None
    """Pairwise mode: keep only pairs whose P differs by more than this (the paper's
    classification variant: 25); None keeps every pair."""
    on_error: Literal["raise", "skip"] = "raise"
    """A corrupt or truncated shard: raise an error naming it, or skip the rest of it (its
    missing samples become padding with valid = False, counted and logged)."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead."""
    pin_memory: bool = False
    """Return batches in pinned memory (faster host-to-GPU copies)."""
    keep_freed_memory: bool = True
    """Loading processes (the workers; the main process too when num_workers = 0) keep freed
    memory for reuse instead of returning it to the OS (glibc only), so each decoded group does
    not page-fault fresh memory: about 1.6x more samples/s, at the cost of RSS staying at peak."""
    worker_start: Literal["default", "fork", "spawn", "forkserver"] = "default"
    """How worker processes start; "default" is Python's default (fork on Linux up to Python
    3.13; inside processes started by spawn, spawn, which re-imports everything per worker)."""
    timeout_s: float = 120.0
    """Network read timeout for http(s) shards, in seconds."""
    verify: bool = False
    """Verify the split's shards (prep.verify: file checksums against meta.json, every member)
    before loading; needs a local shards folder. Members are always checked as they are read."""

    def __post_init__(self):
        checks = [
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.shuffle_buffer >= 0, "shuffle_buffer must be >= 0"),
            (self.lanes is None or self.lanes > 0, "lanes must be > 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (0.0 <= self.rc_prob <= 1.0, "rc_prob must be between 0 and 1"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.length is None or self.length > 0, "length must be > 0"),
            (self.epoch_batches is None or self.epoch_batches > 0, "epoch_batches must be > 0"),
            (self.pairs_per_gene > 0 and self.val_pairs_per_gene > 0,
             "pairs_per_gene and val_pairs_per_gene must be > 0"),
            (self.min_percentile_diff is None or self.min_percentile_diff >= 0,
             "min_percentile_diff must be >= 0"),
            (self.prefetch_factor > 0, "prefetch_factor must be > 0"),
            (self.timeout_s > 0, "timeout_s must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"[loader] {message}")
