"""How an epoch's items are dealt to ranks and, inside a rank, to DataLoader workers.

Items are rows of an int64 array of shape (M, k) (see :mod:`loader.plan`; -1: padding). An
epoch's items are laid out as

    [ rank 0: nb * B items | rank 1: nb * B items | ... ]

and inside a rank, worker w gets a contiguous run of the rank's batches: the batches j with
j % num_workers == w, because torch's DataLoader hands out batches of its workers round-robin;
so the rank's j-th batch is worker (j % nw)'s (j // nw)-th batch, whatever the worker count.

A train epoch gives every rank ``nb`` full batches and drops the remainder
(:func:`train_batches`); an eval pass gives every item once, in contiguous, near-equal rank
ranges, and pads every rank to the same batch count (:func:`eval_batches`), so DDP never waits
on a rank that ran dry.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "train_batches",
    "eval_batches",
    "rank_items",
    "rank_batches",
    "worker_batch_counts",
    "worker_items",
    "worker_skip",
]


def train_batches(n_items: int, world_size: int, batch_size: int,
                  epoch_batches: int | None = None) -> int:
    """Batches per rank in a train epoch: ``epoch_batches`` or one pass without the remainder.

    Raises
    ------
    ValueError
        If one pass does not fill a single batch on every rank.
    """
    if epoch_batches is not None:
        return epoch_batches
    nb = n_items // (world_size * batch_size)
    if nb == 0:
        raise ValueError(
            f"{n_items} item(s) do not fill one batch of {batch_size} on each of {world_size} "
            "rank(s): lower batch_size or set epoch_batches (items are then reused)"
        )
    return nb


def eval_batches(n_items: int, world_size: int, batch_size: int) -> int:
    """Batches per rank in an eval pass: every item once, the last batches padded."""
    return max(1, math.ceil(math.ceil(n_items / world_size) / batch_size))


def rank_items(items: np.ndarray, rank: int, world_size: int, n_batches: int,
               batch_size: int, pad: bool) -> np.ndarray:
    """The items of one rank, shape (n_batches * batch_size, k), int64.

    ``pad=False`` (train): ``items`` holds ``world_size * n_batches * batch_size`` rows; rank r
    takes the r-th run. ``pad=True`` (eval): rank r takes the contiguous run
    ``[r * M // world_size, (r + 1) * M // world_size)`` and is padded with -1 rows.
    """
    per = n_batches * batch_size
    if not pad:
        if len(items) < world_size * per:
            raise ValueError(f"plan holds {len(items)} items, needs {world_size * per}")
        return items[rank * per:(rank + 1) * per]
    m = len(items)
    lo, hi = rank * m // world_size, (rank + 1) * m // world_size
    if hi - lo > per:
        raise ValueError(f"rank {rank} has {hi - lo} items for {per} slots")
    out = np.full((per, items.shape[1]), -1, dtype=np.int64)
    out[: hi - lo] = items[lo:hi]
    return out


def rank_batches(batches: np.ndarray, rank: int, world_size: int, n_batches: int,
                 pad: bool) -> np.ndarray:
    """The items of one rank from whole batches, shape (n_batches * B, 1), int64.

    ``pad=False`` (train): ``batches`` holds at least ``world_size * n_batches`` rows; rank r
    takes rows ``[r * n_batches, (r + 1) * n_batches)``. ``pad=True`` (eval): rank r takes rows
    ``[r * T // world_size, (r + 1) * T // world_size)`` and is padded with rows of -1.
    """
    b = batches.shape[1]
    if not pad:
        if len(batches) < world_size * n_batches:
            raise ValueError(f"plan holds {len(batches)} batches, needs {world_size * n_batches}")
        return batches[rank * n_batches:(rank + 1) * n_batches].reshape(-1, 1)
    t = len(batches)
    lo, hi = rank * t // world_size, (rank + 1) * t // world_size
    if hi - lo > n_batches:
        raise ValueError(f"rank {rank} has {hi - lo} batches for {n_batches} slots")
    out = np.full((n_batches, b), -1, dtype=np.int64)
    out[: hi - lo] = batches[lo:hi]
    return out.reshape(-1, 1)


def worker_batch_counts(n_batches: int, num_workers: int) -> list[int]:
    """Batches of each worker when ``n_batches`` are dealt round-robin: worker w gets j % nw == w."""
    nw = max(num_workers, 1)
    return [len(range(w, n_batches, nw)) for w in range(nw)]


def worker_items(items: np.ndarray, worker: int, num_workers: int, batch_size: int) -> np.ndarray:
    """The contiguous run of a rank's items that ``worker`` loads.

    Parameters
    ----------
    items : np.ndarray, shape (n_batches * batch_size, k)
        The rank's items.

    Returns
    -------
    np.ndarray, shape (count * batch_size, k)
        The worker's items; its i-th batch is the rank's batch ``i * num_workers + worker``.
    """
    counts = worker_batch_counts(len(items) // batch_size, num_workers)
    lo = sum(counts[:worker]) * batch_size
    return items[lo: lo + counts[worker] * batch_size]


def worker_skip(consumed: int, worker: int, num_workers: int) -> int:
    """Batches ``worker`` skips when its rank has already consumed ``consumed`` batches."""
    return len(range(worker, consumed, max(num_workers, 1)))
