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
False in the batch). The ``gene`` mode plans whole one-gene batches (rows of B items, see
:func:`train_gene_batches`) and splits them by rank with :func:`rank_batches`.

Planning is O(N log N) in samples (sorting and segment kernels, no per-gene scans of the split):
about 0.1-0.3 s per epoch for 8,000 genes x 300 individuals (benchmarks/loader_throughput.py
--planning); pairwise train plans add ~0.5 ms of pair drawing per gene.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from numba import njit

__all__ = [
    "seeded_rng",
    "shard_order",
    "stream_order",
    "train_samples",
    "thin",
    "eval_samples",
    "draw_pairs",
    "train_pairs",
    "fixed_pairs",
    "group_runs",
    "shuffle_segments",
    "balanced_batches",
    "block_shuffle",
    "interleave_lanes",
    "train_gene_batches",
    "gene_batch_count",
    "eval_gene_batches",
    "train_batches",
    "eval_batches",
    "rank_items",
    "rank_batches",
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
    # a stable sort keeps manifest order inside a shard (timsort: O(N) on shard-sorted input)
    return np.argsort(rank_of[np.asarray(shard)], kind="stable").astype(np.int64)


def train_samples(shard: np.ndarray, n_shards: int, n: int, seed: int, epoch: int,
                  lanes: int = 1, block: int = 0, width: int | None = None) -> np.ndarray:
    """``n`` single-sample items for a train epoch: shards in a seeded order, cycling if needed.

    Parameters
    ----------
    lanes, block : int
        Each pass is reordered by :func:`interleave_lanes` (``lanes`` lanes read side by side,
        each shuffled in blocks of ``block`` items); ``lanes=1, block=0`` keeps the stream
        order; ``width`` (the batch size) as there. A pass longer than the items still wanted is
        first thinned (:func:`thin`), so a
        short epoch still spans every shard and gene. Pass c draws from
        ``seeded_rng(seed, "lanes", epoch, c)``.

    Returns
    -------
    np.ndarray, shape (n, 1), int64
    """
    parts, total, cycle = [], 0, 0
    while total < n:
        stream = stream_order(shard, shard_order(n_shards, seed, epoch, cycle))
        rng = seeded_rng(seed, "lanes", epoch, cycle)
        stream = stream[thin(len(stream), n - total, rng)]
        if lanes > 1 or block > 1:
            stream = stream[interleave_lanes(len(stream), lanes, block, rng, width)]
        parts.append(stream)
        total += len(stream)
        cycle += 1
    return np.concatenate(parts)[:, None] if parts else np.zeros((0, 1), np.int64)


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


def _gene_runs(gene: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
    """Positions grouped by gene, genes in order of first appearance in ``positions``."""
    positions = np.asarray(positions)
    order, offsets = group_runs(np.asarray(gene)[positions])
    return np.split(positions[order], offsets[1:-1])


def train_pairs(shard: np.ndarray, gene: np.ndarray, p: np.ndarray, n_shards: int, n: int,
                per_gene: int, seed: int, epoch: int,
                min_diff: float | None = None, lanes: int = 1, block: int = 0,
                width: int | None = None) -> np.ndarray:
    """``n`` pairs for a train epoch: genes in the epoch's shard order, read as ``lanes`` lanes.

    Per pass (cycle): shards in the epoch's seeded order; each gene draws ``per_gene`` pairs,
    or evenly fewer when the epoch wants fewer than a pass (``ceil(wanted / genes)`` each, then
    :func:`thin` to exactly the number wanted), so that every gene is in every epoch; the pairs
    (consecutive per gene) are then read as ``lanes`` lanes side by side, each shuffled in
    blocks of ``block`` pairs (:func:`interleave_lanes`): any ``lanes`` consecutive pairs come
    from places of the pass ``pairs / lanes`` apart, i.e. from different genes. Without lanes
    (``lanes=1, block=0``) a gene's pairs would be consecutive, and batches, for hundreds of
    steps in a row, would hold the same few genes.

    Parameters
    ----------
    shard, gene : np.ndarray, shape (N,), int
        Shard and gene id of each sample.
    p : np.ndarray, shape (N,), float
        Expression percentile of each sample.
    lanes, block, width : int
        As :func:`train_samples`.

    Returns
    -------
    np.ndarray, shape (n, 2), int64
        Positions (a, b) of the same gene, a != b. Each gene's pairs come from
        ``seeded_rng(seed, "pairs", epoch, cycle, gene)``, the thinning and lanes from
        ``seeded_rng(seed, "lanes", epoch, cycle)``.
    """
    parts, total, cycle = [], 0, 0
    while total < n:
        want = n - total
        runs = _gene_runs(gene, stream_order(shard, shard_order(n_shards, seed, epoch, cycle)))
        k = min(per_gene, -(-want // max(len(runs), 1)))
        drawn = []
        for rows in runs:
            rng = seeded_rng(seed, "pairs", epoch, cycle, int(gene[rows[0]]))
            drawn.append(rows[draw_pairs(p[rows], k, rng, min_diff)])
        stream = np.concatenate(drawn) if drawn else np.zeros((0, 2), np.int64)
        if len(stream) == 0:
            raise ValueError("no gene has two samples forming an eligible pair "
                             f"(min_percentile_diff={min_diff})")
        rng = seeded_rng(seed, "lanes", epoch, cycle)
        stream = stream[thin(len(stream), want, rng)]
        if lanes > 1 or block > 1:
            stream = stream[interleave_lanes(len(stream), lanes, block, rng, width)]
        parts.append(stream)
        total += len(stream)
        cycle += 1
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


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
    or two decoded groups per lane).

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


def balanced_batches(keys: np.ndarray, positions: np.ndarray, batch_size: int,
                     min_size: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """Cut the positions of each key into batches holding that key only, as evenly as possible.

    Parameters
    ----------
    keys : np.ndarray, shape (M,), int
        Key of each position (a gene id, or shard and gene).
    positions : np.ndarray, shape (M,), int
    batch_size : int
        B.
    min_size : int
        Keys with fewer positions give no batch.
    rng : np.random.Generator, optional
        Shuffle each key's positions before cutting; None keeps their order.

    Returns
    -------
    np.ndarray, shape (T, B), int64
        A key with n positions fills ``k = ceil(n / B)`` consecutive rows, dealt round-robin
        (its i-th position goes to row ``i % k``, slot ``i // k``), so row sizes differ by at
        most one (larger rows first) and no row holds a lone sample unless n = 1; unfilled
        slots are -1 (padding) at the end of a row. Keys in order of first appearance.
    """
    keys, positions = np.asarray(keys), np.asarray(positions, dtype=np.int64)
    order, offsets = group_runs(keys)
    sizes = np.diff(offsets)
    run = np.repeat(np.arange(len(sizes)), sizes)  # run of each element of `order`
    if rng is not None:  # a random order inside each run, runs kept in place
        order = shuffle_segments(order, offsets, rng)
    rows = np.where(sizes >= min_size, -(-sizes // batch_size), 0)
    first_row = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    out = np.full((int(rows.sum()), batch_size), -1, dtype=np.int64)
    local = np.arange(len(order)) - offsets[run]  # index inside its run
    keep = rows[run] > 0
    if not keep.all():
        order, run, local = order[keep], run[keep], local[keep]
    k = rows[run]
    # deal the run's (shuffled) positions round-robin over its k rows: sizes differ by <= 1
    row, slot = local % k, local // k
    out[first_row[run] + row, slot] = positions[order]
    return out


def _shard_gene_keys(shard: np.ndarray, gene: np.ndarray) -> np.ndarray:
    """One int64 key per (shard, gene) pair, shape (N,)."""
    return np.asarray(shard, np.int64) * (int(np.max(gene, initial=0)) + 1) + np.asarray(gene)


def gene_batch_count(shard: np.ndarray, gene: np.ndarray, batch_size: int) -> int:
    """Batches in one pass of :func:`train_gene_batches` (the same every epoch)."""
    _, offsets = group_runs(_shard_gene_keys(shard, gene))
    sizes = np.diff(offsets)
    return int((-(-sizes[sizes >= 2] // batch_size)).sum())


def train_gene_batches(shard: np.ndarray, gene: np.ndarray, n_shards: int, n_batches: int,
                       batch_size: int, seed: int, epoch: int, block: int = 1,
                       lanes: int = 1) -> np.ndarray:
    """``n_batches`` one-gene batches for a train epoch (the ``gene`` mode).

    Per pass (cycle): shards in the epoch's seeded order; the individuals of each gene in a
    shard shuffled and cut into balanced batches (:func:`balanced_batches`, at least 2
    individuals); the batches read as ``lanes`` lanes side by side, each shuffled in blocks of
    ``block`` batches (:func:`interleave_lanes`), so consecutive batches hold different genes;
    a pass longer than the batches still wanted is first thinned (:func:`thin`). A gene whose groups
    span two shards is batched per shard (its parts lie far apart in the epoch's reading order).
    Passes repeat, in new orders, until ``n_batches`` are planned.

    Parameters
    ----------
    shard, gene : np.ndarray, shape (N,), int
        Shard and gene id of each sample.

    Returns
    -------
    np.ndarray, shape (n_batches, B), int64
        Positions, -1 for padding; every row holds a single gene. The randomness of pass c
        comes from ``seeded_rng(seed, "gene_batches", epoch, c)``.

    Raises
    ------
    ValueError
        No gene has two individuals in one shard.
    """
    keys = _shard_gene_keys(shard, gene)
    parts, total, cycle = [], 0, 0
    while total < n_batches:
        stream = stream_order(shard, shard_order(n_shards, seed, epoch, cycle))
        rng = seeded_rng(seed, "gene_batches", epoch, cycle)
        batches = balanced_batches(keys[stream], stream, batch_size, min_size=2, rng=rng)
        if len(batches) == 0:
            raise ValueError("no gene has two individuals in one shard: gene mode has no batch")
        batches = batches[thin(len(batches), n_batches - total, rng)]
        parts.append(batches[interleave_lanes(len(batches), lanes, block, rng)])
        total += len(batches)
        cycle += 1
    if not parts:
        return np.zeros((0, batch_size), np.int64)
    return np.concatenate(parts)


def eval_gene_batches(gene: np.ndarray, batch_size: int) -> np.ndarray:
    """Every sample once in one-gene batches: genes and individuals in manifest order.

    Returns
    -------
    np.ndarray, shape (T, B), int64
        As :func:`balanced_batches` (genes with one individual too).
    """
    gene = np.asarray(gene)
    return balanced_batches(gene, np.arange(len(gene)), batch_size, min_size=1)


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
