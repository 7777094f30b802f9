"""Which samples (or pairs) each rank loads in an epoch, decided from the manifest.

Every rank computes the same plan from the manifest and ``(seed, epoch)``, so no rank talks to
another, every rank gets the same number of batches (DDP never waits on a rank that ran dry),
and a run is reproducible for a given ``(seed, world_size, num_workers, batch_size)``.

Items are rows of an int64 array of shape (M, k): positions in a :class:`SplitIndex` (k = 1
for single samples, k = 2 for pairs), -1 for padding. :class:`EpochPlan` gives one rank's
items of an epoch, per mode:

* train modes read shards in a seeded per-epoch order, as lanes side by side
  (:mod:`loader.order`), one pass over the split (cycling into a new order if
  ``epoch_batches`` asks for more), and drop the remainder that does not fill a batch on every
  rank: :func:`train_samples`; :func:`train_pairs` (fresh pairs of each gene every epoch,
  :func:`draw_pairs`); :func:`train_gene_batches` (whole one-gene batches, rows of B items,
  :func:`balanced_batches`);
* eval modes keep manifest order, split the items into contiguous, near-equal rank ranges and
  pad every rank to the same batch count (padding: -1, ``valid`` is False in the batch):
  :func:`eval_samples`, :func:`fixed_pairs`, :func:`eval_gene_batches`.

Shards are those holding a sample of the split (shard format 3: all splits share shards, a gene
is one record of one shard): the plans order them by the manifest's shard column.

How items are dealt to ranks and workers: :mod:`loader.ranks`.

Planning is O(N log N) in samples (sorting and segment kernels, no per-gene scans of the split):
about 0.1-0.3 s per epoch for 8,000 genes x 300 individuals (benchmarks/loader_throughput.py
--planning); pairwise train plans add ~0.5 ms of pair drawing per gene.
"""

from __future__ import annotations

import numpy as np

from hapflow.sections import LoaderConfig
from loader.order import (
    group_runs,
    interleave_lanes,
    seeded_rng,
    shard_order,
    shuffle_segments,
    stream_order,
    thin,
)
from loader.ranks import eval_batches, rank_batches, rank_items, train_batches
from loader.sources import SplitIndex

__all__ = [
    "is_train",
    "EpochPlan",
    "train_samples",
    "eval_samples",
    "draw_pairs",
    "train_pairs",
    "fixed_pairs",
    "balanced_batches",
    "train_gene_batches",
    "gene_batch_count",
    "eval_gene_batches",
]


def is_train(mode: str, split: str) -> bool:
    """Whether ``mode`` on ``split`` plans train epochs (seeded orders, lanes, augmentation, the
    remainder dropped): ``train`` on any split, ``pairwise`` and ``gene`` on the train split."""
    return mode == "train" or (mode in ("pairwise", "gene") and split == "train")


