"""The worker pipeline: a worker's items in, its batches out (NumPy and numba, torch-free).

:func:`worker_batches` runs it for one DataLoader worker (or the main process). In the order a
batch goes through it:

    GeneSchedule      which genes each batch needs, when each is read and when freed
    GeneReader        genes read from their shards and verified (:mod:`loader.records`)
    GenePool          the genes in flight, in the slots of one EditPool (:mod:`loader.pool`)
    draw_augment      shifts and reverse complements, per chunk of items (:mod:`loader.augment`)
    collate_samples   one batch: ONE call of :func:`prep.edits.build_windows` writes every
    collate_pairs     window straight into the batch buffer (shift, crop, fill and reverse
                      complement fused); targets and ids gathered by NumPy indexing

Python runs per batch and per gene, never per sample: a batch is a few array lookups
(position -> gene -> pool slot, record row, targets), one kernel call and a dict.

Memory of a loading process: the batch buffers, the pool's genes (each its reference span and
edit table, ~0.3 MB at 196,608 bp for 300 individuals: at most :meth:`GeneSchedule.bound` genes
at once) and one small read buffer per open shard stream; never decoded haplotypes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from loader.augment import Window, draw_augment
from loader.order import seeded_rng
from loader.pool import GenePool
from loader.records import GeneReader
from loader.sources import SplitIndex
from prep.edits import build_windows_serial

__all__ = [
    "worker_batches",
    "warm_kernels",
    "ThreadedKernel",
    "GeneSchedule",
    "BatchTables",
    "collate_samples",
    "collate_pairs",
]


def worker_batches(index: SplitIndex, items: np.ndarray, *, batch_size: int, chunk_size: int,
                   window: Window, augment: bool, rc_prob: float, max_shift: int,
                   seed: int, epoch: int, rank: int, worker: int, skip: int = 0,
                   on_error: str = "raise", timeout: float = 120.0,
                   buffers: Callable[[], np.ndarray] | None = None, threads: int = 1,
                   reader: GeneReader | None = None, pool: GenePool | None = None
                   ) -> Iterator[dict]:
    """The batches of one worker: genes read as needed, windows built, batches collated.

    Parameters
    ----------
    index : SplitIndex
    items : np.ndarray, shape (count * batch_size, k), int64
        The worker's items (positions in ``index``; -1: padding); k = 1 samples, k = 2 pairs.
    batch_size : int
    chunk_size : int
        Items drawing one augmentation stream together (a multiple of ``batch_size``); a gene
        needed again within ``chunk_size / batch_size`` batches is kept in between.
    window : Window
        The batch windows' length and fill (:class:`loader.augment.Window`).
    augment : bool
        Draw a shift in [-max_shift, max_shift] and a reverse complement (probability
        ``rc_prob``) per item, from ``seeded_rng(seed, "augment", epoch, rank, worker, chunk)``;
        False: no shift, forward strand.
    rc_prob : float
    max_shift : int
    seed, epoch, rank, worker : int
        Seed the augmentation (the worker's number in its rank's plan, not its process).
    skip : int
        Leading batches not to yield (resuming mid-epoch); their genes are not read.
    on_error : "raise" or "skip"
        A corrupt record or shard raises an error naming it, or (skip) its samples become
        padding (``valid`` False), reported in ``errors``.
    timeout : float
        Network read timeout (http shards).
    buffers : callable, optional
        Called once per batch, returns the uint8 array of shape (k, B, 2, n) to write the
        windows into (a shared-memory slot); default: a new array per batch.
    threads : int
        Threads building each batch's windows: 1 (DataLoader workers; the default in the main
        process) builds them in the same numba call that gathers the batch
        (:func:`prep.edits.build_windows_serial`); more cut the batch between threads
        (:class:`ThreadedKernel`).
    reader, pool : optional
        The :class:`GeneReader` and :class:`GenePool` to use (tests inspect them).

    Yields
    ------
    dict
        As :func:`collate_samples` / :func:`collate_pairs`, plus ``errors`` ((url, message) of
        genes skipped since the previous batch) and ``batch`` (the worker's batch number).
    """
    assert chunk_size % batch_size == 0, "chunk_size must be a multiple of batch_size"
    per_chunk = chunk_size // batch_size
    k = items.shape[1]
    batches = items.reshape(-1, batch_size * k)
    tables = BatchTables(index)
    pool = GenePool(len(index.genes)) if pool is None else pool
    reader = GeneReader(index, on_error, timeout) if reader is None else reader
    schedule = GeneSchedule(tables.gene, batches, index, hold=per_chunk, first=skip)
    kernel = ThreadedKernel(threads) if threads > 1 else build_windows_serial
    try:
        for j in range(skip, len(batches)):
            c = j // per_chunk
            if j == skip or j % per_chunk == 0:
                shifts, reverses = _augmentation(len(items[c * chunk_size:(c + 1) * chunk_size]),
                                                 augment, rc_prob, max_shift,
                                                 seeded_rng(seed, "augment", epoch, rank, worker,
                                                            c))
            schedule.read(j, reader, pool)
            part = slice((j % per_chunk) * batch_size, (j % per_chunk + 1) * batch_size)
            out = buffers() if buffers is not None else None
            rows = batches[j].reshape(batch_size, k)
            collate = collate_samples if k == 1 else collate_pairs
            batch = collate(tables, pool, rows, window, shifts[part], reverses[part], out, kernel)
            batch["errors"], reader.errors = reader.errors, []
            batch["batch"] = j
            schedule.done(j, reader, pool)
            yield batch
            batch = out = None  # the caller's alone: its memory may serve the next batch
    finally:
        reader.close()
        if threads > 1:
            kernel.close()


class ThreadedKernel:
    """:func:`prep.edits.build_windows_serial` on a batch cut into ``threads`` parts, each
    built on its own thread (the numba kernel releases the GIL): the main process's window
    builder with ``[loader] threads > 1`` and ``num_workers = 0``.

    Python threads rather than numba's parallel kernel: GNU OpenMP (numba's threading layer
    here) busy-waits, which on a machine whose cores other processes share costs 30x, and
    cannot run in a DataLoader worker forked from a process that used it. Threads pay off on
    free cores only: on cores other processes hold, one thread is faster.
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads or len(os.sched_getaffinity(0))
        self._helpers = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None

    def __call__(self, pool, slot, row, shift, rc, width, fill_n, out, tss_index) -> None:
        """As :func:`prep.edits.build_windows` (same arguments)."""
        b = len(slot)
        parts = min(self.threads, b)
        if parts <= 1:
            build_windows_serial(pool, slot, row, shift, rc, width, fill_n, out, tss_index)
            return
        cuts = [b * i // parts for i in range(parts + 1)]
        jobs = [self._helpers.submit(build_windows_serial, pool, slot[lo:hi], row[lo:hi],
                                     shift[lo:hi], rc[lo:hi], width, fill_n, out[lo:hi],
                                     tss_index[lo:hi])
                for lo, hi in zip(cuts[1:-1], cuts[2:], strict=True)]
        build_windows_serial(pool, slot[:cuts[1]], row[:cuts[1]], shift[:cuts[1]],
                             rc[:cuts[1]], width, fill_n, out[:cuts[1]], tss_index[:cuts[1]])
        for job in jobs:
            job.result()

    def close(self) -> None:
        if self._helpers is not None:
            self._helpers.shutdown()


def warm_kernels() -> None:
    """Load the batch kernels (numba's cache) into this process, on a batch of padding: a
    process that forks DataLoader workers calls it first, so that no worker loads them again."""
    index = SplitIndex(split="", urls=[""], shard=np.zeros(1, np.int32), key=[""],
                       gene=np.zeros(1, np.int32), genes=[""], P=np.zeros(1),
                       row=np.zeros(1, np.int64), length=128, flank=0)
    _collate(BatchTables(index), GenePool(1), np.full((1, 1), -1, np.int64), Window(128),
             np.zeros(1, np.int64), np.zeros(1, bool), None, build_windows_serial)


def _augmentation(n: int, augment: bool, rc_prob: float, max_shift: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(shift int64 (n,), reverse bool (n,)) of a chunk of n items."""
    if augment:
        return draw_augment(rng, n, rc_prob, max_shift)
    return np.zeros(n, np.int64), np.zeros(n, bool)


class GeneSchedule:
    """When each gene of a worker's batches is read and when it is freed.

    A gene's batches form *runs*: needs at most ``hold`` batches apart. A run's gene is read
    before its first batch (or up to ``hold`` batches earlier, when a stream reading another
    gene passes it) and freed after its last batch; a gene needed again after a longer gap is
    read again. A shard's streams are closed after the last batch needing one of its genes.

    Parameters
    ----------
    gene : np.ndarray, shape (N + 1,), int64
        The gene of each position, then ``G`` (the padding position -1's gene, never read).
    batches : np.ndarray, shape (nb, m), int64
        Positions of each batch's items (-1: padding).
    index : SplitIndex
        Each gene's shard and build rank.
    hold : int
    first : int
        Batches before it are skipped (resume): their genes are not scheduled.
    """

    def __init__(self, gene: np.ndarray, batches: np.ndarray, index: SplitIndex, hold: int,
                 first: int = 0):
        n_genes, nb = len(index.genes), len(batches)
        self.hold = hold
        self.shard, self.rank = index.gene_shard(), index.gene_rank
        j = np.repeat(np.arange(nb, dtype=np.int64), batches.shape[1])[first * batches.shape[1]:]
        g = gene[batches[first:].reshape(-1)]
        key = np.unique(g[g < n_genes] * max(nb, 1) + j[g < n_genes])  # by gene, then batch
        g, j = key // max(nb, 1), key % max(nb, 1)
        new = np.ones(len(key), bool)
        new[1:] = (g[1:] != g[:-1]) | (j[1:] - j[:-1] > hold)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(key)) - 1
        self.run_gene, self.run_first, self.run_last = g[starts], j[starts], j[ends]
        self.next_run = np.full(n_genes, -1, np.int64)  # each gene's next run not yet read
        self.next_run[self.run_gene[::-1]] = np.arange(len(starts))[::-1]
        big = np.iinfo(np.int64).max
        self.next_first = np.full(n_genes, big, np.int64)
        has = self.next_run >= 0
        self.next_first[has] = self.run_first[self.next_run[has]]
        order = np.lexsort((self.rank[self.run_gene], self.shard[self.run_gene], self.run_first))
        self._reads = _by_batch(self.run_gene[order], self.run_first[order], nb)
        self._frees = _by_batch(self.run_gene, self.run_last, nb)
        shard_last = np.full(len(index.urls), -1, np.int64)
        np.maximum.at(shard_last, self.shard[self.run_gene], self.run_last)
        used = np.flatnonzero(shard_last >= 0)
        self._closes = _by_batch(used, shard_last[used], nb)
        genes = np.unique(self.run_gene)
        genes = genes[np.lexsort((self.rank[genes], self.shard[genes]))]
        self._shard_genes = _by_batch(genes, self.shard[genes], len(index.urls))

    def read(self, j: int, reader: GeneReader, pool: GenePool) -> None:
        """Before batch ``j``: read the genes whose run starts here and are not held yet (a
        gene read ahead for this run is held already; a skipped one stays padding)."""
        for g in self._reads[j]:
            if g not in pool and not reader.failed[g]:
                for got, record in reader.fetch(int(g), lambda s: self._ahead(s, j, pool,
                                                                              reader)):
                    pool.add(got, record)
                    self._taken(got)

    def done(self, j: int, reader: GeneReader, pool: GenePool) -> None:
        """After batch ``j``: free the genes whose run ends here, close finished shards."""
        for g in self._frees[j]:
            pool.release(int(g))
        for s in self._closes[j]:
            reader.close_shard(int(s))

    def bound(self) -> int:
        """The most genes :meth:`read` may hold at once: over every batch j, the runs that
        reach j and start by ``j + hold``."""
        nb = int(self.run_last.max(initial=-1)) + 1
        if nb == 0:
            return 0
        count = np.zeros(nb + 1, np.int64)
        np.add.at(count, np.maximum(self.run_first - self.hold, 0), 1)
        np.add.at(count, self.run_last + 1, -1)
        return int(np.cumsum(count).max())

    def _taken(self, g: int) -> None:
        """The next run of ``g`` is held now; its following run is the next to read."""
        r = self.next_run[g]
        nxt = r + 1 if r + 1 < len(self.run_gene) and self.run_gene[r + 1] == g else -1
        self.next_run[g] = nxt
        self.next_first[g] = self.run_first[nxt] if nxt >= 0 else np.iinfo(np.int64).max

    def _ahead(self, shard: int, j: int, pool: GenePool, reader: GeneReader) -> np.ndarray:
        """Genes of ``shard`` whose next run starts by ``j + hold`` and that are not held."""
        genes = self._shard_genes[shard]
        genes = genes[self.next_first[genes] <= j + self.hold]
        return genes[(pool.slot_of[genes] < 0) & ~reader.failed[genes]]


def _by_batch(values: np.ndarray, where: np.ndarray, n: int) -> list[np.ndarray]:
    """``values`` grouped by ``where`` (0 <= where < n), each group in input order."""
    order = np.argsort(where, kind="stable")
    bounds = np.searchsorted(where[order], np.arange(n + 1))
    v = values[order]
    return [v[bounds[i]:bounds[i + 1]] for i in range(n)]


class BatchTables:
    """A split index's per-sample columns for collation, each with one more entry for the
    padding position -1 (gene ``G``, never held; NaN targets; "" ids), so that a batch gathers
    everything by indexing with its positions.

    Attributes
    ----------
    gene, record_row, row : np.ndarray, shape (N + 1,), int64
    targets : np.ndarray, shape (3, N + 1), float32
        Y, Z, P (rows), so that a batch's Y is one contiguous row.
    sets : np.ndarray, shape (N + 1, T), float32
        Each target set's Y (T = 0 without further sets).
    gene_name, individual, population : np.ndarray, shape (N + 1,), object (str)
    width : int
        W = L + 2 x flank.
    """

    def __init__(self, index: SplitIndex):
        self.gene = np.append(index.gene, len(index.genes)).astype(np.int64)
        self.record_row = np.append(index.record_row, 0).astype(np.int64)
        self.row = np.append(index.row, -1).astype(np.int64)
        nan = np.float32(np.nan)
        self.targets = np.ascontiguousarray(
            np.vstack([index.targets, np.full((1, 3), nan, np.float32)]).T)
        t = 0 if index.sets is None else index.sets.shape[1]
        self.sets = np.full((len(index) + 1, t), nan, np.float32)
        if t:
            self.sets[:-1] = index.sets
        self.gene_name = np.array([*index.genes, ""], dtype=object)
        self.individual = np.append(index.individual, "").astype(object)
        self.population = np.append(index.population, "").astype(object)
        self.width = index.width

    def ids_of(self, pos: np.ndarray) -> dict:
        """``gene``, ``individual``, ``population``: lists of str of positions ``pos``."""
        return {"gene": self.gene_name[self.gene[pos]].tolist(),
                "individual": self.individual[pos].tolist(),
                "population": self.population[pos].tolist()}


@njit(cache=True, nogil=True)
def _gather(items, gene, slot_of, record_row, row, targets, sets, shift_in, rc_in,
            slot, rec, shift, rc, valid, kept, index, y, ys):
    """Everything a batch needs besides its windows, for items ``items`` (B, k) positions.

    Window ``w = m * B + i`` is member m of item i. An item is valid when the genes of all its
    members are held; an invalid item's windows are padding (slot -1, position -1 in ``kept``,
    NaN targets, no shift or reverse complement). Outputs: ``slot``, ``rec`` (record row),
    ``shift``, ``rc``, ``kept``, ``index`` (manifest row; for a single sample of a skipped gene
    the row all the same, for a pair -1): (k B,); ``valid`` (B,); ``y`` (k, 3, B); ``ys``
    (k, B, T).
    """
    b, k = items.shape
    for i in range(b):
        ok = True
        for m in range(k):
            if slot_of[gene[items[i, m]]] < 0:
                ok = False
        valid[i] = ok
        for m in range(k):
            w = m * b + i
            p = items[i, m]
            q = p if ok else -1
            kept[w] = q
            slot[w] = slot_of[gene[q]]
            rec[w] = record_row[q]
            shift[w] = shift_in[i] if ok else 0
            rc[w] = rc_in[i] and ok
            index[w] = row[p] if ok or k == 1 else -1
            for t in range(3):
                y[m, t, i] = targets[t, q]
            for t in range(sets.shape[1]):
                ys[m, i, t] = sets[q, t]


@njit(cache=True, nogil=True)
def _gather_and_build(items, gene, slot_of, record_row, row, targets, sets, shift_in, rc_in,
                      slot, rec, shift, rc, valid, kept, index, y, ys, pool, width, fill_n,
                      out, tss):
    """:func:`_gather`, then every window built on this thread (one numba call per batch)."""
    _gather(items, gene, slot_of, record_row, row, targets, sets, shift_in, rc_in, slot, rec,
            shift, rc, valid, kept, index, y, ys)
    build_windows_serial(pool, slot, rec, shift, rc, width, fill_n, out, tss)


def _collate(tables: BatchTables, pool: GenePool, items: np.ndarray, window: Window,
             shift: np.ndarray, reverse: np.ndarray, out: np.ndarray | None,
             kernel) -> tuple[dict, np.ndarray]:
    """The arrays of one batch of ``items`` (B, k): :func:`_gather` and the windows, in one
    numba call (or the gather, then ``kernel``). Returns (arrays, kept positions)."""
    b, k = items.shape
    n = window.length
    if out is None:
        out = np.empty((k, b, 2, n), np.uint8)
    m = k * b
    slot, rec, shifts, kept, index, tss = np.empty((6, m), np.int64)  # fresh: batches keep them
    flags = np.empty(m + b, bool)
    rc, valid = flags[:m], flags[m:]
    y = np.empty((k, 3, b), np.float32)
    ys = np.empty((k, b, tables.sets.shape[1]), np.float32)
    gathered = (items, tables.gene, pool.slot_of, tables.record_row, tables.row,
                tables.targets, tables.sets, shift, reverse, slot, rec, shifts, rc, valid, kept,
                index, y, ys)
    seq = out.reshape(m, 2, n)
    if kernel is build_windows_serial:
        _gather_and_build(*gathered, pool.pool, tables.width, window.fill == "N", seq, tss)
    else:
        _gather(*gathered)
        kernel(pool.pool, slot, rec, shifts, rc, tables.width, window.fill == "N", seq, tss)
    return {"seq": out, "tss": tss, "slot": slot, "shift": shifts[:b], "rc": rc[:b],
            "valid": valid, "index": index, "y": y, "ys": ys}, kept


def collate_samples(tables: BatchTables, pool: GenePool, rows: np.ndarray, window: Window,
                    shift: np.ndarray, reverse: np.ndarray, out: np.ndarray | None = None,
                    kernel=build_windows_serial) -> dict:
    """One batch of single samples.

    Parameters
    ----------
    tables : BatchTables
    pool : GenePool
        Holds every gene of the batch's samples (a gene not held gives padding: a skipped one).
    rows : np.ndarray, shape (B, 1), int64
        Positions in the split index (-1: padding).
    window : Window
    shift : np.ndarray, shape (B,), int64
    reverse : np.ndarray, shape (B,), bool
    out : np.ndarray, shape (1, B, 2, n), uint8, optional
        Receives the windows.
    kernel : callable
        Builds the windows, as :func:`prep.edits.build_windows` (default: the one-thread
        :func:`prep.edits.build_windows_serial`, fused with the gather into one numba call).

    Returns
    -------
    dict
        ``seq`` (B, 2, n) uint8; ``Y``, ``Z``, ``P`` (B,) float32 (NaN for padding), with
        several target sets ``targets`` and ``target_mask`` (B, T); ``valid`` (B,) bool;
        ``index`` (B,) int64 manifest rows (-1: padding); ``tss_index``, ``shift`` (B,) int64;
        ``rc`` (B,) bool; ``gene``, ``individual``, ``population``: lists of str.
    """
    a, kept = _collate(tables, pool, rows, window, shift, reverse, out, kernel)
    y = a["y"][0]
    batch = {"seq": a["seq"][0], "tss_index": a["tss"], "Y": y[0], "Z": y[1], "P": y[2],
             "valid": a["valid"], "index": a["index"], "shift": a["shift"], "rc": a["rc"]}
    if a["ys"].shape[2]:
        batch["targets"], batch["target_mask"] = a["ys"][0], np.isfinite(a["ys"][0])
    batch.update(tables.ids_of(kept))
    return batch


def collate_pairs(tables: BatchTables, pool: GenePool, rows: np.ndarray, window: Window,
                  shift: np.ndarray, reverse: np.ndarray, out: np.ndarray | None = None,
                  kernel=build_windows_serial) -> dict:
    """One batch of pairs; both members of a pair share one shift and orientation, and both
    windows of every pair come from one kernel call.

    Parameters
    ----------
    rows : np.ndarray, shape (B, 2), int64
        Positions of (a, b), -1 for padding.
    out : np.ndarray, shape (2, B, 2, n), uint8, optional
        Receives the a and b windows.
    tables, pool, window, shift, reverse, kernel
        As :func:`collate_samples`.

    Returns
    -------
    dict
        ``seq_a``, ``seq_b`` (B, 2, n) uint8; ``Y_a``, ``Y_b``, ``Z_a``, ``Z_b``, ``P_a``,
        ``P_b`` (B,) float32 (with several target sets also ``targets_a``, ``targets_b``,
        ``target_mask_a``, ``target_mask_b`` (B, T)); ``valid`` (B,) bool (both members held);
        ``index_a``, ``index_b`` (B,) int64; ``tss_index``, ``shift`` (B,) int64; ``rc`` (B,)
        bool; ``gene``, ``individual_a``, ``individual_b``: lists of str.
    """
    a, kept = _collate(tables, pool, rows, window, shift, reverse, out, kernel)
    b = len(rows)
    batch = {"valid": a["valid"], "shift": a["shift"], "rc": a["rc"], "tss_index": a["tss"][:b]}
    for m, name in enumerate(("a", "b")):
        y, part = a["y"][m], slice(m * b, (m + 1) * b)
        batch.update({f"seq_{name}": a["seq"][m], f"index_{name}": a["index"][part],
                      f"Y_{name}": y[0], f"Z_{name}": y[1], f"P_{name}": y[2]})
        if a["ys"].shape[2]:
            batch[f"targets_{name}"] = a["ys"][m]
            batch[f"target_mask_{name}"] = np.isfinite(a["ys"][m])
        ids = tables.ids_of(kept[part])
        batch[f"individual_{name}"] = ids["individual"]
        if name == "a":
            batch["gene"] = ids["gene"]
    return batch
