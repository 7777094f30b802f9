"""Numba kernels that build haplotypes by walking one haplotype's variants over a reference span.

The walk reproduces ``bcftools consensus`` (1.16) rule for rule:

* records are applied in file order; a haplotype carrying REF (0) or a missing allele (-1)
  leaves the reference untouched (a miss is counted);
* a record starting before the span is ignored; a REF running past the span's end is clipped to
  it, and an ALT longer than the clipped REF is truncated to the same length;
* a record starting at or inside the REF span of the last applied record is skipped (counted),
  except an indel (htslib's sense) whose first base equals its REF's, starting exactly on the last
  REF base of a preceding record that was not an insertion; it keeps the base already written
  there and adds the rest of its ALT;
* a symbolic ``<DEL>`` reaches the kernels as an ordinary deletion (REF span ``[POS - 1, END)``,
  ALT = the anchor base; see :mod:`prep.variants`), so it follows the rules above; every other
  symbolic allele (``<INS>``, ``<DUP>``, ``*``, breakends, ...) is skipped and counted.

The kernels take their arrays as two typed bundles (NamedTuples of arrays, which numba passes
as one struct): :class:`VariantArrays`, a block's records
(:meth:`prep.variants.VariantBlock.arrays`), and :class:`Spans`, the reference block and the
span and records each region walks. Every kernel writes into caller-allocated ``out`` arrays.
Positions inside a walk are relative to the start of the ``ref`` span.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

__all__ = [
    "VariantArrays",
    "Spans",
    "N_COUNTS",
    "COUNT_APPLIED",
    "COUNT_OVERLAP",
    "COUNT_MISSING",
    "COUNT_SYMBOLIC",
    "COUNT_NOT_SNP",
    "walk_haplotype",
    "fixed_windows",
    "ragged_lengths",
    "ragged_fill",
]

COUNT_APPLIED = 0
COUNT_OVERLAP = 1
COUNT_MISSING = 2
COUNT_SYMBOLIC = 3
COUNT_NOT_SNP = 4
N_COUNTS = 5

_SYMBOLIC = 1
_TRIM = 2
_REF_LOWER = 4
_N = 4


class VariantArrays(NamedTuple):
    """A block's records as the kernels read them (see :class:`prep.variants.VariantBlock`).

    Coordinates are 0-based reference positions.
    """

    pos: np.ndarray
    """int64 (n_rec,): start of each record's REF."""
    ref_len: np.ndarray
    """int64 (n_rec,): reference bases the record spans (len(REF), or END - POS + 1)."""
    first_allele: np.ndarray
    """int64 (n_rec,): row of the record's ALT 1 in the allele table."""
    allele_offsets: np.ndarray
    """int64 (n_alleles + 1,): ALT ``j`` is ``allele_codes[allele_offsets[j]:
    allele_offsets[j + 1]]``."""
    allele_codes: np.ndarray
    """uint8 (allele_offsets[-1],): ALT alleles as codes 0..4."""
    allele_flags: np.ndarray
    """uint8 (n_alleles,): symbolic (1), trim-first-base (2), REF-first-lower (4) bits (bit 8,
    symbolic ``<DEL>``, is not read here)."""
    hap_allele: np.ndarray
    """int16 (n_hap, n_rec): allele index of each haplotype per record (0 REF, -1 missing)."""


class Spans(NamedTuple):
    """The reference block and what each region walks of it (one batch of a kernel call)."""

    ref: np.ndarray
    """uint8 (n_block,): reference codes of ``[start, start + n_block)`` (N beyond contig ends)."""
    lower: np.ndarray
    """uint8 (n_block,): 1 where the FASTA's base is lower case (soft-masked)."""
    start: int
    """0-based reference position of ``ref[0]``."""
    lo: np.ndarray
    """int64 (n_regions,): first index into ``ref`` of each region's span."""
    hi: np.ndarray
    """int64 (n_regions,): end (exclusive) of each region's span in ``ref``."""
    rec_lo: np.ndarray
    """int64 (n_regions,): first record each region walks."""
    rec_hi: np.ndarray
    """int64 (n_regions,): end (exclusive) of the records each region walks."""


@njit(cache=True, nogil=True, inline="always")
def _emit(src, s, e, out, k, out_lo):
    """Place ``src[s:e]`` at haplotype indexes ``k .. k + e - s``; keep what falls in the window.

    The window is haplotype indexes ``[out_lo, out_lo + len(out))``. Returns the next index.
    """
    n = e - s
    lo = max(k, out_lo)
    hi = min(k + n, out_lo + out.shape[0])
    if hi > lo:
        # An explicit loop over two views: vectorised by LLVM, several times faster than
        # numba's slice assignment.
        dst = out[lo - out_lo : hi - out_lo]
        part = src[s + lo - k : s + hi - k]
        for i in range(dst.shape[0]):
            dst[i] = part[i]
    return k + n


