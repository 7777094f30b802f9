"""Which samples (or pairs) each rank and worker loads in an epoch, decided from the manifest.

Every rank computes the same plan from the manifest and ``(seed, epoch)``, so no rank talks to
another, every rank gets the same number of batches (DDP never waits on a rank that ran dry),
and a run is reproducible for a given ``(seed, world_size, num_workers, batch_size)``.

Items are rows of an int64 array of shape (M, k): positions in a :class:`SplitIndex` (k = 1
for single samples, k = 2 for pairs), -1 for padding. An epoch's items are laid out as

    [ rank 0: nb * B items | rank 1: nb * B items | ... ]

and inside a rank, worker w gets a contiguous run of the rank's batches: the batches j with
j % num_workers == w, because torch's DataLoader hands out batches of its workers round-robin;
so the rank's j-th batch is worker (j % nw)'s (j // nw)-th batch, whatever the worker count.

Train modes read shards in a seeded per-epoch order, one pass over the split (cycling into a
new order if ``epoch_batches`` asks for more), and drop the remainder that does not fill a
batch on every rank. Eval modes keep manifest order, split samples into contiguous,
near-equal rank ranges and pad every rank to the same batch count (padding: -1, ``valid`` is
False in the batch).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

__all__ = [
    "seeded_rng",
    "shard_order",
    "stream_order",
    "train_samples",
    "eval_samples",
    "draw_pairs",
    "train_pairs",
    "fixed_pairs",
    "train_batches",
    "eval_batches",
    "rank_items",
    "worker_batch_counts",
    "worker_items",
    "worker_skip",
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
    return np.lexsort((np.arange(len(shard)), rank_of[np.asarray(shard)])).astype(np.int64)


def train_samples(shard: np.ndarray, n_shards: int, n: int, seed: int, epoch: int) -> np.ndarray:
    """``n`` single-sample items for a train epoch: shards in a seeded order, cycling if needed.

    Returns
    -------
    np.ndarray, shape (n, 1), int64
    """
    parts, total, cycle = [], 0, 0
    while total < n:
        parts.append(stream_order(shard, shard_order(n_shards, seed, epoch, cycle)))
        total += len(shard)
        cycle += 1
    return np.concatenate(parts)[:n, None] if parts else np.zeros((0, 1), np.int64)


def eval_samples(n: int) -> np.ndarray:
    """Every sample once, in manifest order: shape (n, 1), int64."""
    return np.arange(n, dtype=np.int64)[:, None]


def draw_pairs(p: np.ndarray, k: int, rng: np.random.Generator,
               min_diff: float | None = None) -> np.ndarray:
    """Draw ``k`` pairs of two different samples, uniformly among the eligible ordered pairs.

    Parameters
    ----------
    p : np.ndarray, shape (n,), float
        Expression percentiles of one gene's samples.
    k : int
        Pairs wanted. Pairs are distinct (as unordered pairs) when enough exist; otherwise some
        repeat.
    rng : np.random.Generator
    min_diff : float, optional
        Keep only pairs with ``|p[a] - p[b]| > min_diff``; None keeps every pair.

    Returns
    -------
    np.ndarray, shape (k, 2) or (0, 2) when no pair is eligible, int64
        Local indices (a, b), a != b.
    """
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if n < 2 or k <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.argsort(p, kind="stable")
    ps = p[order]
    if min_diff is None:
        lo = np.arange(n)  # sorted positions < lo, or >= hi, are partners: everyone but oneself
        hi = np.arange(n) + 1
    else:
        lo = np.searchsorted(ps, ps - min_diff, side="left")  # ps[j] < ps[i] - d
        hi = np.searchsorted(ps, ps + min_diff, side="right")  # ps[j] > ps[i] + d
    count = lo + (n - hi)
    total = int(count.sum())
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64)
    n_unordered = total // 2
    chosen: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    candidates: list[tuple[int, int]] = []
    for _ in range(8):  # draw with replacement, keep first occurrences; rarely needs a 2nd round
        m = 2 * k
        i = rng.choice(n, size=m, p=count / total)
        u = np.minimum((rng.random(m) * count[i]).astype(np.int64), count[i] - 1)
        j = np.where(u < lo[i], u, hi[i] + (u - lo[i]))
        candidates = list(zip(order[i].tolist(), order[j].tolist(), strict=True))
        for a, b in candidates:
            pair = (min(a, b), max(a, b))
            if pair not in seen or len(seen) >= n_unordered:
                seen.add(pair)
                chosen.append((a, b))
                if len(chosen) == k:
                    return np.array(chosen, dtype=np.int64)
    chosen += candidates[: k - len(chosen)]  # fewer distinct pairs than k: allow repeats
    return np.array(chosen, dtype=np.int64)


def _gene_runs(gene: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
    """Positions grouped by gene, genes in order of first appearance in ``positions``."""
    g = gene[positions]
    first = {}
    for i, x in enumerate(g.tolist()):
        first.setdefault(x, i)
    runs = []
    for x in sorted(first, key=first.get):
        runs.append(positions[g == x])
    return runs


def train_pairs(shard: np.ndarray, gene: np.ndarray, p: np.ndarray, n_shards: int, n: int,
                per_gene: int, seed: int, epoch: int,
                min_diff: float | None = None) -> np.ndarray:
    """``n`` pairs for a train epoch: genes in the epoch's shard order, ``per_gene`` each.

    Parameters
    ----------
    shard, gene : np.ndarray, shape (N,), int
        Shard and gene id of each sample.
    p : np.ndarray, shape (N,), float
        Expression percentile of each sample.

    Returns
    -------
    np.ndarray, shape (n, 2), int64
        Positions (a, b) of the same gene, a != b. Each gene's pairs come from
        ``seeded_rng(seed, "pairs", epoch, cycle, gene)``.
    """
    parts, total, cycle = [], 0, 0
    while total < n:
        order = stream_order(shard, shard_order(n_shards, seed, epoch, cycle))
        added = 0
        for rows in _gene_runs(gene, order):
            rng = seeded_rng(seed, "pairs", epoch, cycle, int(gene[rows[0]]))
            local = draw_pairs(p[rows], per_gene, rng, min_diff)
            parts.append(rows[local])
            added += len(local)
        if added == 0:
            raise ValueError("no gene has two samples forming an eligible pair "
                             f"(min_percentile_diff={min_diff})")
        total += added
        cycle += 1
    return np.concatenate(parts)[:n] if parts else np.zeros((0, 2), np.int64)


def fixed_pairs(gene: np.ndarray, p: np.ndarray, per_gene: int, seed: int,
                min_diff: float | None = None) -> np.ndarray:
    """The fixed evaluation pairs: ``per_gene`` per gene, genes in manifest order.

    Returns
    -------
    np.ndarray, shape (M, 2), int64
        Each gene's pairs come from ``seeded_rng(seed, "fixed_pairs", gene)``: the same every
        epoch and for every world size.
    """
    parts = []
    for rows in _gene_runs(gene, np.arange(len(gene))):
        rng = seeded_rng(seed, "fixed_pairs", int(gene[rows[0]]))
        parts.append(rows[draw_pairs(p[rows], per_gene, rng, min_diff)])
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


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
