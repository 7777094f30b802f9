"""The worker pipeline: a worker's items in, its batches out (NumPy, torch-free).

:func:`worker_batches` runs it for one DataLoader worker; the stages below follow in the order
a batch goes through them:

    split_rounds      chunks of items -> rounds that read each needed shard once
    read_interleaved  the shards a round needs, read side by side in the order its chunks
                      need them
    read_rows         one shard -> (position, sample | None) events, only the samples wanted
    decode_groups     raw tar members -> verified, decoded groups (prep's GroupDecoder)
    gather_chunks     events -> chunks of items whose samples have all arrived
    (crop, shift and reverse complement: :mod:`loader.augment`)
    gather_targets    positions -> the batch's targets, from the manifest (shards hold none)
    collate_*         items of one batch -> a dict of NumPy arrays and lists

A sample is a handle ``(group, row)``: the row of a decoded :class:`Group`, so a group's
haplotype pairs are decoded once and never copied until they are cropped into a batch.
(:func:`prep.shard_format.unpack_groups` gives the same samples as one dict each; the loader
skips building those dicts, which cost more than the decoding itself.) A stage takes plain
Python data, so it is tested on small lists without any tar file.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import zstandard as zstd

from loader.augment import Window, draw_augment
from loader.order import seeded_rng
from loader.sources import SplitIndex, StaleShardError, check_build, group_filter, open_url
from prep.encoding import N_CODE
from prep.shard_format import GroupDecoder, ShardFormatError, safe_key
from prep.shard_tar import iter_tar

__all__ = [
    "worker_batches",
    "split_rounds",
    "read_interleaved",
    "read_rows",
    "decode_groups",
    "Group",
    "gather_chunks",
    "gather_targets",
    "collate_samples",
    "collate_pairs",
]

log = logging.getLogger(__name__)


def worker_batches(index: SplitIndex, items: np.ndarray, *, batch_size: int, chunk_size: int,
                   window: Window, augment: bool, rc_prob: float, max_shift: int,
                   seed: int, epoch: int, rank: int, worker: int, skip: int = 0,
                   on_error: str = "raise", timeout: float = 120.0,
                   buffers: Callable[[], dict] | None = None) -> Iterator[dict]:
    """The batches of one worker: read, gather, crop and augment, collate (in plan order).

    The items are cut into chunks of ``chunk_size``; chunks are read in rounds
    (:func:`split_rounds`), their shards side by side (:func:`read_interleaved`), and a chunk
    is cut into batches as soon as all its samples have arrived (:func:`gather_chunks`).

    Parameters
    ----------
    index : SplitIndex
    items : np.ndarray, shape (count * batch_size, k), int64
        The worker's items (positions in ``index``; -1: padding); k = 1 samples, k = 2 pairs.
    batch_size : int
    chunk_size : int
        Items gathered (read from their shards) together; a multiple of ``batch_size``.
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
        Leading batches not to yield (resuming mid-epoch); whole skipped chunks are not read.
    on_error, timeout
        As in :func:`read_rows`.
    buffers : callable, optional
        Called once per batch, returns the arrays to write windows into (see ``out`` of
        :func:`collate_samples`); default: new arrays.

    Yields
    ------
    dict
        As :func:`collate_samples` / :func:`collate_pairs`, plus ``errors`` ((url, message) of
        shards skipped since the previous batch) and ``batch`` (the worker's batch number).
    """
    assert chunk_size % batch_size == 0, "chunk_size must be a multiple of batch_size"
    per_chunk = chunk_size // batch_size
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    errors: list[tuple[str, str]] = []
    for c, rows, resolved in _gathered(index, chunks, skip // per_chunk, on_error, errors,
                                       timeout):
        if augment:
            shifts, reverses = draw_augment(seeded_rng(seed, "augment", epoch, rank, worker, c),
                                            len(rows), rc_prob, max_shift)
        else:
            shifts, reverses = np.zeros(len(rows), np.int64), np.zeros(len(rows), bool)
        for j in range(0, len(rows), batch_size):
            b = c * per_chunk + j // batch_size
            if b < skip:
                continue
            part = slice(j, j + batch_size)
            batch = _collate(index, rows[part], resolved[part], window, shifts[part],
                             reverses[part], buffers() if buffers else None)
            batch["errors"], errors[:] = list(errors), []
            batch["batch"] = b
            yield batch


def _gathered(index, chunks, first, on_error, errors, timeout):
    """(chunk number, items, resolved samples) for chunks[first:], round by round: each
    round's shards read once (:func:`read_interleaved`), each chunk given out once its samples
    have all arrived (:func:`gather_chunks`)."""
    todo = chunks[first:]
    for members in split_rounds(todo):
        part = [todo[i] for i in members]
        events = read_interleaved(index, part, on_error, errors, timeout)
        for i, resolved in zip(members, gather_chunks(events, part), strict=True):
            yield first + i, todo[i], resolved


def _collate(index: SplitIndex, rows: np.ndarray, resolved: list[tuple], window: Window,
             shift: np.ndarray, reverse: np.ndarray, out: dict | None) -> dict:
    """One batch of items ``rows`` (B, k) (positions, -1: padding) whose samples are
    ``resolved``: manifest rows and targets from ``index``, windows from the samples."""
    manifest_rows = np.where(rows >= 0, index.row[np.maximum(rows, 0)], -1)
    if rows.shape[1] == 1:
        return collate_samples(resolved, manifest_rows[:, 0], window, shift, reverse, out,
                               gather_targets(index, rows[:, 0]))
    targets = (gather_targets(index, rows[:, 0]), gather_targets(index, rows[:, 1]))
    return collate_pairs(resolved, manifest_rows, window, shift, reverse, out, targets)


def split_rounds(chunks: list[np.ndarray]) -> list[list[int]]:
    """Group consecutive chunks into rounds that each read their shards once.

    A sample needed again after a gap (the next cycle of a long epoch) is read again in a new
    round rather than held in memory in between. Neighbouring chunks may share samples (the
    pairs of one gene).

    Parameters
    ----------
    chunks : list of np.ndarray, each of shape (m, k), int (-1: padding)

    Returns
    -------
    list of list of int
        Chunk indices of each round, in order.
    """
    rounds: list[list[int]] = []
    older: set[int] = set()  # needs of the round's chunks before the previous one
    previous: set[int] = set()
    for c, items in enumerate(chunks):
        need = set(np.unique(items[items >= 0]).tolist())
        if rounds and need & older:
            rounds.append([])
            older, previous = set(), set()
        if not rounds:
            rounds.append([])
        rounds[-1].append(c)
        older |= previous
        previous = need
    return rounds


def read_interleaved(index: SplitIndex, chunks: list[np.ndarray], on_error: str = "raise",
                     errors: list | None = None, timeout: float = 120.0,
                     opener: Callable = open_url) -> Iterator[tuple[int, dict | None]]:
    """Stream the samples ``chunks`` need, reading several shards side by side.

    Each shard is read once, front to back, by :func:`read_rows`; the next sample is always
    taken from the shard holding a sample of the earliest chunk still waiting. A plan whose
    lanes advance through different shards at once (:func:`loader.order.interleave_lanes`)
    thus keeps one open shard and one or two decoded groups per lane, instead of reading one
    shard to its end while the samples other chunks need later pile up; with one lane it reads
    shard after shard, as :func:`read_rows` alone would.

    Parameters
    ----------
    index : SplitIndex
    chunks : list of np.ndarray, each of shape (m, k), int
        Items (positions, -1 for padding) in output order, as :func:`gather_chunks` takes them.
    on_error, errors, timeout, opener
        As in :func:`read_rows`.

    Yields
    ------
    (position, sample)
        Every needed position once (``sample`` None for a sample of a skipped shard).
    """
    first: dict[int, int] = {}  # position -> first chunk needing it
    for c, items in enumerate(chunks):
        for pos in np.unique(items[items >= 0]).tolist():
            first.setdefault(pos, c)
    by_shard: dict[int, list[int]] = defaultdict(list)
    for pos in first:
        by_shard[int(index.shard[pos])].append(pos)
    left: dict[int, dict[int, int]] = {}  # shard -> {chunk: its samples not yet read}
    waits: dict[int, list[int]] = {}  # shard -> the chunks waiting on it, ascending
    at: dict[int, int] = {}  # shard -> index in waits of the earliest chunk still waiting
    heap: list[tuple[int, int]] = []  # (earliest chunk waiting on the shard, shard)
    for s, positions in by_shard.items():
        left[s] = defaultdict(int)
        for pos in positions:
            left[s][first[pos]] += 1
        waits[s], at[s] = sorted(left[s]), 0
        heapq.heappush(heap, (waits[s][0], s))
    streams: dict[int, Iterator] = {}
    while heap:
        c0, s = heap[0]
        if s not in streams:
            wanted = {index.key[p]: p for p in sorted(by_shard[s])}
            streams[s] = read_rows(index, [(s, wanted)], on_error, errors, timeout, opener)
        event = next(streams[s], None)
        if event is None:  # exhausted: read_rows has delivered or reported everything
            heapq.heappop(heap)
            del streams[s]
            continue
        yield event
        left[s][first[event[0]]] -= 1
        while at[s] < len(waits[s]) and left[s][waits[s][at[s]]] == 0:
            at[s] += 1
        if at[s] == len(waits[s]):  # the shard's last wanted sample: let read_rows finish
            heapq.heappop(heap)  # (it checks that the shard held every wanted sample)
            yield from streams.pop(s)
        elif waits[s][at[s]] != c0:
            heapq.heapreplace(heap, (waits[s][at[s]], s))


def read_rows(index: SplitIndex, shards: list[tuple[int, dict]], on_error: str = "raise",
              errors: list | None = None, timeout: float = 120.0,
              opener: Callable = open_url) -> Iterator[tuple[int, dict | None]]:
    """Stream the wanted samples of each shard.

    Parameters
    ----------
    index : SplitIndex
    shards : list of (shard id, {sample key: position})
        Shards in reading order with the samples wanted from each.
    on_error : "raise" or "skip"
    errors : list, optional
        Receives ``(url, message)`` per skipped shard.

    Yields
    ------
    (position, sample)
        ``sample`` is a handle ``(Group, row)``, or ``None`` for a wanted sample that a skipped
        (corrupt) shard did not deliver.

    Raises
    ------
    ShardFormatError
        (``on_error="raise"``) a corrupt or truncated shard or member, or a shard that lacks
        samples the manifest lists; the message names shard and member. With ``"skip"`` a
        corrupt member costs only the samples that depend on it; a broken tar, the rest of
        the shard.
    """
    for shard_id, wanted in shards:
        url = index.urls[shard_id]
        groups = {index.group[p] for p in wanted.values()}
        got: set[int] = set()
        error = None
        bad: list[str] = []
        try:
            with opener(url, timeout) as fh:
                members = iter_tar(fh, url, want=group_filter(groups))
                for group in decode_groups(members, bad if on_error == "skip" else None):
                    check_build(index, group.meta, url)
                    _check_layout(index, group)
                    for row, key in enumerate(group.keys()):
                        pos = wanted.get(key)
                        if pos is not None and pos not in got:
                            got.add(pos)
                            yield pos, (group, row)
        except StaleShardError:
            raise
        except (ShardFormatError, OSError, zstd.ZstdError, json.JSONDecodeError, KeyError,
                ValueError) as err:
            text = str(err)
            error = text if url in text else f"shard {url}: {text}"
        if bad and error is None:
            error = "; ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        missing = [p for p in wanted.values() if p not in got]
        if missing and error is None:
            error = (f"shard {url} lacks {len(missing)} sample(s) listed in the manifest, e.g. "
                     f"{index.key[missing[0]]}: the shard is truncated or corrupt, or the "
                     "manifest belongs to another build")
        if error is None:
            continue
        if on_error != "skip":
            raise ShardFormatError(error)
        message = f"{error} (skipped: {len(missing)} sample(s) become padding)"
        log.warning(message)
        if errors is not None:
            errors.append((url, message))
        for p in missing:
            yield p, None


def _check_layout(index: SplitIndex, group: Group) -> None:
    """A group must match its split's window layout (the crop relies on it)."""
    meta = group.meta
    if (meta["length"], meta["flank"], meta["split"]) != (index.length, index.flank, index.split):
        raise ShardFormatError(
            f"shard {group.url}: group of {meta['gene']} stores split {meta['split']}, L = "
            f"{meta['length']} + 2 x {meta['flank']} flank, but the manifest's split "
            f"{index.split} has L = {index.length} + 2 x {index.flank}: the shards folder mixes "
            "studies; rebuild it")


def decode_groups(samples: Iterable[dict], errors: list | None = None) -> Iterator[Group]:
    """WebDataset stage: raw shard samples in, verified and decoded groups out.

    Parameters
    ----------
    samples : iterable of dict
        ``{"__key__", "__url__", ext: bytes}`` as :func:`prep.shard_format.iter_tar` yields them;
        a gene's reference member comes before its groups.
    errors : list, optional
        When given, a corrupt member is not raised but appended (its message) and skipped,
        with the groups that depend on it; the stream goes on with the next member.

    Raises
    ------
    ShardFormatError
        (without ``errors``) a corrupt member, a group without its reference; the message names
        shard and member (:class:`prep.shard_format.GroupDecoder`).
    """
    decoder = GroupDecoder()
    for sample in samples:
        try:
            decoded = decoder.feed(sample)
        except ShardFormatError as err:
            if errors is None:
                raise
            errors.append(str(err))
            continue
        if decoded is not None:
            yield Group(decoded[0], decoded[1], sample.get("__url__", "?"))


class Group:
    """One decoded group of a shard: the haplotypes of n individuals of one gene.

    Attributes
    ----------
    haps : np.ndarray, shape (n, 2, W), uint8 (read-only)
    meta : dict
        The group's verified JSON (gene, individuals, populations, tss_index, ...; no targets).
    url : str
        The shard.
    """

    __slots__ = ("haps", "meta", "url")

    def __init__(self, haps: np.ndarray, meta: dict, url: str):
        self.haps, self.meta, self.url = haps, meta, url

    def keys(self) -> list[str]:
        """``{gene}__{individual}`` sample keys of the rows."""
        gene = safe_key(self.meta["gene"])
        return [f"{gene}__{safe_key(i)}" for i in self.meta["individuals"]]


def gather_chunks(events: Iterable[tuple[int, object]],
                  chunks: list[np.ndarray]) -> Iterator[list[tuple]]:
    """Hold samples until every sample of the next chunk has arrived, then yield that chunk.

    Parameters
    ----------
    events : iterable of (position, sample)
        Each needed position exactly once, in any order.
    chunks : list of np.ndarray, each of shape (m, k), int
        Items (positions, -1 for padding) in output order.

    Yields
    ------
    list of tuple
        Per chunk, per item, the k samples (None for padding). A sample is dropped once the
        last chunk needing it has been yielded.
    """
    needs = [np.unique(items[items >= 0]).tolist() for items in chunks]
    remaining = [len(need) for need in needs]
    chunks_of: dict[int, list[int]] = defaultdict(list)
    refs: dict[int, int] = defaultdict(int)
    for c, need in enumerate(needs):
        for pos in need:
            chunks_of[pos].append(c)
            refs[pos] += 1
    store: dict[int, object] = {}
    nxt, n = 0, len(chunks)

    def emit(c: int) -> list[tuple]:
        rows = chunks[c].tolist()
        if chunks[c].shape[1] == 1:
            out = [(store[p],) if p >= 0 else (None,) for (p,) in rows]
        else:
            out = [tuple(store[p] if p >= 0 else None for p in row) for row in rows]
        for pos in needs[c]:
            refs[pos] -= 1
            if refs[pos] == 0:
                del store[pos]
        return out

    while nxt < n and remaining[nxt] == 0:
        yield emit(nxt)
        nxt += 1
    for pos, sample in events:
        cs = chunks_of.get(pos)
        if cs is None or pos in store:
            continue
        store[pos] = sample
        for c in cs:
            remaining[c] -= 1
        while nxt < n and remaining[nxt] == 0:
            yield emit(nxt)
            nxt += 1
    assert nxt == len(chunks), f"{len(chunks) - nxt} chunk(s) never completed: samples missing"


def gather_targets(index: SplitIndex, positions: np.ndarray) -> dict:
    """The targets of a batch's samples, from the split index (the manifest's targets table).

    Parameters
    ----------
    index : SplitIndex
    positions : np.ndarray, shape (B,), int
        Positions in ``index``; -1 for padding.

    Returns
    -------
    dict
        ``Y``, ``Z``, ``P`` (B,) float32 (NaN for padding); with several target sets also
        ``targets`` (B, T) float32 (each set's Y, the primary first; NaN where missing) and
        ``target_mask`` (B, T) bool (True where ``targets`` holds a value).
    """
    pos = np.asarray(positions, dtype=np.int64)
    ok = pos >= 0
    safe = np.where(ok, pos, 0)
    values = np.where(ok[:, None], index.targets[safe], np.float32(np.nan))  # (B, 3)
    out = {t: np.ascontiguousarray(values[:, j], dtype=np.float32)
           for j, t in enumerate(("Y", "Z", "P"))}
    if index.sets is not None:
        sets = np.where(ok[:, None], index.sets[safe], np.float32(np.nan)).astype(np.float32)
        out["targets"] = sets
        out["target_mask"] = np.isfinite(sets)
    return out


def collate_samples(items: list[tuple], rows: np.ndarray, window: Window, shift: np.ndarray,
                    reverse: np.ndarray, out: dict | None = None,
                    targets: dict | None = None) -> dict:
    """One batch of single samples.

    Parameters
    ----------
    items : list of 1-tuples of a handle ``(Group, row)`` or None (padding), length B
    rows : np.ndarray, shape (B,), int64
        Manifest row of each item (-1 for padding).
    window : Window
    shift : np.ndarray, shape (B,), int
    reverse : np.ndarray, shape (B,), bool
    out : dict, optional
        ``{"seq": array of shape (B, 2, n), uint8}`` to write the windows into.
    targets : dict, optional
        The items' targets, :func:`gather_targets`; default NaN.

    Returns
    -------
    dict
        ``seq`` (B, 2, n) uint8; ``Y``, ``Z``, ``P`` (B,) float32 (NaN for padding), with
        several target sets ``targets`` and ``target_mask`` (B, T); ``valid`` (B,) bool;
        ``index`` (B,) int64 manifest rows; ``tss_index``, ``shift`` (B,) int64; ``rc`` (B,)
        bool; ``gene``, ``individual``, ``population``: lists of str.
    """
    handles = [it[0] for it in items]
    valid = np.array([h is not None for h in handles])
    shift = np.where(valid, shift, 0).astype(np.int64)
    reverse = valid & reverse
    batch = _fill(handles, window, shift, reverse, (out or {}).get("seq"))
    batch.update(_masked(targets if targets is not None else _no_targets(len(handles)), valid))
    batch.update({"valid": valid, "index": rows, "shift": shift, "rc": reverse})
    return batch


def collate_pairs(items: list[tuple], rows: np.ndarray, window: Window, shift: np.ndarray,
                  reverse: np.ndarray, out: dict | None = None,
                  targets: tuple[dict, dict] | None = None) -> dict:
    """One batch of pairs; both members of a pair share one shift and orientation.

    Parameters
    ----------
    items : list of 2-tuples of handles ``(Group, row)`` or None (padding), length B
    rows : np.ndarray, shape (B, 2), int64
        Manifest rows of (a, b), -1 for padding.
    out : dict, optional
        ``{"seq_a": ..., "seq_b": ...}`` arrays of shape (B, 2, n), uint8, to write into.
    targets : (dict, dict), optional
        The a and b members' targets, :func:`gather_targets`; default NaN.

    Returns
    -------
    dict
        ``seq_a``, ``seq_b`` (B, 2, n) uint8; ``Y_a``, ``Y_b``, ``Z_a``, ``Z_b``, ``P_a``,
        ``P_b`` (B,) float32 (with several target sets also ``targets_a``, ``targets_b``,
        ``target_mask_a``, ``target_mask_b`` (B, T)); ``valid`` (B,) bool; ``index_a``,
        ``index_b`` (B,) int64; ``tss_index``, ``shift`` (B,) int64; ``rc`` (B,) bool;
        ``gene``, ``individual_a``, ``individual_b``: lists of str.
    """
    valid = np.array([a is not None and b is not None for a, b in items])
    shift = np.where(valid, shift, 0).astype(np.int64)
    reverse = valid & reverse
    batch = {"valid": valid, "index_a": np.where(valid, rows[:, 0], -1),
             "index_b": np.where(valid, rows[:, 1], -1), "shift": shift, "rc": reverse}
    for k, name in enumerate(("a", "b")):
        part = _fill([it[k] if ok else None for it, ok in zip(items, valid, strict=True)],
                     window, shift, reverse, (out or {}).get(f"seq_{name}"))
        batch[f"seq_{name}"] = part["seq"]
        values = targets[k] if targets is not None else _no_targets(len(items))
        for t, v in _masked(values, valid).items():
            batch[f"{t}_{name}"] = v
        batch[f"individual_{name}"] = part["individual"]
        if name == "a":
            batch["tss_index"], batch["gene"] = part["tss_index"], part["gene"]
    return batch


def _fill(handles: list, window: Window, shift: np.ndarray, reverse: np.ndarray,
          seq: np.ndarray | None = None) -> dict:
    """Windows, TSS and ids of handles ``(group, row)`` or None (padding).

    ``seq`` (B, 2, n) uint8, C-contiguous, receives the windows when given.
    """
    b = len(handles)
    if seq is None:
        seq = np.empty((b, 2, window.length), dtype=np.uint8)
    tss = np.full(b, -1, dtype=np.int64)
    ids: dict[str, list] = {"gene": [""] * b, "individual": [""] * b, "population": [""] * b}
    for i, handle in enumerate(handles):
        if handle is None:
            seq[i] = N_CODE
            continue
        group, row = handle
        meta = group.meta
        tss[i] = window.write(seq[i], group.haps[row], meta["tss_index"], int(shift[i]),
                              bool(reverse[i]))
        ids["gene"][i] = meta["gene"]
        ids["individual"][i] = meta["individuals"][row]
        ids["population"][i] = meta["populations"][row]
    return {"seq": seq, "tss_index": tss, **ids}


def _masked(targets: dict, valid: np.ndarray) -> dict:
    """Targets with padding rows (``valid`` False: also samples of a skipped shard) cleared:
    NaN values, False masks."""
    out = {}
    for name, v in targets.items():
        keep = valid if v.ndim == 1 else valid[:, None]
        out[name] = v & keep if v.dtype == bool else np.where(keep, v, np.float32(np.nan))
    return out


def _no_targets(b: int) -> dict:
    return {t: np.full(b, np.nan, dtype=np.float32) for t in ("Y", "Z", "P")}