@njit(cache=True, nogil=True)
def walk_haplotype(
    ref,
    ref_lower,
    ref_start,
    variants,
    hap,
    rec_lo,
    rec_hi,
    snps_only,
    tss,
    out,
    out_lo,
    stop_at,
    counts,
):
    """Build one haplotype of the span ``ref`` (reference ``[ref_start, ref_start + len(ref))``).

    Parameters
    ----------
    ref : uint8 (n_ref,)
        Reference codes of the span.
    ref_lower : uint8 (n_ref,)
        1 where the FASTA has the base in lower case (soft-masked). bcftools' output depends
        on case in one place: an insertion joined to a preceding variant keeps that variant's
        last base only when REF's first letter has the case bcftools gave that base.
    ref_start : int
        0-based reference position of ``ref[0]``.
    variants : VariantArrays
        The block's records.
    hap : int
        The haplotype walked: its alleles are ``variants.hap_allele[hap]``.
    rec_lo, rec_hi : int
        Records ``rec_lo .. rec_hi - 1`` are considered.
    snps_only : bool
        Apply only alleles as long as their REF (SNPs, MNPs); others are counted.
    tss : int
        0-based reference position whose haplotype index is returned (-1: none).
    out : uint8 (n_out,)
        Receives haplotype indexes ``[out_lo, out_lo + n_out)``; may be empty.
    stop_at : int
        Stop once the haplotype reaches this index and ``tss`` is placed (saves work in
        fixed windows); pass a huge value to build the whole span.
    counts : int32 (N_COUNTS,)
        Incremented: applied, overlap-skipped, missing, symbolic, not-SNP (snps_only).

    Returns
    -------
    (int, int)
        Haplotype length built (the full length unless stopped early) and the haplotype index of
        ``tss``: where reference base ``tss`` lands, or for a deleted ``tss`` the index of the
        first base after the deletion; -1 if ``tss`` is outside the span.
    """
    pos, ref_len = variants.pos, variants.ref_len
    first_allele, allele_flags = variants.first_allele, variants.allele_flags
    allele_offsets, allele_codes = variants.allele_offsets, variants.allele_codes
    alleles = variants.hap_allele[hap]
    n_ref = ref.shape[0]
    tss_rel = tss - ref_start
    tss_hap = -1
    placed = tss < 0  # no TSS to place: stopping early needs only the length
    k = 0  # haplotype index of the next base to place
    cursor = 0  # next reference index not yet placed or replaced
    frz = -1  # last reference index covered by the last applied record
    prev_insert = False
    last_lower = False  # case bcftools gives the last base placed
    for i in range(rec_lo, rec_hi):
        if (placed or tss_hap >= 0) and k >= stop_at:
            return k, tss_hap
        a = alleles[i]
        if a == 0:
            continue
        if a < 0:
            counts[COUNT_MISSING] += 1
            continue
        p = pos[i] - ref_start
        if p < 0:
            continue
        if p >= n_ref:
            break
        j = first_allele[i] + a - 1
        flags = allele_flags[j]
        if flags & _SYMBOLIC:
            counts[COUNT_SYMBOLIC] += 1
            continue
        r = ref_len[i]
        a0 = allele_offsets[j]
        alen = allele_offsets[j + 1] - a0
        if snps_only and alen != r:
            counts[COUNT_NOT_SNP] += 1
            continue
        joined = False
        if p <= frz:
            if p < frz or (flags & _TRIM) == 0 or prev_insert:
                counts[COUNT_OVERLAP] += 1
                continue
            joined = True
        if r > n_ref - p:
            r = n_ref - p
            if alen > r:
                alen = r
        if cursor < p:
            if tss_hap < 0 and cursor <= tss_rel < p:
                tss_hap = k + tss_rel - cursor
            k = _emit(ref, cursor, p, out, k, out_lo)
            last_lower = ref_lower[p - 1] != 0
        if joined:
            # ALT's first base is the base the previous record already wrote here; an insertion
            # rewrites it with its own first base when the cases differ (bcftools' ibeg loop).
            slot0 = k - 1
            if alen > r and last_lower != ((flags & _REF_LOWER) != 0):
                k = _emit(allele_codes, a0, a0 + alen, out, k - 1, out_lo)
            else:
                k = _emit(allele_codes, a0 + 1, a0 + alen, out, k, out_lo)
        else:
            slot0 = k
            k = _emit(allele_codes, a0, a0 + alen, out, k, out_lo)
            last_lower = ref_lower[p] != 0
        if tss_hap < 0 and p <= tss_rel < p + r:
            off = tss_rel - p
            tss_hap = slot0 + off if off < alen else slot0 + alen
        cursor = p + r
        frz = p + r - 1
        prev_insert = alen > r
        counts[COUNT_APPLIED] += 1
    if cursor < n_ref and not ((placed or tss_hap >= 0) and k >= stop_at):
        if tss_hap < 0 and cursor <= tss_rel < n_ref:
            tss_hap = k + tss_rel - cursor
        k = _emit(ref, cursor, n_ref, out, k, out_lo)
    return k, tss_hap