class EpochPlan:
    """One rank's plan of a mode over a split: batch counts, and each epoch's items.

    Attributes
    ----------
    index : SplitIndex
    config : LoaderConfig
    mode : str
        ``train``, ``eval``, ``pairwise`` or ``gene`` (see :mod:`loader.dataloader`).
    rank, world_size : int
    train : bool
        :func:`is_train`.
    lanes : int
        Lanes of a train epoch (``config.lanes``, default the batch size).
    n_items : int
        Items one epoch covers once: samples, pairs, or (gene mode, train) batch slots.
    n_batches : int
        Batches per rank per epoch, the same on every rank.
    chunk_size : int
        Items a worker reads together: train modes ``shuffle_buffer`` rounded up to a multiple
        of the batch size, eval modes one batch.

    Raises
    ------
    ValueError
        The split has no item for the mode (no eligible pair, no gene with two individuals in
        a shard) or too few to give every rank a train batch.
    """

    def __init__(self, index: SplitIndex, config: LoaderConfig, mode: str, rank: int,
                 world_size: int):
        self.index, self.config, self.mode = index, config, mode
        self.rank, self.world_size = rank, world_size
        self.train = is_train(mode, index.split)
        # every train mode is shuffled by the plan (lanes read side by side, see
        # loader.order.interleave_lanes), not in the workers: a worker shuffle would undo that
        self.lanes = config.lanes or config.batch_size
        self._fixed: np.ndarray | None = None
        b = config.batch_size
        if mode == "gene":
            self._init_gene()
        elif self.train:
            self.n_items = self._epoch_items()
            self.n_batches = train_batches(self.n_items, world_size, b, config.epoch_batches)
            self.chunk_size = -(-max(config.shuffle_buffer, b) // b) * b
        else:
            self.n_items = len(self._eval_items())
            self.n_batches = eval_batches(self.n_items, world_size, b)
            self.chunk_size = b

    def _init_gene(self) -> None:
        """Batch counts of the gene mode (see :func:`train_gene_batches`)."""
        cfg, idx, w = self.config, self.index, self.world_size
        b = cfg.batch_size
        if self.train:
            total = gene_batch_count(idx.shard, idx.gene, b)
            if total == 0:
                raise ValueError(f"no gene of split {idx.split} has two individuals in one "
                                 "shard: gene mode has no batch")
            self.n_items = total * b
            self.n_batches = cfg.epoch_batches or total // w
            if self.n_batches == 0:
                raise ValueError(
                    f"the {total} one-gene batch(es) of split {idx.split} do not give one batch "
                    f"to each of {w} rank(s): lower batch_size or set epoch_batches")
            self.chunk_size = -(-max(cfg.shuffle_buffer, b) // b) * b
        else:
            self._fixed = eval_gene_batches(idx.gene, b)
            self.n_items = len(idx)
            self.n_batches = max(1, -(-len(self._fixed) // w))
            self.chunk_size = b

    def _epoch_items(self) -> int:
        """Items one train epoch covers once: samples, or pairs_per_gene x genes with a pair."""
        if self.mode != "pairwise":
            return len(self.index)
        d = self.config.min_percentile_diff
        order, offsets = group_runs(self.index.gene)
        p = self.index.P[order]
        starts = offsets[:-1]  # every gene has a sample, so no run is empty
        spread = np.maximum.reduceat(p, starts) - np.minimum.reduceat(p, starts)
        ok = np.diff(offsets) >= 2
        if d is not None:
            ok &= spread > d
        n = int(ok.sum()) * self.config.pairs_per_gene
        if n == 0:
            raise ValueError(f"no gene of split {self.index.split} has an eligible pair")
        return n

    def _eval_items(self) -> np.ndarray:
        if self.mode != "pairwise":
            return eval_samples(len(self.index))
        if self._fixed is None:
            cfg = self.config
            self._fixed = fixed_pairs(self.index.gene, self.index.P, cfg.val_pairs_per_gene,
                                      cfg.seed, cfg.min_percentile_diff)
        return self._fixed

    def items(self, epoch: int) -> np.ndarray:
        """This rank's items in ``epoch``: shape (n_batches * batch_size, k), int64, -1 = pad."""
        cfg, idx = self.config, self.index
        b, w = cfg.batch_size, self.world_size
        if self.mode == "gene":
            if not self.train:
                return rank_batches(self._fixed, self.rank, w, self.n_batches, pad=True)
            per_lane = max(1, self.chunk_size // b // self.lanes)
            batches = train_gene_batches(idx.shard, idx.gene, len(idx.urls), w * self.n_batches,
                                         b, cfg.seed, epoch, block=per_lane, lanes=self.lanes)
            return rank_batches(batches, self.rank, w, self.n_batches, pad=False)
        if not self.train:
            return rank_items(self._eval_items(), self.rank, w, self.n_batches, b, pad=True)
        n = w * self.n_batches * b
        if self.mode == "pairwise":
            items = train_pairs(idx.shard, idx.gene, idx.P, len(idx.urls), n, cfg.pairs_per_gene,
                                cfg.seed, epoch, cfg.min_percentile_diff, lanes=self.lanes,
                                block=max(1, self.chunk_size // self.lanes), width=b)
        else:
            items = train_samples(idx.shard, len(idx.urls), n, cfg.seed, epoch, lanes=self.lanes,
                                  block=max(1, self.chunk_size // self.lanes), width=b)
        return rank_items(items, self.rank, w, self.n_batches, b, pad=False)


def train_samples(shard: np.ndarray, n_shards: int, n: int, seed: int, epoch: int,
                  lanes: int = 1, block: int = 0, width: int | None = None) -> np.ndarray:
    """``n`` single-sample items for a train epoch: shards in a seeded order, cycling if needed.

    Parameters
    ----------
    shard : np.ndarray, shape (N,), int
        Shard id of each sample (samples in manifest order).
    n_shards, n, seed, epoch : int
    lanes, block : int
        Each pass is reordered by :func:`loader.order.interleave_lanes` (``lanes`` lanes read
        side by side, each shuffled in blocks of ``block`` items); ``lanes=1, block=0`` keeps
        the stream order; ``width`` (the batch size) as there. A pass longer than the items
        still wanted is first thinned (:func:`loader.order.thin`), so a short epoch still spans
        every shard and gene. Pass c draws from ``seeded_rng(seed, "lanes", epoch, c)``.

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
    a pass longer than the batches still wanted is first thinned (:func:`thin`). A gene whose
    samples span two shards (never in shard format 3, where a gene is one record) is batched
    per shard (its parts lie far apart in the epoch's reading order).
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
