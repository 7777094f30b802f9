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
* symbolic alleles are skipped and counted (bcftools applies ``<DEL>``; see the docs).

Arrays follow :class:`prep.variants.VariantBlock`. Every kernel writes into caller-allocated
``out`` arrays. Positions inside a walk are relative to the start of the ``ref`` span.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
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
    pos,
    ref_len,
    first_allele,
    allele_offsets,
    allele_codes,
    allele_flags,
    alleles,
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
    pos, ref_len, first_allele, allele_offsets, allele_codes, allele_flags
        The block's variant arrays (see :class:`prep.variants.VariantBlock`).
    alleles : int16 (n_rec,)
        This haplotype's allele index per record.
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
    n = x.shape[0]
    for i in range((n + 1) // 2):
        a = x[i]
        b = x[n - 1 - i]
        x[i] = 3 - b if b < 4 else b
        x[n - 1 - i] = 3 - a if a < 4 else a


@njit(parallel=True, cache=True, nogil=True)
def fixed_windows(
    ref_block,
    lower_block,
    block_start,
    span_lo,
    span_hi,
    rec_lo,
    rec_hi,
    tss,
    minus,
    pos,
    ref_len,
    first_allele,
    allele_offsets,
    allele_codes,
    allele_flags,
    hap_allele,
    snps_only,
    rows,
    out,
    counts,
):
    """Fixed-length windows centred on each region's TSS, for every haplotype.

    Parameters
    ----------
    ref_block : uint8 (n_block,)
        Reference codes of ``[block_start, block_start + n_block)`` (N beyond contig ends).
    lower_block : uint8 (n_block,)
        1 where the FASTA's base is lower case.
    span_lo, span_hi : int64 (n_regions,)
        Per region, the reference span walked, as indexes into ``ref_block`` (half-open).
    rec_lo, rec_hi : int64 (n_regions,)
        Per region, the records walked.
    tss : int64 (n_regions,)
        0-based reference TSS.
    minus : bool (n_regions,)
        Reverse-complement the window (minus-strand genes).
    hap_allele : int16 (n_hap, n_rec)
    rows : int64 (n_regions,)
        Region ``g`` is written to ``out[rows[g]]`` and counted in ``counts[rows[g]]``.
    out : uint8 (n_out_rows, n_hap, L)
        Receives the windows; the TSS's haplotype base sits at index ``L // 2`` before any
        reverse complement (``L - 1 - L // 2`` after it).
    counts : int32 (n_regions, n_hap, N_COUNTS)
    """
    n_regions = rows.shape[0]
    n_hap = out.shape[1]
    length = out.shape[2]
    half = length // 2
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        ref = ref_block[span_lo[g] : span_hi[g]]
        lower = lower_block[span_lo[g] : span_hi[g]]
        start = block_start + span_lo[g]
        c = counts[rows[g], h]
        o = out[rows[g], h]
        _, tss_hap = walk_haplotype(
            ref, lower, start, pos, ref_len, first_allele, allele_offsets, allele_codes,
            allele_flags, hap_allele[h], rec_lo[g], rec_hi[g], snps_only, tss[g],
            o[:0], 0, 0, c,
        )
        c[:] = 0
        win_lo = tss_hap - half
        n_built, _ = walk_haplotype(
            ref, lower, start, pos, ref_len, first_allele, allele_offsets, allele_codes,
            allele_flags, hap_allele[h], rec_lo[g], rec_hi[g], snps_only, tss[g],
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
def ragged_lengths(
    ref_block,
    lower_block,
    block_start,
    span_lo,
    span_hi,
    rec_lo,
    rec_hi,
    pos,
    ref_len,
    first_allele,
    allele_offsets,
    allele_codes,
    allele_flags,
    hap_allele,
    snps_only,
    lengths,
    counts,
):
    """Length of every haplotype of every interval (first pass of ragged mode).

    ``lengths`` : int64 (n_regions, n_hap), ``counts`` : int32 (n_regions, n_hap, N_COUNTS);
    other parameters as in :func:`fixed_windows` (the span is the interval itself).
    """
    n_regions = lengths.shape[0]
    n_hap = lengths.shape[1]
    empty = np.empty(0, dtype=np.uint8)
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        n, _ = walk_haplotype(
            ref_block[span_lo[g] : span_hi[g]], lower_block[span_lo[g] : span_hi[g]],
            block_start + span_lo[g], pos, ref_len,
            first_allele, allele_offsets, allele_codes, allele_flags, hap_allele[h],
            rec_lo[g], rec_hi[g], snps_only, -1, empty, 0, np.iinfo(np.int64).max,
            counts[g, h],
        )
        lengths[g, h] = n


@njit(parallel=True, cache=True, nogil=True)
def ragged_fill(
    ref_block,
    lower_block,
    block_start,
    span_lo,
    span_hi,
    rec_lo,
    rec_hi,
    minus,
    pos,
    ref_len,
    first_allele,
    allele_offsets,
    allele_codes,
    allele_flags,
    hap_allele,
    snps_only,
    rows,
    offsets,
    data,
):
    """Write every haplotype of every interval into ``data`` (second pass of ragged mode).

    ``rows`` : int64 (n_regions,), ``offsets`` : int64 (n_out_rows * n_hap + 1,): haplotype
    ``h`` of region ``g`` goes to ``data[offsets[i] : offsets[i + 1]]`` with
    ``i = rows[g] * n_hap + h``.
    """
    n_regions = span_lo.shape[0]
    n_hap = hap_allele.shape[0]
    scratch = np.zeros(N_COUNTS, dtype=np.int32)
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        i = rows[g] * n_hap + h
        o = data[offsets[i] : offsets[i + 1]]
        walk_haplotype(
            ref_block[span_lo[g] : span_hi[g]], lower_block[span_lo[g] : span_hi[g]],
            block_start + span_lo[g], pos, ref_len,
            first_allele, allele_offsets, allele_codes, allele_flags, hap_allele[h],
            rec_lo[g], rec_hi[g], snps_only, -1, o, 0, np.iinfo(np.int64).max,
            scratch.copy(),
        )
        if minus[g]:
            _reverse_complement_inplace(o)
