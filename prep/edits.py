"""Haplotypes as edits against one reference span, and windows built straight from them.

A gene's haplotypes differ from its reference span by a few variants each. Instead of storing
(or ever materialising) every haplotype's bases, hapflow records the *edits* the engine applies
(:func:`gene_edits`, the same walk as :func:`prep.kernels.walk_haplotype`, rule for rule) and
builds any window later, straight into a caller's buffer (:func:`build_windows`).

Edits
-----
An edit replaces the reference span's bases ``[start, end)`` by ``alt`` (0-based, relative to
the span; ``end - start`` may be 0 for an insertion's extra bases, ``alt`` may be empty for a
deletion's removed bases). A haplotype is::

    ref[0:s1] + alt1 + ref[e1:s2] + alt2 + ... + ref[eK:n_ref]

with its edits sorted by start and never overlapping. Per applied record the walk gives one
edit: ``[p, p + r)`` -> ALT (``r`` = REF length, clipped to the span's end, ALT clipped with it);
a record joined to the previous one (bcftools: an indel starting on the last REF base of the
previous record) gives ``[p + 1, p + r)`` -> ALT[1:]; when bcftools rewrites the base the previous
record wrote (an insertion whose case differs, on soft-masked sequence) that edit's last base is
replaced by the insertion's first. A gene's distinct edits form a table sorted by
(start, record, allele, joined, rewrite); each haplotype is one row of a bit matrix over that
table (bit ``e`` of row ``h``: haplotype ``h`` carries edit ``e``), so its set bits come in
position order.

The TSS's haplotype index: the reference base ``tss`` lands at ``k + (tss - c)`` in a reference
stretch; inside an edit ``[s, e)`` starting at haplotype index ``h`` with ``a`` ALT bases it is
``h + min(tss - s, a)`` — a TSS inside a deletion moves to the first base after it, a TSS on an
insertion's anchor stays on the anchor: the TSS placement rules of :mod:`prep.builder`.

Windows
-------
:func:`build_windows` fills ``out[b, h]`` (``n`` codes) for a batch: the haplotype window of
``n`` bases around the TSS's haplotype index ``t``, shifted by ``s`` (the window starts at
``t - n // 2 - s``; ``t - n // 2 + s`` for genes stored reverse-complemented), N outside the
haplotype and outside the bases a v2 shard would have stored (``fill_n`` False: the ``W``-base
window ``[t - W // 2, t - W // 2 + W)``; True: the unshifted ``n``-base crop), reverse-
complemented when ``rc`` differs from the gene's strand flag — byte for byte what cropping a
stored ``W``-base window gives (the NumPy crop of ``tests/window_oracle.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import leading_zeros

from prep.kernels import N_COUNTS, VariantArrays

__all__ = ["GeneEdits", "EditPool", "gene_edits", "select_haplotypes", "make_pool",
           "haplotype_tss", "write_window", "build_windows", "build_windows_serial",
           "fixed_windows_from_edits"]

_SYMBOLIC = 1
_TRIM = 2
_REF_LOWER = 4
_N = 4
_NONE = -1


class GeneEdits(NamedTuple):
    """One gene's edit table and which haplotype carries which edit.

    Coordinates are 0-based and relative to the gene's reference span.
    """

    starts: np.ndarray
    """int64 (E,): first reference base each edit replaces (sorted)."""
    ends: np.ndarray
    """int64 (E,): end (exclusive) of the reference bases each edit replaces."""
    alt_offsets: np.ndarray
    """int64 (E + 1,): edit ``e`` writes ``alt_codes[alt_offsets[e]:alt_offsets[e + 1]]``."""
    alt_codes: np.ndarray
    """uint8 (alt_offsets[-1],): the bases the edits write, codes 0..4."""
    bits: np.ndarray
    """uint8 (H, ceil(E / 8)): np.packbits rows; bit ``e`` of row ``h``: haplotype ``h``
    carries edit ``e``."""

    @property
    def n_edits(self) -> int:
        return int(self.starts.shape[0])

    def carried(self, h: int) -> np.ndarray:
        """Edit ids of haplotype ``h``, ascending (int64)."""
        return np.flatnonzero(np.unpackbits(self.bits[h], count=self.n_edits))


class EditPool(NamedTuple):
    """Several genes' references and edits in fixed-size rows (slots), for one batch kernel.

    Slot ``s`` holds one gene; rows are padded past each gene's own sizes.
    """

    refs: np.ndarray
    """uint8 (S, R): the reference span of each slot's gene (+ strand codes)."""
    ref_len: np.ndarray
    """int64 (S,): bases of each span."""
    tss_rel: np.ndarray
    """int64 (S,): the TSS, 0-based in the span."""
    flip: np.ndarray
    """bool (S,): the gene's windows are stored reverse-complemented (minus strand)."""
    starts: np.ndarray
    """int64 (S, E): :attr:`GeneEdits.starts` per slot."""
    ends: np.ndarray
    """int64 (S, E)."""
    alt_offsets: np.ndarray
    """int64 (S, E + 1)."""
    alt_codes: np.ndarray
    """uint8 (S, A)."""
    n_edits: np.ndarray
    """int64 (S,)."""
    bits: np.ndarray
    """uint8 (S, H, ceil(E / 8)): per slot, per haplotype row ``2 * individual + h``."""


