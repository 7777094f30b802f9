"""The genes a loading process has in flight, in the fixed-size slots of one EditPool.

A batch's windows are built by one call of :func:`prep.edits.build_windows`, which reads every
gene from the slots of a :class:`prep.edits.EditPool` (reference span, edit table, the packed
haplotype x edit bits). :class:`GenePool` keeps such a pool for a worker: a gene read from its
shard takes a free slot (:meth:`GenePool.add`) and gives it back when the last batch needing it
is done (:meth:`GenePool.release`). The pool's arrays grow by doubling when a gene does not fit
(more genes than slots, or a longer span, more edits, ALT bytes or haplotypes than any before);
every capacity is a power of two, so a worker reallocates a handful of times per epoch at most.

Memory: ``S x (R + 25 E + A + H E / 8)`` bytes for S slots of spans up to R bases, E edits, A ALT
bytes and H haplotypes: about 0.3 MB per slot at 196,608 bp for 300 individuals. S is the most
genes in flight at once (:attr:`GenePool.peak`, bounded by the plan:
:meth:`loader.stages.GeneSchedule.bound`), never the decoded sequences of a group.
"""

from __future__ import annotations

import numpy as np

from prep.edits import EditPool
from prep.gene_record import GeneRecord

__all__ = ["GenePool"]


def _capacity(need: int) -> int:
    """The power of two >= need (>= 1)."""
    return 1 << max(0, int(need) - 1).bit_length()


def _empty(slots: int, ref: int, edits: int, alt: int, haps: int) -> EditPool:
    return EditPool(refs=np.zeros((slots, ref), np.uint8), ref_len=np.zeros(slots, np.int64),
                    tss_rel=np.zeros(slots, np.int64), flip=np.zeros(slots, bool),
                    starts=np.zeros((slots, edits), np.int64),
                    ends=np.zeros((slots, edits), np.int64),
                    alt_offsets=np.zeros((slots, edits + 1), np.int64),
                    alt_codes=np.zeros((slots, alt), np.uint8),
                    n_edits=np.zeros(slots, np.int64),
                    bits=np.zeros((slots, haps, (edits + 7) // 8), np.uint8))


def _dims(pool: EditPool) -> tuple[int, int, int, int, int]:
    """(slots, span bases, edits, ALT bytes, haplotypes) a pool holds."""
    return (pool.refs.shape[0], pool.refs.shape[1], pool.starts.shape[1],
            pool.alt_codes.shape[1], pool.bits.shape[1])


class GenePool:
    """Genes in the slots of an :class:`prep.edits.EditPool`, looked up by gene id.

    Parameters
    ----------
    n_genes : int
        Gene ids are ``0 .. n_genes - 1`` (a :class:`loader.sources.SplitIndex`'s genes).

    Attributes
    ----------
    pool : EditPool
        What :func:`prep.edits.build_windows` reads; replaced when it grows.
    slot_of : np.ndarray, shape (n_genes + 1,), int64
        The slot of each gene, -1 when it is not held; the last entry (gene ``n_genes``, for
        padding) is always -1.
    peak : int
        The most genes held at once so far.
    """

    def __init__(self, n_genes: int):
        self.slot_of = np.full(n_genes + 1, -1, np.int64)
        self.pool = _empty(1, 1, 1, 1, 1)
        self._free: list[int] = [0]
        self.peak = 0

    def __len__(self) -> int:
        """Genes held now."""
        return int((self.slot_of >= 0).sum())

    def __contains__(self, gene: int) -> bool:
        return bool(self.slot_of[gene] >= 0)

    def add(self, gene: int, record: GeneRecord) -> int:
        """Put a verified gene record in a free slot (growing the pool if needed); its slot."""
        ed, ref = record.edits, record.ref
        n_hap, n_bytes = ed.bits.shape
        self._fit(len(ref), ed.n_edits, len(ed.alt_codes), n_hap)
        s = self._free.pop()
        p, k = self.pool, ed.n_edits
        p.refs[s, :len(ref)] = ref
        p.ref_len[s], p.tss_rel[s], p.n_edits[s] = len(ref), record.meta["tss_rel"], k
        p.flip[s] = record.meta["reverse_complemented"]
        p.starts[s, :k], p.ends[s, :k] = ed.starts, ed.ends
        p.alt_offsets[s, :k + 1] = ed.alt_offsets
        p.alt_codes[s, :len(ed.alt_codes)] = ed.alt_codes
        p.bits[s, :n_hap, :n_bytes] = ed.bits
        self.slot_of[gene] = s
        self.peak = max(self.peak, len(self))
        return s

    def release(self, gene: int) -> None:
        """Free the slot of ``gene`` (nothing when it is not held)."""
        s = int(self.slot_of[gene])
        if s >= 0:
            self.slot_of[gene] = -1
            self._free.append(s)

    def _fit(self, n_ref: int, n_edits: int, n_alt: int, n_hap: int) -> None:
        """Grow the pool (each short dimension doubled until it fits) so that one more gene of
        these sizes fits; held genes keep their slots."""
        old = _dims(self.pool)
        need = (len(self) + 1, n_ref, max(n_edits, 1), max(n_alt, 1), n_hap)
        if all(n <= have for n, have in zip(need, old, strict=True)) and self._free:
            return
        new = tuple(have if n <= have else max(2 * have, _capacity(n))
                    for n, have in zip(need, old, strict=True))
        grown = _empty(*new)
        p = self.pool
        s, r, e, a, h = old
        grown.refs[:s, :r] = p.refs
        for name in ("ref_len", "tss_rel", "flip", "n_edits"):
            getattr(grown, name)[:s] = getattr(p, name)
        grown.starts[:s, :e], grown.ends[:s, :e] = p.starts, p.ends
        grown.alt_offsets[:s, :e + 1] = p.alt_offsets
        grown.alt_codes[:s, :a] = p.alt_codes
        grown.bits[:s, :h, :p.bits.shape[2]] = p.bits
        self.pool = grown
        self._free.extend(range(new[0] - 1, s - 1, -1))  # new slots, lowest taken first