@njit(cache=True, nogil=True)
def _reverse_complement_inplace(x):
    """Reverse-complement codes in place: 3 - code for A, C, G, T; N (4) stays (the rule of
    :data:`prep.encoding.COMPLEMENT`, written as arithmetic so the kernel needs no table)."""
    n = x.shape[0]
    for i in range((n + 1) // 2):
        a = x[i]
        b = x[n - 1 - i]
        x[i] = 3 - b if b < 4 else b
        x[n - 1 - i] = 3 - a if a < 4 else a


@njit(parallel=True, cache=True, nogil=True)
def fixed_windows(spans, variants, tss, minus, snps_only, rows, out, counts):
    """Fixed-length windows centred on each region's TSS, for every haplotype.

    Parameters
    ----------
    spans : Spans
        The reference block; per region the span walked (wide enough to fill the window
        whatever the haplotype's indels) and its records.
    variants : VariantArrays
        The block's records, ``hap_allele`` of shape (n_hap, n_rec).
    tss : int64 (n_regions,)
        0-based reference TSS.
    minus : bool (n_regions,)
        Reverse-complement the window (minus-strand genes).
    snps_only : bool
        Apply only alleles as long as their REF.
    rows : int64 (n_regions,)
        Region ``g`` is written to ``out[rows[g]]`` and counted in ``counts[rows[g]]``.
    out : uint8 (n_out_rows, n_hap, L)
        Receives the windows; the TSS's haplotype base sits at index ``L // 2`` before any
        reverse complement (``L - 1 - L // 2`` after it).
    counts : int32 (n_out_rows, n_hap, N_COUNTS)
    """
    n_regions = rows.shape[0]
    n_hap = out.shape[1]
    length = out.shape[2]
    half = length // 2
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        ref = spans.ref[spans.lo[g] : spans.hi[g]]
        lower = spans.lower[spans.lo[g] : spans.hi[g]]
        start = spans.start + spans.lo[g]
        c = counts[rows[g], h]
        o = out[rows[g], h]
        _, tss_hap = walk_haplotype(
            ref, lower, start, variants, h, spans.rec_lo[g], spans.rec_hi[g], snps_only, tss[g],
            o[:0], 0, 0, c,
        )
        c[:] = 0
        win_lo = tss_hap - half
        n_built, _ = walk_haplotype(
            ref, lower, start, variants, h, spans.rec_lo[g], spans.rec_hi[g], snps_only, tss[g],
            o, win_lo, win_lo + length, c,
        )
        # the span is wide enough to fill the window; N only guards against a short haplotype
        if win_lo < 0:
            o[: min(-win_lo, length)] = _N
        if n_built < win_lo + length:
            o[max(n_built - win_lo, 0) :] = _N
        if minus[g]:
            _reverse_complement_inplace(o)


@njit(parallel=True, cache=True, nogil=True)
def ragged_lengths(spans, variants, snps_only, lengths, counts):
    """Length of every haplotype of every interval (first pass of ragged mode).

    ``spans``: the intervals themselves (span = interval); ``lengths``: int64 (n_regions,
    n_hap), ``counts``: int32 (n_regions, n_hap, N_COUNTS); other parameters as in
    :func:`fixed_windows`.
    """
    n_regions = lengths.shape[0]
    n_hap = lengths.shape[1]
    empty = np.empty(0, dtype=np.uint8)
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        n, _ = walk_haplotype(
            spans.ref[spans.lo[g] : spans.hi[g]], spans.lower[spans.lo[g] : spans.hi[g]],
            spans.start + spans.lo[g], variants, h, spans.rec_lo[g], spans.rec_hi[g],
            snps_only, -1, empty, 0, np.iinfo(np.int64).max, counts[g, h],
        )
        lengths[g, h] = n


@njit(parallel=True, cache=True, nogil=True)
def ragged_fill(spans, variants, minus, snps_only, rows, offsets, data):
    """Write every haplotype of every interval into ``data`` (second pass of ragged mode).

    ``rows`` : int64 (n_regions,), ``offsets`` : int64 (n_out_rows * n_hap + 1,): haplotype
    ``h`` of region ``g`` goes to ``data[offsets[i] : offsets[i + 1]]`` with
    ``i = rows[g] * n_hap + h``; ``minus`` : bool (n_regions,) reverse-complements a region.
    """
    n_regions = spans.lo.shape[0]
    n_hap = variants.hap_allele.shape[0]
    scratch = np.zeros(N_COUNTS, dtype=np.int32)
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        i = rows[g] * n_hap + h
        o = data[offsets[i] : offsets[i + 1]]
        walk_haplotype(
            spans.ref[spans.lo[g] : spans.hi[g]], spans.lower[spans.lo[g] : spans.hi[g]],
            spans.start + spans.lo[g], variants, h, spans.rec_lo[g], spans.rec_hi[g],
            snps_only, -1, o, 0, np.iinfo(np.int64).max, scratch.copy(),
        )
        if minus[g]:
            _reverse_complement_inplace(o)