# ----------------------------------------------------------------------------------- writing


@njit(cache=True, nogil=True)
def _walk_edits(v, alleles, lower, span_start, rec_lo, rec_hi, snps_only, rec, allele, joined,
                rewrite, counts):
    """One haplotype's applied records as edits (the walk of prep.kernels.walk_haplotype).

    ``rec``, ``allele``, ``joined``, ``rewrite`` (int64, >= rec_hi - rec_lo entries) receive, per
    edit, the record, the ALT row, 1 for a joined record, and -1 or the ALT row whose first base
    replaces the edit's last base. Returns the number of edits.
    """
    n_ref = lower.shape[0]
    n = 0
    cursor = 0
    frz = -1
    prev_insert = False
    last_lower = False
    last_nonempty = -1
    for i in range(rec_lo, rec_hi):
        a = alleles[i]
        if a == 0:
            continue
        if a < 0:
            counts[2] += 1
            continue
        p = v.pos[i] - span_start
        if p < 0:
            continue
        if p >= n_ref:
            break
        j = v.first_allele[i] + a - 1
        flags = v.allele_flags[j]
        if flags & _SYMBOLIC:
            counts[3] += 1
            continue
        r = v.ref_len[i]
        alen = v.allele_offsets[j + 1] - v.allele_offsets[j]
        if snps_only and alen != r:
            counts[4] += 1
            continue
        join = False
        if p <= frz:
            if p < frz or (flags & _TRIM) == 0 or prev_insert:
                counts[1] += 1
                continue
            join = True
        if r > n_ref - p:
            r = n_ref - p
            if alen > r:
                alen = r
        if cursor < p:
            last_lower = lower[p - 1] != 0
        rec[n] = i
        allele[n] = j
        rewrite[n] = _NONE
        if join:
            joined[n] = 1
            if alen > r and last_lower != ((flags & _REF_LOWER) != 0):
                rewrite[last_nonempty] = j
            if alen > 1:
                last_nonempty = n
        else:
            joined[n] = 0
            last_lower = lower[p] != 0
            last_nonempty = n
        n += 1
        cursor = p + r
        frz = p + r - 1
        prev_insert = alen > r
        counts[0] += 1
    return n


@njit(parallel=True, cache=True, nogil=True)
def _walk_all(v, lower, span_start, rec_lo, rec_hi, snps_only, rec, allele, joined, rewrite,
              n_out, counts):
    for h in prange(v.hap_allele.shape[0]):
        n_out[h] = _walk_edits(v, v.hap_allele[h], lower, span_start, rec_lo, rec_hi, snps_only,
                               rec[h], allele[h], joined[h], rewrite[h], counts[h])


@njit(cache=True, nogil=True)
def _most_carried(hap_allele, rec_lo, rec_hi):
    """The most ALT alleles any haplotype carries in records ``[rec_lo, rec_hi)``: a bound on
    its edits, so the walk's scratch is (H, that) instead of (H, records)."""
    most = 0
    for h in range(hap_allele.shape[0]):
        row = hap_allele[h]
        c = 0
        for i in range(rec_lo, rec_hi):
            c += row[i] > 0
        most = max(most, c)
    return most


