"""The reading order of a train epoch: seeded shard orders, thinning, and lanes.

Shards are gene-sorted, so samples read in shard order come a gene at a time. A train pass
therefore

1. reads the shards in a seeded order (:func:`shard_order`, :func:`stream_order`);
2. is thinned to the items the epoch still wants, evenly over the whole pass, so a short epoch
   spans every shard and gene (:func:`thin`);
3. is cut into ``lanes`` contiguous lanes read side by side, each shuffled in blocks
   (:func:`interleave_lanes`): consecutive items come from places of the pass far apart
   (different genes), while each lane still reads its shards front to back, so a worker reads
   each gene record once per run of batches that needs it.

Every draw comes from :func:`seeded_rng` ``(seed, stage, *keys)``, never from time or process
ids. :func:`group_runs` and :func:`shuffle_segments` are the segment kernels the plans
(:mod:`loader.plan`) are built from.
"""

from __future__ import annotations

import zlib

import numpy as np
from numba import njit

__all__ = [
    "seeded_rng",
    "shard_order",
    "stream_order",
    "thin",
    "group_runs",
    "shuffle_segments",
    "block_shuffle",
    "interleave_lanes",
]


def seeded_rng(seed: int, stage: str, *keys: int) -> np.random.Generator:
    """A generator seeded by ``(seed, stage, *keys)`` only (never by time or process id).

    Parameters
    ----------
    seed : int, >= 0
    stage : str
        Names the use ("shards", "shuffle", "augment", "pairs"), so stages draw independent
        streams from the same keys.
    keys : int, >= 0
        E.g. epoch, rank, worker, batch.
    """
    return np.random.default_rng([seed, zlib.crc32(stage.encode()), *map(int, keys)])


def shard_order(n_shards: int, seed: int, epoch: int, cycle: int = 0) -> np.ndarray:
    """A seeded permutation of shard ids for one epoch (and cycle), shape (n_shards,), int64."""
    return seeded_rng(seed, "shards", epoch, cycle).permutation(n_shards)


def stream_order(shard: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Positions of samples when shards are read in ``order``.

    Parameters
    ----------
    shard : np.ndarray, shape (N,), int
        Shard id of each sample (samples in manifest order).
    order : np.ndarray, shape (n_shards,), int
        Shard ids in reading order.

    Returns
    -------
    np.ndarray, shape (N,), int64
        Sample positions: shards in ``order``, manifest order inside each shard.
    """
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[np.asarray(order)] = np.arange(len(order))
    # a stable sort keeps manifest order inside a shard (timsort: O(N) on shard-sorted input)
    return np.argsort(rank_of[np.asarray(shard)], kind="stable").astype(np.int64)


def thin(n: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """``keep`` of ``range(n)``, evenly spaced from a random start, in order: shape (keep,), int64.

    Systematic sampling: item ``floor((j + u) * n / keep)`` for j < keep, u uniform in [0, 1),
    so every run of ``n / keep`` consecutive items gives one. A train pass with more items than
    an epoch asks for (``epoch_batches``) is thinned with it instead of cut short: every part of
    the reading order, i.e. every gene with at least ``n / keep`` items, stays in the epoch (a
    cut would keep the genes of the first shards read only), and the kept items are still read
    in shard order. ``keep >= n`` gives ``arange(n)``.
    """
    if keep >= n:
        return np.arange(n, dtype=np.int64)
    return np.floor((np.arange(keep) + rng.random()) * (n / keep)).astype(np.int64)


def group_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices grouped by key, keys in order of first appearance; O(M log M).

    Parameters
    ----------
    keys : np.ndarray, shape (M,), int

    Returns
    -------
    order : np.ndarray, shape (M,), int64
        Indices into ``keys``: those of the first-appearing key first (ascending), and so on.
    offsets : np.ndarray, shape (G + 1,), int64
        Group g is ``order[offsets[g]:offsets[g + 1]]``.
    """
    keys = np.asarray(keys)
    m = len(keys)
    if m == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1])
    if len(np.unique(keys[starts])) == len(starts):  # each key in one run (the usual layout)
        return np.arange(m, dtype=np.int64), np.append(starts, m).astype(np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    r = rank[inverse.reshape(-1)]
    order = np.argsort(r, kind="stable").astype(np.int64)
    offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=len(first)), out=offsets[1:])
    return order, offsets


