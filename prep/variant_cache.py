"""Parsed VCF records kept between :class:`prep.builder.HaplotypeBuilder` calls.

Genes are built in batches along each chromosome (:mod:`prep.export`, :mod:`prep.shard_build`,
predictions), and neighbouring batches read overlapping spans of the VCF. :class:`BlockCache`
keeps the records of the last span read (parsed, genotypes resolved, REFs checked) and answers a
later request from it:

* a span inside the cached one is served as is;
* a span that starts inside it and ends beyond it (genes advancing along the chromosome) reads
  only the records starting at or after the cached end, appends them, and drops the leading
  records that no longer reach the new span's start, so the cache stays the size of one
  request;
* anything else (another contig or file, a span behind the cached one or past its end) is a
  fresh read that replaces the cache.

A block served for ``[lo, hi)`` holds every record overlapping ``[lo, hi)`` (possibly more,
in file order); every record is read, parsed and checked against the FASTA once per stretch of
advancing requests. A preloaded span (:meth:`BlockCache.preload`) is kept apart and never
replaced by the rolling cache.
"""

from __future__ import annotations

import numpy as np

from prep.reference import Reference
from prep.variants import VariantBlock, VariantReader

__all__ = ["BlockCache"]


class BlockCache:
    """The last VCF span read, and an optional preloaded span.

    Parameters
    ----------
    reader : VariantReader
    reference : Reference
        REFs are checked against it when records are first read.
    ref_mismatch : {"error", "skip"}
    """

    def __init__(self, reader: VariantReader, reference: Reference, ref_mismatch: str):
        self.reader = reader
        self.reference = reference
        self.ref_mismatch = ref_mismatch
        self._preloaded: tuple | None = None  # (file, vcf contig), start, end, block
        self._recent: tuple | None = None

    def _read(self, chrom: str, start: int, end: int) -> VariantBlock:
        return self.reader.read(chrom, start, end, self.reference, self.ref_mismatch)

    def preload(self, chrom: str, start: int, end: int) -> VariantBlock:
        """Read ``chrom:[start, end)`` (0-based half-open) and keep it until the next preload
        or :meth:`clear`."""
        self._preloaded = None  # release the previous span before reading the next
        block = self._read(chrom, start, end)
        self._preloaded = (self.reader.locate(chrom), start, end, block)
        return block

    def clear(self) -> None:
        """Forget every cached span (the next request reads the VCF again)."""
        self._preloaded = self._recent = None

    def get(self, chrom: str, lo: int, hi: int) -> tuple[VariantBlock, int, int]:
        """``(block, clo, chi)``: a block holding every record overlapping ``[clo, chi)``, a
        span that contains ``[lo, hi)`` (0-based half-open)."""
        where = self.reader.locate(chrom)
        for cached in (self._preloaded, self._recent):
            if cached and cached[0] == where and cached[1] <= lo and hi <= cached[2]:
                return cached[3], cached[1], cached[2]
        recent = self._recent
        if recent and recent[0] == where and recent[1] <= lo < recent[2] < hi:
            _, start, end, block = recent
            extra = self._read(chrom, end, hi)
            first_new = int(np.searchsorted(extra.pos, end, side="left"))  # not yet cached
            # leading records that end at or before lo overlap nothing asked for any more
            reach = np.maximum.accumulate(block.pos + block.ref_len) if block.n_records \
                else np.zeros(0, np.int64)
            keep_from = int(np.searchsorted(reach, lo, side="right"))
            block = block.joined(keep_from, _tail(extra, first_new))
            start = start if keep_from == 0 else lo
        else:
            self._recent = None  # release the previous span before reading the next
            block, start = self._read(chrom, lo, hi), lo
        self._recent = (where, start, hi, block)
        return block, start, hi


def _tail(block: VariantBlock, first: int) -> VariantBlock:
    """The records of ``block`` from ``first`` on (the block itself when ``first`` is 0)."""
    if first == 0:
        return block
    none = VariantBlock(
        chrom=block.chrom, pos=block.pos[:0], ref_len=block.ref_len[:0],
        first_allele=block.first_allele[:0], allele_offsets=np.zeros(1, np.int64),
        allele_codes=block.allele_codes[:0], allele_flags=block.allele_flags[:0],
        hap_allele=block.hap_allele[:, :0], text=block.text[:0], text_off=np.zeros(1, np.int64),
        ref_chars=block.ref_chars[:0], ref_mismatch=block.ref_mismatch[:0])
    return block.joined(first, none)
