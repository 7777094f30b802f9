"""Loaders of the joint-training data: Enformer's own records and MPRA variant effects.

    from loader.joint import make_enformer_loader, make_mpra_loader
    enf = make_enformer_loader("DIR/enformer_data", "human", "train", batch_size=1, seed=0)
    mpra = make_mpra_loader("DIR/mpra", "train", batch_size=64, seed=0)

Both behave like :class:`loader.ShardLoader` where the training loop needs it: ``len()`` is
the batches of one epoch per rank, the same on every rank; iterating yields the batches from
the current (epoch, batch) to the end of that epoch, then the next iteration starts the next
epoch; ``state_dict()`` / ``load_state_dict()`` resume exactly mid-epoch.

DDP-exact: an epoch's order is a pure function of (seed, epoch) — a seeded permutation of the
records in train mode, the stored order in eval mode — padded with -1 to
``n_batches x world_size x batch_size`` items and cut into contiguous rank slices, so the ranks'
samples are disjoint, their union is every record, and no record is dropped (padding rows come
with ``valid = False``). Augmentation draws come from ``(seed, epoch, rank, batch)`` only.

Enformer batches (train mode augments like Basenji: a shift of the sequence by a uniform
``[-max_shift, max_shift]`` bases, N shifted in, targets unchanged; reverse complement with
probability ``rc_prob``: sequence reversed and complemented and the target bins reversed; the
strand-paired tracks are *not* swapped, as in Basenji's own training):

* ``seq`` (B, length) uint8 codes A, C, G, T, N = 0..4 (torch); padding rows all N;
* ``target`` (B, bins, tracks) float32 (stored float16); padding rows 0;
* ``valid`` (B,) bool; ``key`` list of B record keys ("" for padding); ``epoch``, ``batch``.

MPRA batches (train mode reverse-complements a pair, ref and alt together, with probability
``rc_prob``; the effect is strand-free):

* ``seq_ref``, ``seq_alt`` (B, W) uint8 codes, each oligo centred in W (the longest oligo of
  the data set) with N around it;
* ``effect`` (B, C) float32: alt − ref, normalised per cell type (prep.mpra); 0 where masked;
* ``mask`` (B, C) bool: measured in that cell type; ``valid`` (B,) bool; ``epoch``, ``batch``.

Enformer records are read on ``threads`` threads, ``prefetch`` batches ahead (zstd and sha256
release the GIL); MPRA pairs are all decoded into memory once (a 200 bp pair with five cell
types is ~0.5 kB: 100,000 pairs ~50 MB).
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import torch

from hapflow.names import SPLITS
from hapflow.sections import ORGANISMS
from loader.order import seeded_rng
from prep.encoding import reverse_complement
from prep.enformer_format import decode_enformer_sample
from prep.mpra_format import unpack_mpra_groups
from prep.shard_format import ShardFormatError
from prep.shard_tar import read_tar_members

__all__ = ["JointDataError", "EnformerLoader", "MpraLoader", "make_enformer_loader",
           "make_mpra_loader", "epoch_items", "shift_codes"]

N_CODE = 4


class JointDataError(ValueError):
    """Joint-training data missing or unusable; the message names the folder and the fix."""


def epoch_items(n_items: int, batch_size: int, rank: int, world_size: int, seed: int,
                epoch: int, shuffle: bool) -> np.ndarray:
    """This rank's item ids of one epoch: shape (n_batches * batch_size,), int64, -1 = padding.

    The order (a seeded permutation with ``shuffle``, else 0..n-1) depends on (seed, epoch)
    only; it is padded to ``n_batches x world_size x batch_size`` with -1 (n_batches = the
    ceiling that covers every item) and rank r takes the r-th contiguous slice.
    """
    per_rank = n_batches_of(n_items, batch_size, world_size) * batch_size
    order = (seeded_rng(seed, "joint_order", epoch).permutation(n_items) if shuffle
             else np.arange(n_items, dtype=np.int64))
    padded = np.full(per_rank * world_size, -1, dtype=np.int64)
    padded[:n_items] = order
    return padded[rank * per_rank:(rank + 1) * per_rank]


def n_batches_of(n_items: int, batch_size: int, world_size: int) -> int:
    """Batches per rank per epoch: every item once, the last batches padded (at least 1)."""
    return max(1, -(-n_items // (batch_size * world_size)))


def shift_codes(seq: np.ndarray, shift: int) -> np.ndarray:
    """``seq`` (L,) uint8 moved ``shift`` bases right (left when < 0), N shifted in: out[i] =
    seq[i - shift]."""
    if shift == 0:
        return seq
    out = np.full_like(seq, N_CODE)
    if shift > 0:
        out[shift:] = seq[:-shift]
    else:
        out[:shift] = seq[-shift:]
    return out


class _EpochLoader:
    """Epochs, batches, resume and DDP slicing shared by both loaders (see the module
    docstring); subclasses define ``n_items`` and ``_batch(items, rng)``."""

    kind = "joint"

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int, world_size: int,
                 train: bool, max_batches: int | None):
        if batch_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"batch_size {batch_size} / rank {rank} of {world_size}: invalid")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size, self.train = rank, world_size, train
        self.max_batches = max_batches
        self.epoch, self.batch = 0, 0

    @property
    def n_batches(self) -> int:
        nb = n_batches_of(self.n_items, self.batch_size, self.world_size)
        return min(nb, self.max_batches) if self.max_batches else nb

    def __len__(self) -> int:
        return self.n_batches

    def items(self, epoch: int) -> np.ndarray:
        """This rank's items of ``epoch``: (len(self) * batch_size,) int64, -1 = padding."""
        ids = epoch_items(self.n_items, self.batch_size, self.rank, self.world_size, self.seed,
                          epoch, self.train)
        return ids[: self.n_batches * self.batch_size]

    def batch_at(self, epoch: int, b: int) -> dict:
        """Batch ``b`` of ``epoch`` on this rank (a pure function of them)."""
        items = self.items(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        rng = seeded_rng(self.seed, f"{self.kind}_augment", epoch, self.rank, b)
        out = self._batch(items, rng if self.train else None)
        out["valid"] = torch.from_numpy(items >= 0)
        out["epoch"], out["batch"] = epoch, b
        return out

    def _batch(self, items: np.ndarray, rng: np.random.Generator | None) -> dict:
        raise NotImplementedError

    def _batches(self, epoch: int, start: int):
        for b in range(start, self.n_batches):
            yield self.batch_at(epoch, b)

    def __iter__(self):
        epoch = self.epoch
        for batch in self._batches(epoch, self.batch):
            self.batch = batch["batch"] + 1
            yield batch
        self.epoch, self.batch = epoch + 1, 0

    def _layout(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "world_size": self.world_size,
                "batch_size": self.batch_size, "n_batches": self.n_batches,
                "n_items": self.n_items}

    def state_dict(self) -> dict:
        """Where the next iteration starts, plus what must match to resume mid-epoch."""
        return {"epoch": self.epoch, "batch": self.batch, **self._layout()}

    def load_state_dict(self, state: dict) -> None:
        """Resume at the saved batch, or at the next epoch if the layout has changed."""
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if batch and (any(state.get(k) != v for k, v in self._layout().items())
                      or batch >= self.n_batches):
            epoch, batch = epoch + 1, 0
        self.epoch, self.batch = epoch, batch


def _tar_members(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """{key: {ext: (data offset, size)}} of a local tar (headers only are read)."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if info.isfile():
                    key, _, ext = os.path.basename(info.name).partition(".")
                    out.setdefault(key, {})[ext] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError) as err:
        raise ShardFormatError(f"shard {path} is corrupt or unreadable: {err}") from None
    return out


def _read_manifest(root: Path, what: str, command: str) -> pl.DataFrame:
    manifest = root / "manifest.parquet"
    if not manifest.is_file():
        raise JointDataError(f"{root} holds no {what} (no manifest.parquet): run `{command} "
                             f"--config ... --workdir {root.parent}` first")
    return pl.read_parquet(manifest)


class EnformerLoader(_EpochLoader):
    """Batches of one organism's Enformer records of one split (see the module docstring)."""

    kind = "enformer"

    def __init__(self, root: str | os.PathLike, organism: str, split: str, batch_size: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, mode: str = "train",
                 rc_prob: float = 0.5, max_shift: int = 3, threads: int = 2, prefetch: int = 2,
                 max_batches: int | None = None):
        root = Path(root)
        if organism not in ORGANISMS or split not in SPLITS or mode not in ("train", "eval"):
            raise ValueError(f"organism {organism!r}, split {split!r}, mode {mode!r}: invalid")
        m = _read_manifest(root, "Enformer training data", "python -m prep.enformer_data")
        m = m.filter((pl.col("organism") == organism) & (pl.col("split") == split))
        if m.height == 0:
            raise JointDataError(f"{root} holds no {organism} {split} records: add [enformer_data] "
                                 f"{organism} (and split {split}) and run `python -m "
                                 f"prep.enformer_data --config ... --workdir {root.parent}`")
        self.root, self.organism, self.split = root, organism, split
        self.keys = m["key"].to_list()
        self.shards = m["shard"].to_list()
        meta = json.loads((root / "meta.json").read_text())
        org = meta.get("organisms", {}).get(organism, {})
        self.length = int(org.get("window", 0))
        self.target_shape = tuple(org.get("target_shape", (0, 0)))
        self.rc_prob, self.max_shift = rc_prob, max_shift
        self.threads, self.prefetch = max(1, threads), max(0, prefetch)
        self._members: dict[str, dict] = {}
        super().__init__(m.height, batch_size, seed, rank, world_size, mode == "train",
                         max_batches)

    def _sample(self, i: int) -> dict:
        shard = self.shards[i]
        if shard not in self._members:  # a race only re-reads the same headers
            self._members[shard] = _tar_members(self.root / shard)
        key = self.keys[i]
        where = self._members[shard].get(key)
        if where is None:
            raise ShardFormatError(f"shard {self.root / shard} lacks sample {key} (manifest)")
        raw = {"__key__": key}
        with open(self.root / shard, "rb") as fh:
            for ext, (offset, size) in where.items():
                fh.seek(offset)
                raw[ext] = fh.read(size)
        return decode_enformer_sample(raw, f"shard {self.root / shard}")

    def _batch(self, items: np.ndarray, rng: np.random.Generator | None) -> dict:
        B = len(items)
        bins, tracks = self.target_shape
        seq = np.full((B, self.length), N_CODE, dtype=np.uint8)
        target = np.zeros((B, bins, tracks), dtype=np.float32)
        rc = rng.random(B) < self.rc_prob if rng is not None else np.zeros(B, bool)
        shift = (rng.integers(-self.max_shift, self.max_shift + 1, B) if rng is not None
                 else np.zeros(B, np.int64))
        keys = [""] * B
        for row, i in enumerate(items):
            if i < 0:
                continue
            s = self._sample(int(i))
            codes, t = shift_codes(s["seq"], int(shift[row])), s["target"]
            if rc[row]:
                codes, t = reverse_complement(codes), t[::-1]
            seq[row], target[row], keys[row] = codes, t, s["__key__"]
        return {"seq": torch.from_numpy(seq), "target": torch.from_numpy(target), "key": keys}

    def _batches(self, epoch: int, start: int):
        if not self.prefetch:
            yield from super()._batches(epoch, start)
            return
        with ThreadPoolExecutor(self.threads) as pool:
            ahead: deque = deque()
            b = start
            while b < self.n_batches or ahead:
                while b < self.n_batches and len(ahead) < self.prefetch:
                    ahead.append(pool.submit(self.batch_at, epoch, b))
                    b += 1
                yield ahead.popleft().result()


class MpraLoader(_EpochLoader):
    """Batches of MPRA oligo pairs of one split (see the module docstring)."""

    kind = "mpra"

    def __init__(self, root: str | os.PathLike, split: str, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, mode: str = "train", rc_prob: float = 0.5,
                 max_batches: int | None = None):
        root = Path(root)
        if split not in SPLITS or mode not in ("train", "eval"):
            raise ValueError(f"split {split!r}, mode {mode!r}: invalid")
        m = _read_manifest(root, "MPRA variant effects", "python -m prep.mpra")
        self.width = int(max(m["ref_length"].max(), m["alt_length"].max()))
        meta = json.loads((root / "meta.json").read_text())
        self.cell_types = list(meta["cell_types"])
        shards = m.filter(pl.col("split") == split)["shard"].unique(maintain_order=True)
        if not len(shards):
            raise JointDataError(f"{root} holds no MPRA pairs of split {split}")
        pairs = [p for s in shards for p in unpack_mpra_groups(read_tar_members(root / s))]
        n, c = len(pairs), len(self.cell_types)
        self.ref = np.full((n, self.width), N_CODE, dtype=np.uint8)
        self.alt = np.full((n, self.width), N_CODE, dtype=np.uint8)
        for i, p in enumerate(pairs):
            for arr, codes in ((self.ref, p["ref"]), (self.alt, p["alt"])):
                lo = (self.width - len(codes)) // 2
                arr[i, lo:lo + len(codes)] = codes
        self.effect = np.stack([p["effect"] for p in pairs]).astype(np.float32).reshape(n, c)
        self.mask = np.stack([p["mask"] for p in pairs]).astype(bool).reshape(n, c)
        self.ids = [p["id"] for p in pairs]
        self.root, self.split, self.rc_prob = root, split, rc_prob
        super().__init__(n, batch_size, seed, rank, world_size, mode == "train", max_batches)

    def _batch(self, items: np.ndarray, rng: np.random.Generator | None) -> dict:
        ok = items >= 0
        safe = np.where(ok, items, 0)
        ref, alt = self.ref[safe], self.alt[safe]
        ref[~ok] = N_CODE
        alt[~ok] = N_CODE
        if rng is not None:
            rc = rng.random(len(items)) < self.rc_prob
            ref[rc], alt[rc] = reverse_complement(ref[rc]), reverse_complement(alt[rc])
        effect = np.where(ok[:, None], self.effect[safe], 0.0).astype(np.float32)
        mask = self.mask[safe] & ok[:, None]
        return {"seq_ref": torch.from_numpy(ref), "seq_alt": torch.from_numpy(alt),
                "effect": torch.from_numpy(effect), "mask": torch.from_numpy(mask)}


def make_enformer_loader(root, organism: str, split: str, batch_size: int, seed: int = 0,
                         rank: int = 0, world_size: int = 1, **kwargs) -> EnformerLoader:
    """An :class:`EnformerLoader` of ``root`` (DIR/enformer_data); ``mode`` defaults to train
    on the train split and eval on the others."""
    kwargs.setdefault("mode", "train" if split == "train" else "eval")
    return EnformerLoader(root, organism, split, batch_size, seed, rank, world_size, **kwargs)


def make_mpra_loader(root, split: str, batch_size: int, seed: int = 0, rank: int = 0,
                     world_size: int = 1, **kwargs) -> MpraLoader:
    """An :class:`MpraLoader` of ``root`` (DIR/mpra); ``mode`` as :func:`make_enformer_loader`."""
    kwargs.setdefault("mode", "train" if split == "train" else "eval")
    return MpraLoader(root, split, batch_size, seed, rank, world_size, **kwargs)