def gene_edits(v: VariantArrays, lower: np.ndarray, span_start: int, rec_lo: int, rec_hi: int,
               snps_only: bool = False) -> tuple[GeneEdits, np.ndarray]:
    """Every haplotype of ``v`` over one gene's reference span, as edits.

    Parameters
    ----------
    v : VariantArrays
        The records (``v.hap_allele`` rows are the haplotypes: ``2 * sample + h``).
    lower : np.ndarray, shape (n_ref,), uint8
        1 where the FASTA's base of the span is lower case; its length is the span's.
    span_start : int
        0-based reference position of the span's first base.
    rec_lo, rec_hi : int
        The records walked (as :func:`prep.builder.HaplotypeBuilder.fixed` walks them).
    snps_only : bool

    Returns
    -------
    (GeneEdits, counts)
        ``counts`` int32 (H, N_COUNTS): applied, overlap-skipped, missing, symbolic, not-SNP.

    Memory: 16 bytes x H x (the most ALT alleles one haplotype carries in the records) of
    scratch, plus H x E bytes while the bit matrix is packed (E: distinct edits).
    """
    n_hap = v.hap_allele.shape[0]
    room = max(_most_carried(v.hap_allele, int(rec_lo), int(rec_hi)), 1)
    rec, allele, joined, rewrite = (np.empty((n_hap, room), np.int32) for _ in range(4))
    n_out = np.zeros(n_hap, np.int64)
    counts = np.zeros((n_hap, N_COUNTS), np.int32)
    _walk_all(v, np.ascontiguousarray(lower, np.uint8), int(span_start), int(rec_lo),
              int(rec_hi), bool(snps_only), rec, allele, joined, rewrite, n_out, counts)
    taken = np.arange(room)[None, :] < n_out[:, None]
    keys = np.stack([rec[taken], allele[taken], joined[taken], rewrite[taken]],
                    axis=1).astype(np.int64)
    table, which = _distinct_rows(v, keys)
    return _edit_table(v, table, which, taken, len(lower), int(span_start)), counts