@njit(cache=True, nogil=True)
def _shuffle_segments_kernel(values, offsets, u):
    """Fisher-Yates shuffle of each ``values[offsets[g]:offsets[g + 1]]`` in place, O(M).

    ``u`` (M,) float64 in [0, 1): the random draws (from a seeded NumPy Generator).
    """
    for g in range(len(offsets) - 1):
        lo, hi = offsets[g], offsets[g + 1]
        for i in range(hi - 1, lo, -1):
            j = lo + int(u[i] * (i - lo + 1))
            values[i], values[j] = values[j], values[i]


def shuffle_segments(values: np.ndarray, offsets: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """A copy of ``values`` with each segment ``[offsets[g], offsets[g + 1])`` shuffled.

    Parameters
    ----------
    values : np.ndarray, shape (M,), int64
    offsets : np.ndarray, shape (G + 1,), int64, from 0 to M, non-decreasing
    rng : np.random.Generator

    Returns
    -------
    np.ndarray, shape (M,), int64
    """
    out = np.array(values, dtype=np.int64)
    _shuffle_segments_kernel(out, np.asarray(offsets, dtype=np.int64), rng.random(len(out)))
    return out


def block_shuffle(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(n)`` that shuffles each run of ``block`` consecutive indices.

    Returns
    -------
    np.ndarray, shape (n,), int64
        ``block <= 1`` gives ``arange(n)``.
    """
    if block <= 1 or n == 0:
        return np.arange(n, dtype=np.int64)
    offsets = np.append(np.arange(0, n, block), n)
    return shuffle_segments(np.arange(n), offsets, rng)


def interleave_lanes(n: int, lanes: int, block: int, rng: np.random.Generator,
                     width: int | None = None) -> np.ndarray:
    """Read a stream as ``lanes`` contiguous lanes side by side: a permutation of ``range(n)``.

    The stream (positions in shard reading order) is cut into ``lanes`` contiguous lanes of
    near-equal length; each lane is shuffled in blocks of ``block`` of its items; then the lanes
    are read in turn, one item of each: lane 0's first, lane 1's first, ..., lane 0's second.
    Any ``lanes`` consecutive items therefore come from ``lanes`` different lanes, i.e. from
    places of the data ``n / lanes`` items apart (different genes when a gene holds fewer
    samples), while every lane still advances through its shards in order (a worker holds one
    or two genes per lane).

    With more lanes than ``width`` (the batch size), the lanes are read in a spread order, every
    ``ceil(lanes / width)``-th lane first (0, m, 2m, ..., then 1, m + 1, ...), so that any
    ``width`` consecutive items still come from places far apart, while more lanes mean that
    each lane covers fewer genes of the pass: the genes a run of batches sees change faster.

    Parameters
    ----------
    n, lanes, block : int
        ``lanes <= 1`` gives :func:`block_shuffle`.
    rng : np.random.Generator
    width : int, optional
        Items per batch; default ``lanes`` (lanes read in order).

    Returns
    -------
    np.ndarray, shape (n,), int64
        Item i of the new order is item ``perm[i]`` of the stream.
    """
    if lanes <= 1 or n == 0:
        return block_shuffle(n, block, rng)
    lanes = min(lanes, n)
    bounds = np.arange(lanes + 1, dtype=np.int64) * n // lanes
    cuts = [np.arange(bounds[k], bounds[k + 1], max(block, 1)) for k in range(lanes)]
    perm = shuffle_segments(np.arange(n), np.append(np.concatenate(cuts), n), rng)
    lane = np.repeat(np.arange(lanes), np.diff(bounds))
    step = np.arange(n) - bounds[lane]  # position inside its lane
    m = -(-lanes // (width or lanes))  # lanes apart of consecutive reads
    turn = np.empty(lanes, np.int64)  # place of each lane in one round of reads
    turn[np.argsort(np.arange(lanes) % m, kind="stable")] = np.arange(lanes)
    return perm[np.argsort(step * lanes + turn[lane], kind="stable")]
