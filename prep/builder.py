"""Personal haplotypes around TSSs or inside intervals: the hapflow engine.

:class:`HaplotypeBuilder` opens a reference FASTA and a phased VCF once, reads the VCF once per
batch of nearby regions, and runs the numba kernels of :mod:`prep.kernels` in parallel over
(region, haplotype) pairs (threads: ``NUMBA_NUM_THREADS``).

Two modes:

``ragged``
    The haplotype of a 0-based half-open interval ``[start, end)`` exactly as
    ``samtools faidx REF CHR:start+1-end | bcftools consensus -s SAMPLE -H 1pIu VCF`` builds it
    (``-H 2pIu`` for the second haplotype). Intervals past the contig end are clipped, as
    samtools does.
``fixed``
    ``L`` bases of the haplotype centred on the haplotype position of the reference TSS: the
    base where reference position ``tss`` lands sits at index ``L // 2``. Deletions pull in more
    personal flanking sequence, insertions push it out; positions past contig ends are N.
    A TSS inside a deletion is placed on the first base after the deleted stretch; a TSS that is
    the anchor base of an insertion stays on the anchor (the inserted bases follow it); an
    insertion whose anchor is the base before the TSS lies entirely upstream of it. With
    ``reverse_minus`` windows of minus-strand genes are reverse-complemented (the TSS base then
    sits at ``L - 1 - L // 2``). With SNPs only this is the reference window with alleles
    substituted.

Haplotype 0 of a sample is the first allele of its GT (``-H 1``), haplotype 1 the second.

Reading the VCF per call: the records of the last span read stay parsed (genotypes resolved,
REFs checked), and a later call whose regions start inside that span reads only what lies
beyond it (:class:`prep.variant_cache.BlockCache`), so batches of genes advancing along a
chromosome read each record once; the reference bases are kept the same way
(:meth:`prep.reference.Reference.fetch_with_case`). :meth:`HaplotypeBuilder.preload` reads a
span up front instead; :meth:`HaplotypeBuilder.clear_cache` forgets both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numba
import numpy as np

from prep import kernels
from prep.edits import GeneEdits, gene_edits
from prep.reference import Reference
from prep.variant_cache import BlockCache
from prep.variants import SYMBOLIC, VariantBlock, VariantReader

__all__ = [
    "HaplotypeBuilder",
    "RegionEdits",
    "FixedHaplotypes",
    "RaggedHaplotypes",
    "COUNT_NAMES",
]

COUNT_NAMES = ("applied", "overlap_skipped", "missing", "symbolic_skipped", "not_snp_skipped")
"""Per-haplotype counters, in kernel order (see :mod:`prep.kernels`)."""

_GROUP_GAP = 1_000_000  # regions further apart than this are read from the VCF separately
_STREAM_BYTES = 8 << 20
"""Haplotypes into an output at least this large are built in a per-thread scratch window and
streamed out with non-temporal stores (:func:`prep.kernels.fixed_windows`, ``ragged_fill``)."""


def _counts_dict(counts: np.ndarray, n_samples: int) -> dict[str, np.ndarray]:
    """(n_regions, n_hap, N_COUNTS) int32 -> {name: (n_regions, n_samples, 2)}."""
    n_regions = counts.shape[0]
    c = counts.reshape(n_regions, n_samples, 2, kernels.N_COUNTS)
    return {name: c[..., i].copy() for i, name in enumerate(COUNT_NAMES)}


@dataclass
class FixedHaplotypes:
    """Fixed-length haplotype windows.

    Attributes
    ----------
    seqs : np.ndarray, shape (n_regions, n_samples, 2, L), uint8
        Codes A, C, G, T, N = 0..4.
    tss_index : int
        Index of the TSS base in each window (``L // 2``; before any reverse complement).
    counts : dict of str -> np.ndarray (n_regions, n_samples, 2), int32
        Per haplotype: variants applied, skipped as overlapping, missing genotypes, symbolic
        alleles skipped, non-SNPs skipped (snps_only), over the reference span walked.
    n_variants : np.ndarray, shape (n_regions,), int64
        VCF records in the span walked.
    n_ref_mismatch : np.ndarray, shape (n_regions,), int64
        Records skipped because REF disagreed with the FASTA (``ref_mismatch="skip"``).
    samples : list of str
    n_unphased : np.ndarray, shape (n_regions,), int64
        Unphased heterozygous genotypes (sample x record) in the span walked, resolved by the
        builder's unphased policy.
    """

    seqs: np.ndarray
    tss_index: int
    counts: dict
    n_variants: np.ndarray
    n_ref_mismatch: np.ndarray
    samples: list
    n_unphased: np.ndarray | None = None


@dataclass
class RaggedHaplotypes:
    """Variable-length haplotypes of intervals: a flat array plus offsets.

    Attributes
    ----------
    data : np.ndarray, shape (offsets[-1],), uint8
        All haplotypes back to back, codes 0..4.
    offsets : np.ndarray, shape (n_regions * n_samples * 2 + 1,), int64
        Haplotype ``(g, s, h)`` is ``data[offsets[i]:offsets[i + 1]]`` with
        ``i = (g * n_samples + s) * 2 + h``.
    counts, n_variants, n_ref_mismatch, samples, n_unphased
        As in :class:`FixedHaplotypes` (the span is the interval).
    """

    data: np.ndarray
    offsets: np.ndarray
    counts: dict
    n_variants: np.ndarray
    n_ref_mismatch: np.ndarray
    samples: list
    n_unphased: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    def get(self, region: int, sample: int, hap: int) -> np.ndarray:
        """Codes of one haplotype, shape (length,), uint8 (a view)."""
        i = (region * self.n_samples + sample) * 2 + hap
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """Haplotype lengths, shape (n_regions, n_samples, 2), int64."""
        return np.diff(self.offsets).reshape(-1, self.n_samples, 2)


@dataclass
class RegionEdits:
    """One region's haplotypes as edits against its reference span (:meth:`HaplotypeBuilder.edits`).

    Attributes
    ----------
    span_start : int
        0-based reference position of ``ref[0]``.
    ref : np.ndarray, shape (n_ref,), uint8
        The reference span, + strand codes (N beyond contig ends).
    edits : prep.edits.GeneEdits
        Haplotype ``2 * sample + h`` is row ``2 * sample + h`` of ``edits.bits``.
    counts : dict of str to np.ndarray, each shape (n_samples, 2)
        As :attr:`FixedHaplotypes.counts`, for this region.
    n_variants, n_ref_mismatch : int
        Records walked; records skipped for a REF that disagrees with the FASTA.
    """

    span_start: int
    ref: np.ndarray
    edits: GeneEdits
    counts: dict
    n_variants: int
    n_ref_mismatch: int


def _groups(centres: np.ndarray, gap: int) -> list[np.ndarray]:
    """Split region indexes into groups of nearby regions (sorted by ``centres``)."""
    order = np.argsort(centres, kind="stable")
    if order.size == 0:
        return []
    breaks = np.nonzero(np.diff(centres[order]) > gap)[0] + 1
    return np.split(order, breaks)


class HaplotypeBuilder:
    """Builds personal haplotypes from a reference FASTA and a phased VCF.

    Parameters
    ----------
    reference : str or Path
        FASTA, plain or bgzip, indexed (``samtools faidx``).
    vcf : str, Path, list of them, or prep.vcf_files.VcfSet
        VCF/BCF, bgzipped and indexed: one file, a list (each contig from the file whose index
        lists it) or a pattern with ``{chrom}`` (one file per chromosome, as 1000 Genomes ships
        them; ``chr22`` and ``22`` are both tried). This is ``[haplotypes] vcf`` as configured.
    samples : list of str, optional
        Samples to build, in this order; ``None``: all samples of the VCF. Only these are
        parsed: memory scales with (records read x selected samples).
    snps_only : bool
        Apply only alleles as long as their REF (SNPs and MNPs): the paper's sequences.
    unphased : {"error", "reference", "as-phased", "random"}
        Policy for unphased heterozygous genotypes (see :class:`prep.variants.VariantReader`).
    ref_mismatch : {"error", "skip"}
        A REF that disagrees with the FASTA stops the run naming the site, or is skipped and
        counted.
    seed : int
        Seed of the ``random`` unphased policy.
    """

    def __init__(
        self,
        reference: str | os.PathLike,
        vcf,
        samples: list[str] | None = None,
        *,
        snps_only: bool = False,
        unphased: str = "error",
        ref_mismatch: str = "error",
        seed: int = 0,
    ):
        if ref_mismatch not in ("error", "skip"):
            raise ValueError(f"ref_mismatch must be 'error' or 'skip', not {ref_mismatch!r}")
        self.reference = reference if isinstance(reference, Reference) else Reference(reference)
        self.variants = VariantReader(vcf, samples, unphased=unphased, seed=seed)
        self.snps_only = bool(snps_only)
        self.ref_mismatch = ref_mismatch
        self._cache = BlockCache(self.variants, self.reference, ref_mismatch)

    @property
    def samples(self) -> list[str]:
        return self.variants.samples

    @property
    def n_haplotypes(self) -> int:
        return 2 * len(self.samples)

    # ------------------------------------------------------------------ fixed windows
    def fixed(
        self,
        chrom: str,
        tss: np.ndarray,
        length: int,
        minus: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> FixedHaplotypes:
        """Fixed-length windows centred on each TSS.

        Parameters
        ----------
        chrom : str
            Contig (aliases accepted).
        tss : np.ndarray, shape (n_regions,), int64
            0-based reference TSS positions.
        length : int
            Window length L.
        minus : np.ndarray, shape (n_regions,), bool, optional
            Regions to reverse-complement (minus-strand genes); default none.
        out : np.ndarray, shape (n_regions, n_samples, 2, L), uint8, optional
            Buffer to fill (reusing one across calls spares the allocation); ``seqs`` is a view.

        Returns
        -------
        FixedHaplotypes
        """
        tss = np.atleast_1d(np.asarray(tss, dtype=np.int64))
        if length <= 0:
            raise ValueError(f"window length must be positive, got {length}")
        self._check_positions(chrom, tss)
        minus = self._minus(minus, tss.shape[0])
        n_regions, n_hap = tss.shape[0], self.n_haplotypes
        shape = (n_regions, len(self.samples), 2, length)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
        out = out.reshape(n_regions, n_hap, length)
        counts = np.zeros((n_regions, n_hap, kernels.N_COUNTS), dtype=np.int32)
        n_var = np.zeros(n_regions, dtype=np.int64)
        n_bad = np.zeros(n_regions, dtype=np.int64)
        n_unphased = np.zeros(n_regions, dtype=np.int64)
        for idx in _groups(tss, _GROUP_GAP):
            self._fixed_group(chrom, tss[idx], length, minus[idx], idx, out, counts, n_var, n_bad,
                              n_unphased)
        return FixedHaplotypes(
            seqs=out.reshape(n_regions, len(self.samples), 2, length),
            tss_index=length // 2,
            counts=_counts_dict(counts, len(self.samples)),
            n_variants=n_var,
            n_ref_mismatch=n_bad,
            samples=list(self.samples),
            n_unphased=n_unphased,
        )

    def _fixed_group(self, chrom, tss, length, minus, idx, out, counts, n_var, n_bad,
                     n_unphased):
        block, span_lo, span_hi, rec_lo, rec_hi = self._fixed_block(chrom, tss, length)
        block_start = int(span_lo.min())
        ref_block, lower = self.reference.fetch_with_case(chrom, block_start, int(span_hi.max()))
        spans = kernels.Spans(ref_block, lower, block_start, span_lo - block_start,
                              span_hi - block_start, rec_lo, rec_hi)
        scratch = np.empty((0, 0), np.uint8)
        if out.nbytes >= _STREAM_BYTES:  # rows long enough for any haplotype of a span
            grow = np.zeros(block.n_records + 1, np.int64)
            np.cumsum(block.max_insertion(), out=grow[1:])
            width = int((span_hi - span_lo + grow[rec_hi] - grow[rec_lo]).max())
            scratch = np.empty((numba.get_num_threads(), width), np.uint8)
        kernels.fixed_windows(spans, block.arrays(), tss, minus, self.snps_only,
                              idx.astype(np.int64), out, counts, scratch)
        n_var[idx] = rec_hi - rec_lo
        n_bad[idx] = _count_in_ranges(block.ref_mismatch, rec_lo, rec_hi)
        n_unphased[idx] = _count_in_ranges(block.unphased, rec_lo, rec_hi)

    # ------------------------------------------------------------------ edits
    def edits(self, chrom: str, tss: np.ndarray, width: int) -> list[RegionEdits]:
        """Every haplotype around each TSS as edits against its reference span, without
        building a base (:mod:`prep.edits`).

        The span and records are those :meth:`fixed` walks for windows of ``width`` bases, so
        :func:`prep.edits.build_windows` (or :func:`prep.edits.fixed_windows_from_edits`)
        rebuilds :meth:`fixed`'s windows byte for byte, and any window up to ``width`` bases.

        Parameters
        ----------
        chrom : str
        tss : np.ndarray, shape (n_regions,), int64
            0-based reference TSS positions.
        width : int
            The widest window the edits must cover.

        Returns
        -------
        list of RegionEdits, one per region in the order of ``tss``.
        """
        tss = np.atleast_1d(np.asarray(tss, dtype=np.int64))
        self._check_positions(chrom, tss)
        out: list[RegionEdits | None] = [None] * tss.shape[0]
        for idx in _groups(tss, _GROUP_GAP):
            block, span_lo, span_hi, rec_lo, rec_hi = self._fixed_block(chrom, tss[idx], width)
            start = int(span_lo.min())
            ref_block, lower = self.reference.fetch_with_case(chrom, start, int(span_hi.max()))
            bad = _count_in_ranges(block.ref_mismatch, rec_lo, rec_hi)
            arrays = block.arrays()
            for k, g in enumerate(idx):
                lo, hi = int(span_lo[k]) - start, int(span_hi[k]) - start
                edits, counts = gene_edits(arrays, lower[lo:hi], int(span_lo[k]),
                                           int(rec_lo[k]), int(rec_hi[k]), self.snps_only)
                out[g] = RegionEdits(
                    span_start=int(span_lo[k]), ref=ref_block[lo:hi].copy(), edits=edits,
                    counts={k: c[0] for k, c in _counts_dict(counts[None], len(self.samples)).items()},
                    n_variants=int(rec_hi[k] - rec_lo[k]), n_ref_mismatch=int(bad[k]))
        return out

    def _fixed_block(self, chrom, tss, length):
        """The VCF block and, per region, the span and records fixed windows of ``length``
        walk: (block, span_lo, span_hi, rec_lo, rec_hi), int64 arrays of shape (n_regions,)."""
        half = length // 2
        margin = 4096
        while True:
            lo = int(tss.min()) - half - margin
            hi = int(tss.max()) + (length - half) + margin
            block, lo, hi = self._read(chrom, lo, hi)  # the span actually held, maybe wider
            span_lo, span_hi, rec_bound = _fixed_spans(block, tss, length)
            if span_lo.min() >= lo and rec_bound.max() <= hi:
                break
            margin *= 4  # indels reach further than the margin: read a wider block
        rec_lo = np.searchsorted(block.pos, span_lo, side="left")
        rec_hi = np.searchsorted(block.pos, rec_bound, side="left")
        return block, span_lo, span_hi, rec_lo, rec_hi

    # ------------------------------------------------------------------ ragged intervals
    def ragged(
        self,
        chrom: str,
        starts: np.ndarray,
        ends: np.ndarray,
        minus: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> RaggedHaplotypes:
        """Haplotypes of intervals, byte-exact with bcftools consensus.

        Parameters
        ----------
        chrom : str
        starts, ends : np.ndarray, shape (n_regions,), int64
            0-based half-open intervals; ends past the contig are clipped.
        minus : np.ndarray, shape (n_regions,), bool, optional
            Intervals to reverse-complement.
        out : np.ndarray, shape (n_bytes,), uint8, optional
            Buffer to fill: when it holds at least the bytes the haplotypes need, ``data`` is a
            view of its start (reusing one buffer across calls spares the allocation and the
            fresh pages, as ``fixed``'s ``out`` does); when it is too small a new array is
            allocated.
        """
        starts = np.atleast_1d(np.asarray(starts, dtype=np.int64))
        ends = np.atleast_1d(np.asarray(ends, dtype=np.int64))
        if starts.shape != ends.shape:
            raise ValueError("starts and ends must have the same length")
        if (starts < 0).any() or (ends < starts).any():
            i = int(np.nonzero((starts < 0) | (ends < starts))[0][0])
            raise ValueError(
                f"interval {i} ({chrom}:{starts[i]}-{ends[i]}, 0-based half-open) is invalid: "
                "start must be >= 0 and end >= start"
            )
        contig_len = self.reference.length(chrom)
        ends = np.minimum(ends, contig_len)
        starts = np.minimum(starts, ends)
        minus = self._minus(minus, starts.shape[0])
        n_regions, n_hap = starts.shape[0], self.n_haplotypes
        lengths = np.zeros((n_regions, n_hap), dtype=np.int64)
        counts = np.zeros((n_regions, n_hap, kernels.N_COUNTS), dtype=np.int32)
        n_var = np.zeros(n_regions, dtype=np.int64)
        n_bad = np.zeros(n_regions, dtype=np.int64)
        n_unphased = np.zeros(n_regions, dtype=np.int64)
        prepared = []
        for idx in _groups(starts, _GROUP_GAP):
            lo, hi = int(starts[idx].min()), int(ends[idx].max())
            block, _, _ = self._read(chrom, lo, hi)
            ref_block, lower = self.reference.fetch_with_case(chrom, lo, hi)
            rec_lo = np.searchsorted(block.pos, starts[idx], side="left")
            rec_hi = np.searchsorted(block.pos, ends[idx], side="left")
            spans = kernels.Spans(ref_block, lower, lo, starts[idx] - lo, ends[idx] - lo,
                                  rec_lo, rec_hi)
            sub_len = np.zeros((len(idx), n_hap), dtype=np.int64)
            sub_counts = np.zeros((len(idx), n_hap, kernels.N_COUNTS), dtype=np.int32)
            kernels.ragged_lengths(spans, block.arrays(), self.snps_only, sub_len, sub_counts)
            lengths[idx] = sub_len
            counts[idx] = sub_counts
            n_var[idx] = rec_hi - rec_lo
            n_bad[idx] = _count_in_ranges(block.ref_mismatch, rec_lo, rec_hi)
            n_unphased[idx] = _count_in_ranges(block.unphased, rec_lo, rec_hi)
            prepared.append((idx, spans, block))
        offsets = np.zeros(n_regions * n_hap + 1, dtype=np.int64)
        np.cumsum(lengths.reshape(-1), out=offsets[1:])
        size = int(offsets[-1])
        if out is not None and (out.dtype != np.uint8 or out.ndim != 1
                                or not out.flags.c_contiguous):
            raise ValueError("out must be a 1-D C-contiguous uint8 array")
        data = out[:size] if out is not None and out.shape[0] >= size else np.empty(size, np.uint8)
        stream = size >= _STREAM_BYTES
        longest = int(lengths.max()) if stream else 0
        scratch = np.empty((numba.get_num_threads(), longest) if stream else (0, 0), np.uint8)
        for idx, spans, block in prepared:
            kernels.ragged_fill(spans, block.arrays(), minus[idx], self.snps_only,
                                idx.astype(np.int64), offsets, data, scratch)
        return RaggedHaplotypes(
            data=data,
            offsets=offsets,
            counts=_counts_dict(counts, len(self.samples)),
            n_variants=n_var,
            n_ref_mismatch=n_bad,
            samples=list(self.samples),
            n_unphased=n_unphased,
        )

    # ------------------------------------------------------------------ VCF access
    def preload(self, chrom: str, start: int = 0, end: int | None = None) -> VariantBlock:
        """Read ``chrom:[start, end)`` (0-based; default the whole contig) from the VCF once.

        Later :meth:`fixed` / :meth:`ragged` calls whose regions lie inside it reuse the arrays
        instead of reading the VCF again (as tools that index a VCF up front do). Memory:
        2 bytes per selected haplotype and record (unselected samples are never parsed); a
        new preload replaces the previous one.

        Without a preload, calls still keep the records of the last span read and reuse them
        when the next batch of genes overlaps it (:class:`prep.variant_cache.BlockCache`).
        """
        if end is None:
            end = self.reference.length(chrom)
        return self._cache.preload(chrom, start, end)

    def clear_cache(self) -> None:
        """Forget the preloaded span, the records kept from the last call and the reference
        bases kept from the last read."""
        self._cache.clear()
        self.reference.clear_cache()

    def _read(self, chrom: str, lo: int, hi: int) -> tuple[VariantBlock, int, int]:
        """(block, clo, chi): every record overlapping ``[clo, chi)``, which holds ``[lo, hi)``."""
        return self._cache.get(chrom, lo, hi)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _minus(minus, n: int) -> np.ndarray:
        if minus is None:
            return np.zeros(n, dtype=np.bool_)
        minus = np.asarray(minus, dtype=np.bool_)
        if minus.shape != (n,):
            raise ValueError(f"minus must have shape ({n},), got {minus.shape}")
        return minus

    def _check_positions(self, chrom: str, tss: np.ndarray) -> None:
        n = self.reference.length(chrom)
        bad = (tss < 0) | (tss >= n)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise ValueError(
                f"TSS {chrom}:{int(tss[i]) + 1} (1-based) lies outside the contig, which has "
                f"{n} bases in {self.reference.path}; check the genome build of the TSS table"
            )

    def close(self) -> None:
        self.variants.close()
        self.reference.close()


def _count_in_ranges(values: np.ndarray | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of ``values`` (per record: a mask or counts; None: all zero) over each record range
    ``[lo, hi)``."""
    if values is None:
        return np.zeros(np.shape(lo), dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
    return cum[hi] - cum[lo]


def _fixed_spans(block: VariantBlock, tss: np.ndarray, length: int):
    """Reference spans to walk so each window is filled, whatever the haplotype's indels
    (:func:`prep.kernels.fixed_spans`).

    Returns ``(span_lo, span_hi, rec_bound)``, int64 arrays of shape (n_regions,): the span
    ``[span_lo, span_hi)`` (0-based reference) and the position below which records are walked
    (records start in ``[span_lo, rec_bound)``; ``span_hi`` also covers their REF ends). A
    record whose ALT alleles are all skipped symbolic ones (``<DUP>``, ``<CN0>``... with their
    END) is never applied, so only its first base counts.
    """
    n = block.n_records
    ends = block.pos + block.ref_len
    if n:
        skipped = np.logical_and.reduceat((block.allele_flags & SYMBOLIC) != 0,
                                          block.first_allele)
        ends = np.where(skipped, block.pos + 1, ends)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(block.max_deletion(), out=cum[1:])
    span_lo, span_hi, rec_end = (np.empty(tss.shape[0], np.int64) for _ in range(3))
    kernels.fixed_spans(block.pos, ends, cum, tss, length, span_lo, span_hi, rec_end)
    return span_lo, span_hi, rec_end
