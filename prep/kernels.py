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
Positions inside a walk are relative to the start of the ``ref`` span. For outputs far larger
than the caches, :func:`fixed_windows` and :func:`ragged_fill` build each haplotype in a
per-thread scratch row (in the caches) and stream it out with non-temporal stores, which spare
reading every destination line in before writing it; :func:`fixed_spans` plans the spans fixed
windows walk.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import get_thread_id, njit, prange, types
from numba.extending import intrinsic

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
    "fixed_spans",
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
_NO_STOP = np.iinfo(np.int64).max


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


@intrinsic
def _stream_64(typingctx, dst, src):
    """Copy 64 bytes from address ``src`` to the 64-byte-aligned address ``dst`` with
    non-temporal stores: they bypass the caches, so the destination's lines are not read in
    first (a long copy into memory costs about what a memset does). Slower than ordinary stores
    for short stretches: use it for whole windows only (:func:`_copy_window`)."""
    sig = types.void(types.uintp, types.uintp)

    def codegen(context, builder, signature, args):
        vec = ir.VectorType(ir.IntType(8), 64)
        value = builder.load(builder.inttoptr(args[1], vec.as_pointer()), align=1)
        store = builder.store(value, builder.inttoptr(args[0], vec.as_pointer()), align=64)
        store.set_metadata("nontemporal", builder.module.add_metadata(
            [ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _store_fence(typingctx):
    """A full fence: non-temporal stores are weakly ordered, so a thread fences before the
    buffer it streamed into is handed on."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _copy_window(dst, src):
    """``dst[:] = src`` (same length, contiguous) with non-temporal stores for its 64-byte-
    aligned middle, then a fence."""
    n = dst.shape[0]
    d = dst.ctypes.data
    s = src.ctypes.data
    head = min((64 - d % 64) % 64, n)
    for j in range(head):
        dst[j] = src[j]
    i = head
    while i + 64 <= n:
        _stream_64(d + i, s + i)
        i += 64
    dst, src = dst[i:], src[i:]
    for j in range(n - i):
        dst[j] = src[j]
    _store_fence()


@njit(cache=True, nogil=True, inline="always")
def _emit(src, s, e, out, k, out_lo):
    """Place ``src[s:e]`` at haplotype indexes ``k .. k + e - s``; keep what falls in the window.

    The window is haplotype indexes ``[out_lo, out_lo + len(out))``. Returns the next index.
    """
    n = e - s
    lo = max(k, out_lo)
    hi = min(k + n, out_lo + out.shape[0])
    if hi > lo:
        # An explicit loop from 0 over two views: vectorised by LLVM, several times faster
        # than numba's slice assignment.
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
    stop_past_tss=-1,
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
    stop_past_tss : int
        When >= 0, ``stop_at`` becomes ``tss_hap + stop_past_tss`` once the TSS is placed: one
        walk then stops where a walk told the window's end up front would.

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
                if stop_past_tss >= 0:
                    stop_at = tss_hap + stop_past_tss
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
            if stop_past_tss >= 0:
                stop_at = tss_hap + stop_past_tss
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
def fixed_windows(spans, variants, tss, minus, snps_only, rows, out, counts, scratch):
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
    scratch : uint8 (n_threads, W) or (0, 0)
        Per-thread rows (``numba.get_num_threads()`` of them, each at least as long as any
        region's haplotype up to its window's end): each haplotype is built there, in the
        caches, by one walk, and its window streamed into ``out`` with non-temporal stores --
        faster when ``out`` is far larger than the caches. Empty: two walks per haplotype (one
        to place the TSS, one to fill the window) write into ``out`` directly.
    """
    n_regions = rows.shape[0]
    n_hap = out.shape[1]
    length = out.shape[2]
    half = length // 2
    stream = scratch.shape[0] > 0
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        ref = spans.ref[spans.lo[g] : spans.hi[g]]
        lower = spans.lower[spans.lo[g] : spans.hi[g]]
        start = spans.start + spans.lo[g]
        c = counts[rows[g], h]
        o = out[rows[g], h]
        if stream:
            # one walk from the span's start into the scratch row, stopping where the window
            # ends; the window is cut from it and streamed out
            w = scratch[get_thread_id()]
            n_built, tss_hap = walk_haplotype(
                ref, lower, start, variants, h, spans.rec_lo[g], spans.rec_hi[g], snps_only,
                tss[g], w, 0, _NO_STOP, c, length - half,
            )
            win_lo = tss_hap - half
            if tss_hap >= 0 and win_lo >= 0 and win_lo + length <= min(n_built, w.shape[0]):
                win = w[win_lo : win_lo + length]
                if minus[g]:
                    _reverse_complement_inplace(win)
                _copy_window(o, win)
                continue
            c[:] = 0  # near a contig end (or a scratch row too short): the two walks below
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
def ragged_fill(spans, variants, minus, snps_only, rows, offsets, data, scratch):
    """Write every haplotype of every interval into ``data`` (second pass of ragged mode).

    ``rows`` : int64 (n_regions,), ``offsets`` : int64 (n_out_rows * n_hap + 1,): haplotype
    ``h`` of region ``g`` goes to ``data[offsets[i] : offsets[i + 1]]`` with
    ``i = rows[g] * n_hap + h``; ``minus`` : bool (n_regions,) reverse-complements a region;
    ``scratch`` : uint8 (n_threads, longest haplotype) or (0, 0), as in :func:`fixed_windows`.
    """
    n_regions = spans.lo.shape[0]
    n_hap = variants.hap_allele.shape[0]
    counts = np.zeros(N_COUNTS, dtype=np.int32)
    stream = scratch.shape[0] > 0
    for job in prange(n_regions * n_hap):
        g = job // n_hap
        h = job % n_hap
        i = rows[g] * n_hap + h
        dst = data[offsets[i] : offsets[i + 1]]
        o = scratch[get_thread_id(), : dst.shape[0]] if stream else dst
        walk_haplotype(
            spans.ref[spans.lo[g] : spans.hi[g]], spans.lower[spans.lo[g] : spans.hi[g]],
            spans.start + spans.lo[g], variants, h, spans.rec_lo[g], spans.rec_hi[g],
            snps_only, -1, o, 0, np.iinfo(np.int64).max, counts.copy(),
        )
        if minus[g]:
            _reverse_complement_inplace(o)
        if stream:
            _copy_window(dst, o)


@njit(cache=True, nogil=True)
def fixed_spans(pos, ends, cum_del, tss, length, span_lo, span_hi, rec_end):
    """Reference spans to walk so each fixed window is filled, whatever the haplotype's indels.

    The left edge moves left by every base that records between it and the TSS could delete,
    then further while a record starting before it overlaps it (no record is cut in half);
    the right edge moves right by every base that records from ``tss - longest record`` up to
    it could delete. Binary searches only: O(regions x (log n_rec + records in the window)).

    Parameters
    ----------
    pos : int64 (n_rec,)
        0-based record starts, sorted.
    ends : int64 (n_rec,)
        Exclusive end of the reference each record can replace (``pos + ref_len``; ``pos + 1``
        for a record whose ALT alleles are all skipped symbolic ones).
    cum_del : int64 (n_rec + 1,)
        Cumulative sum of the bases each record can delete (``VariantBlock.max_deletion``),
        starting at 0.
    tss : int64 (n_regions,)
        0-based TSSs.
    length : int
        Window length L.
    span_lo, span_hi, rec_end : int64 (n_regions,), out
        The span ``[span_lo, span_hi)`` (0-based reference; ``span_hi`` covers the REF of every
        record walked) and the position below which records are walked (records start in
        ``[span_lo, rec_end)``).
    """
    n = pos.shape[0]
    half = length // 2
    longest = 1
    reach = np.empty(n, np.int64)  # reach[i]: furthest end among records 0..i
    top = np.iinfo(np.int64).min
    for i in range(n):
        top = max(top, ends[i])
        reach[i] = top
        longest = max(longest, ends[i] - pos[i])
    for g in range(tss.shape[0]):
        t = tss[g]
        a = t - half
        while True:  # until neither deletions upstream nor records cut by the edge move it
            d = cum_del[np.searchsorted(pos, t + 1)] - cum_del[np.searchsorted(pos, a)]
            a_new = t - half - d
            i = np.searchsorted(reach, a, side="right")  # the first record ending past a
            if i < n and pos[i] < a:
                a_new = min(a_new, pos[i])
            if a_new >= a:
                break
            a = a_new
        b = t + (length - half)
        first = np.searchsorted(pos, t - longest)
        while True:
            d = cum_del[np.searchsorted(pos, b)] - cum_del[first]
            if t + (length - half) + d <= b:
                break
            b = t + (length - half) + d
        hi = b
        for k in range(np.searchsorted(pos, a), np.searchsorted(pos, b)):
            hi = max(hi, ends[k])
        span_lo[g] = a
        span_hi[g] = hi
        rec_end[g] = b