def _distinct_rows(v: VariantArrays, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, axis=0, return_inverse=True)`` for (record, ALT row, joined, rewrite)
    rows (int64 (N, 4)), through one int64 per row when the mixed-radix key fits (a 1-D sort:
    ~100x faster than sorting rows); the same table and inverse either way."""
    if keys.shape[0] == 0:
        return keys.reshape(0, 4), np.zeros(0, np.int64)
    rec = keys[:, 0]
    rec0 = int(rec.min())
    digit_rec = rec - rec0
    digit_alt = keys[:, 1] - v.first_allele[rec]  # the ALT row's rank inside its record
    rewrites, digit_rw = np.unique(keys[:, 3], return_inverse=True)
    bases = (int(digit_alt.max()) + 1, 2, len(rewrites))
    if (int(digit_rec.max()) + 1) * bases[0] * bases[1] * bases[2] >= 1 << 62:
        table, which = np.unique(keys, axis=0, return_inverse=True)
        return table, which.reshape(-1)
    packed = ((digit_rec * bases[0] + digit_alt) * 2 + keys[:, 2]) * bases[2] + digit_rw
    _, first, which = np.unique(packed, return_index=True, return_inverse=True)
    return keys[first], which.reshape(-1)


def _edit_table(v: VariantArrays, table: np.ndarray, which: np.ndarray, taken: np.ndarray,
                n_ref: int, span_start: int) -> GeneEdits:
    """The distinct edits (rows of ``table``: record, ALT row, joined, rewrite) as a GeneEdits.

    ``np.unique`` sorts by record first; records are in position order, so starts only grow.
    """
    rec, alt, join, rewrite = table.T if table.size else (np.zeros(0, np.int64),) * 4
    p = v.pos[rec] - span_start
    r = np.minimum(v.ref_len[rec], n_ref - p)
    a0 = v.allele_offsets[alt]
    alen = v.allele_offsets[alt + 1] - a0
    alen = np.where(v.ref_len[rec] > n_ref - p, np.minimum(alen, r), alen)  # clipped at the end
    lengths = alen - join
    offsets = np.zeros(len(rec) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    take = np.repeat(a0 + join - offsets[:-1], lengths) + np.arange(offsets[-1])
    codes = v.allele_codes[take] if offsets[-1] else np.zeros(0, np.uint8)
    rewritten = rewrite >= 0
    codes[offsets[1:][rewritten] - 1] = v.allele_codes[v.allele_offsets[rewrite[rewritten]]]
    n_hap = taken.shape[0]
    matrix = np.zeros((n_hap, len(rec)), bool)
    matrix[np.nonzero(taken)[0], which] = True
    return GeneEdits(starts=(p + join).astype(np.int64), ends=(p + r).astype(np.int64),
                     alt_offsets=offsets, alt_codes=np.ascontiguousarray(codes, np.uint8),
                     bits=np.packbits(matrix, axis=1))


def select_haplotypes(edits: GeneEdits, rows: np.ndarray) -> GeneEdits:
    """The haplotypes ``rows`` of ``edits`` only (int64 (H',), in that order): their rows of the
    bit matrix and the table less the edits none of them carries (order kept, so each row's set
    bits still come in position order). Deterministic: depends on ``edits`` and ``rows`` only."""
    rows = np.asarray(rows, np.int64)
    sub = np.ascontiguousarray(edits.bits[rows])
    carried = np.bitwise_or.reduce(sub, axis=0) if len(rows) else np.zeros_like(edits.bits[0])
    keep = np.flatnonzero(np.unpackbits(carried, count=edits.n_edits))
    if len(keep) == edits.n_edits:  # every edit still carried: the table stays
        return edits._replace(bits=sub)
    lengths = np.diff(edits.alt_offsets)[keep]
    offsets = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    take = np.repeat(edits.alt_offsets[keep] - offsets[:-1], lengths) + np.arange(offsets[-1])
    matrix = np.unpackbits(sub, axis=1, count=edits.n_edits)[:, keep]
    return GeneEdits(starts=edits.starts[keep], ends=edits.ends[keep], alt_offsets=offsets,
                     alt_codes=np.ascontiguousarray(edits.alt_codes[take], np.uint8),
                     bits=np.packbits(matrix, axis=1).reshape(len(rows), -1))


# ---------------------------------------------------------------------------------- windows


@njit(cache=True, nogil=True, inline="always")
def _next_carried(bits, e, n_edits):
    """The first edit ``>= e`` that the bit row ``bits`` carries, or ``n_edits``: a byte at a
    time, so a haplotype's walk costs its carried edits and the row's bytes, not the table's
    edits (a 196,608 bp gene's table holds ~1,100 edits, a haplotype ~130)."""
    if e >= n_edits:
        return n_edits
    i = e >> 3
    byte = np.uint8(bits[i] & (0xFF >> (e & 7)))
    while byte == 0:
        i += 1
        if i << 3 >= n_edits:
            return n_edits
        byte = bits[i]
    nxt = (i << 3) + leading_zeros(np.uint8(byte))
    return nxt if nxt < n_edits else n_edits


@njit(cache=True, nogil=True)
def haplotype_tss(tss_rel, starts, ends, alt_offsets, bits, n_edits):
    """Haplotype index of reference base ``tss_rel`` (see the module docstring)."""
    k = 0
    c = 0
    e = _next_carried(bits, 0, n_edits)
    while e < n_edits:
        s = starts[e]
        if tss_rel < s:
            return k + tss_rel - c
        k += s - c
        a = alt_offsets[e + 1] - alt_offsets[e]
        if tss_rel < ends[e]:
            off = tss_rel - s
            return k + (off if off < a else a)
        k += a
        c = ends[e]
        e = _next_carried(bits, e + 1, n_edits)
    return k + tss_rel - c


@njit(cache=True, nogil=True, inline="always")
def _put(src, s, e, out, k, lo, hi, win_lo, flip):
    """Haplotype indexes ``[k, k + e - s)`` hold ``src[s:e]``; copy those in ``[lo, hi)`` to
    ``out`` (index ``i`` at ``i - win_lo``; with ``flip``, reverse-complemented: index ``i`` at
    ``len(out) - 1 - (i - win_lo)``, complemented)."""
    a = max(k, lo)
    b = min(k + e - s, hi)
    if b > a:
        # views and explicit loops: LLVM vectorises both (numba's slice copy is slower); the
        # reversed read with unsigned indexes costs what a forward copy does
        part = src[s + a - k:s + b - k]
        if flip:
            m = b - a
            dst = out[out.shape[0] - (b - win_lo):out.shape[0] - (a - win_lo)]
            for t in range(m):
                v = part[np.uint64(m - 1 - t)]
                dst[t] = np.uint8(3) - v if v < 4 else v
        else:
            dst = out[a - win_lo:b - win_lo]
            for t in range(dst.shape[0]):
                dst[t] = part[t]
    return k + e - s


@njit(cache=True, nogil=True)
def write_window(ref, n_ref, starts, ends, alt_offsets, alt_codes, bits, n_edits, win_lo, ok_lo,
                 ok_hi, flip, out):
    """Write haplotype indexes ``[win_lo, win_lo + len(out))`` into ``out``.

    Bases outside ``[ok_lo, ok_hi)`` and outside the haplotype are N; with ``flip`` the window
    is written reverse-complemented, in the same single pass (no second pass over ``out``).
    """
    n_out = out.shape[0]
    win_hi = win_lo + n_out
    lo = max(win_lo, ok_lo, 0)
    hi = min(win_hi, ok_hi)
    k = 0
    c = 0
    e = _next_carried(bits, 0, n_edits)
    while e < n_edits and k < hi:
        k = _put(ref, c, starts[e], out, k, lo, hi, win_lo, flip)
        a0 = alt_offsets[e]
        if alt_offsets[e + 1] - a0 == 1:  # one ALT base (SNPs): no views to build
            if lo <= k < hi:
                v = alt_codes[a0]
                if flip:
                    out[n_out - 1 - (k - win_lo)] = np.uint8(3) - v if v < 4 else v
                else:
                    out[k - win_lo] = v
            k += 1
        else:
            k = _put(alt_codes, a0, alt_offsets[e + 1], out, k, lo, hi, win_lo, flip)
        c = ends[e]
        e = _next_carried(bits, e + 1, n_edits)
    if k < hi:
        k = _put(ref, c, n_ref, out, k, lo, hi, win_lo, flip)
    hi = min(hi, k)
    for t in range(win_lo, min(lo, win_hi)):  # N before the data, N after it
        out[n_out - 1 - (t - win_lo) if flip else t - win_lo] = _N
    for t in range(max(hi, win_lo), win_hi):
        out[n_out - 1 - (t - win_lo) if flip else t - win_lo] = _N


@njit(cache=True, nogil=True)
def _window_job(pool, slot, row, shift, rc, width, fill_n, out, tss_index, job):
    """Window ``job`` of a batch: haplotype ``job % 2`` of sample ``job // 2``
    (see :func:`build_windows`), reverse-complemented as it is written when it must be."""
    n = out.shape[2]
    b = job // 2
    h = job % 2
    s = slot[b]
    if s < 0:
        out[b, h, :] = _N
        tss_index[b] = -1
        return
    bits = pool.bits[s, 2 * row[b] + h]
    t = haplotype_tss(pool.tss_rel[s], pool.starts[s], pool.ends[s], pool.alt_offsets[s],
                      bits, pool.n_edits[s])
    minus = pool.flip[s]
    base = t - n // 2
    win_lo = base + shift[b] if minus else base - shift[b]
    ok_lo, ok_hi = (base, base + n) if fill_n else (t - width // 2, t - width // 2 + width)
    write_window(pool.refs[s], pool.ref_len[s], pool.starts[s], pool.ends[s],
                 pool.alt_offsets[s], pool.alt_codes[s], bits, pool.n_edits[s], win_lo,
                 ok_lo, ok_hi, rc[b] != minus, out[b, h])
    if h == 0:
        tss = (n - 1 - n // 2 if minus else n // 2) + shift[b]
        tss_index[b] = n - 1 - tss if rc[b] else tss


@njit(parallel=True, cache=True, nogil=True)
def build_windows(pool, slot, row, shift, rc, width, fill_n, out, tss_index):
    """A batch of diploid windows, written straight into ``out`` (see the module docstring).

    Parameters
    ----------
    pool : EditPool
    slot, row : int64 (B,)
        The gene (pool slot) and the individual (its row in the gene's individuals) of each
        sample; ``slot < 0``: padding (all N, TSS index -1).
    shift : int64 (B,)
        The TSS moves from its unshifted index by this many bases.
    rc : bool (B,)
        Reverse-complement augmentation (on top of the gene's own orientation).
    width : int
        W, the stored window a v2 shard would hold (L + 2 x flank): bases beyond it are N when
        ``fill_n`` is False.
    fill_n : bool
        True: every base outside the unshifted crop is N ([loader] shift_fill = "N").
    out : uint8 (B, 2, n)
        Receives the windows (haplotype 1 and 2).
    tss_index : int64 (B,)
        Receives the TSS's index in each window.
    """
    for job in prange(out.shape[0] * 2):
        _window_job(pool, slot, row, shift, rc, width, fill_n, out, tss_index, job)


@njit(cache=True, nogil=True)
def build_windows_serial(pool, slot, row, shift, rc, width, fill_n, out, tss_index):
    """:func:`build_windows` on the calling thread only, byte for byte the same.

    For processes forked from one that already ran a parallel kernel (DataLoader workers):
    numba's GNU OpenMP threading layer cannot run parallel code in such a child.
    """
    for job in range(out.shape[0] * 2):
        _window_job(pool, slot, row, shift, rc, width, fill_n, out, tss_index, job)


def fixed_windows_from_edits(ref: np.ndarray, edits: GeneEdits, tss_rel: int, length: int,
                             minus: bool = False) -> np.ndarray:
    """Every haplotype's ``length``-base window around the TSS (what
    :meth:`prep.builder.HaplotypeBuilder.fixed` builds), from edits: uint8 (H, length).

    One gene, for tests and checks; loaders use :func:`build_windows`.
    """
    n_hap = edits.bits.shape[0]
    out = np.empty((n_hap, length), np.uint8)
    for h in range(n_hap):
        t = haplotype_tss(tss_rel, edits.starts, edits.ends, edits.alt_offsets, edits.bits[h],
                          edits.n_edits)
        write_window(ref, ref.shape[0], edits.starts, edits.ends, edits.alt_offsets,
                     edits.alt_codes, edits.bits[h], edits.n_edits, t - length // 2,
                     -(1 << 62), 1 << 62, minus, out[h])
    return out


def make_pool(genes: list[tuple[np.ndarray, GeneEdits, int, bool]]) -> EditPool:
    """An :class:`EditPool` with one slot per ``(ref, edits, tss_rel, flip)``, in order.

    Every gene must have the same number of haplotypes (rows of ``edits.bits``).
    """
    if not genes:
        raise ValueError("an edit pool needs at least one gene")
    n_slots = len(genes)
    n_hap = genes[0][1].bits.shape[0]
    r = max(len(ref) for ref, *_ in genes)
    e = max(1, max(ed.n_edits for _, ed, *_ in genes))
    a = max(1, max(len(ed.alt_codes) for _, ed, *_ in genes))
    pool = EditPool(refs=np.full((n_slots, r), _N, np.uint8), ref_len=np.zeros(n_slots, np.int64),
                    tss_rel=np.zeros(n_slots, np.int64), flip=np.zeros(n_slots, bool),
                    starts=np.zeros((n_slots, e), np.int64), ends=np.zeros((n_slots, e), np.int64),
                    alt_offsets=np.zeros((n_slots, e + 1), np.int64),
                    alt_codes=np.zeros((n_slots, a), np.uint8), n_edits=np.zeros(n_slots, np.int64),
                    bits=np.zeros((n_slots, n_hap, (e + 7) // 8), np.uint8))
    for s, (ref, ed, tss_rel, flip) in enumerate(genes):
        if ed.bits.shape[0] != n_hap:
            raise ValueError(f"gene {s} has {ed.bits.shape[0]} haplotypes, the pool {n_hap}")
        k = ed.n_edits
        pool.refs[s, :len(ref)] = ref
        pool.ref_len[s], pool.tss_rel[s], pool.flip[s], pool.n_edits[s] = len(ref), tss_rel, flip, k
        pool.starts[s, :k], pool.ends[s, :k] = ed.starts, ed.ends
        pool.alt_offsets[s, :k + 1] = ed.alt_offsets
        pool.alt_codes[s, :len(ed.alt_codes)] = ed.alt_codes
        pool.bits[s, :, :ed.bits.shape[1]] = ed.bits
    return pool
