"""Numba kernels that turn VCF text into the engine's arrays, without a Python step per record.

* :func:`parse_lines` splits whole VCF data lines (bytes, each ending in LF) into the columns
  the engine reads -- POS, REF, ALT, INFO/END, whether FORMAT starts with GT -- and parses the GT
  of the selected sample columns (:func:`parse_genotypes`' rules), skipping the others byte by
  byte. Records whose ALT is ``.`` are dropped.
* :func:`allele_table` turns each record's ``REF<TAB>ALT`` text into the kernels' allele table:
  ALT codes, offsets and flags (symbolic, ``<DEL>``, htslib indel sharing REF's first base,
  REF starting lower-case; see :mod:`prep.variants`).

Bytes are ASCII; positions are byte offsets into the buffers given.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["parse_genotypes", "parse_lines", "allele_table", "is_indel_bytes",
           "FLAG_SYMBOLIC", "FLAG_TRIM", "FLAG_REF_LOWER", "FLAG_SYMBOLIC_DEL",
           "BAD_COLUMNS", "BAD_SAMPLES"]

FLAG_SYMBOLIC = 1
FLAG_TRIM = 2
FLAG_REF_LOWER = 4
FLAG_SYMBOLIC_DEL = 8
BAD_COLUMNS = 1
""":func:`parse_lines` status: a line has fewer than 10 columns."""
BAD_SAMPLES = 2
""":func:`parse_lines` status: a line has fewer sample columns than the header."""

_TAB, _LF, _COLON, _SEMI, _COMMA, _DOT, _STAR = 9, 10, 58, 59, 44, 46, 42


@njit(cache=True, nogil=True, inline="always")
def _parse_gt(buf, i, end, columns, gt, phased, r):
    """GT of the selected sample columns in ``buf[i:end)`` (TAB-separated, GT first) into
    ``gt[r]``/``phased[r]``; False when the text holds fewer columns than ``columns``."""
    for col in range(columns.shape[0]):
        if i >= end:
            return False
        s = columns[col]
        if s >= 0 and i + 3 <= end:  # fast path: one-digit alleles, "a|b" or "a/b" ending there
            c0, c1, c2 = buf[i], buf[i + 1], buf[i + 2]
            c3 = buf[i + 3] if i + 3 < end else _TAB
            if (48 <= c0 <= 57 and 48 <= c2 <= 57 and (c1 == 124 or c1 == 47)
                    and (c3 == _TAB or c3 == _COLON or c3 == _LF)):
                gt[r, s, 0] = c0 - 48
                gt[r, s, 1] = c2 - 48
                phased[r, s] = c1 == 124
                i += 3
                s = -1  # parsed: skip the rest of the column
        if s >= 0:
            k = 0
            val = -1
            ph = True
            gt[r, s, 1] = 0
            while i < end:
                c = buf[i]
                if c == _COLON or c == _TAB or c == _LF:
                    break
                if 48 <= c <= 57:
                    val = (val if val > 0 else 0) * 10 + (c - 48)
                elif c == _DOT:
                    val = -1
                elif c == 124 or c == 47:  # '|' '/'
                    if k < 2:
                        gt[r, s, k] = val
                    k += 1
                    if k == 1:
                        ph = c == 124
                    val = -1
                i += 1
            if k < 2:
                gt[r, s, k] = val
            phased[r, s] = ph
        while i < end and buf[i] != _TAB:
            i += 1
        i += 1
    return True


@njit(cache=True, nogil=True)
def parse_genotypes(buf, offsets, columns, gt, phased):
    """Parse the GT field of the selected sample columns of every record.

    Unselected columns are skipped byte by byte (up to their tab) and never stored, so the
    output holds only the selected samples whatever the file's sample count.

    Parameters
    ----------
    buf : uint8 (n_bytes,)
        Sample columns of record ``r`` (tab-separated, GT first) in
        ``buf[offsets[r]:offsets[r + 1]]``.
    offsets : int64 (n_rec + 1,)
    columns : int64 (n_file_samples,)
        For each sample column of the file (header order), the output slot it is parsed into
        (``0 <= slot < gt.shape[1]``), or -1 to skip it.
    gt : int16 (n_rec, n_selected, 2), out
        Allele indexes; ``.`` is -1; a haploid genotype's second entry is 0 (reference).
    phased : bool (n_rec, n_selected), out
        Whether the separator before the second allele is ``|`` (haploid: True).

    Returns
    -------
    int
        -1, or the first record with fewer sample columns than ``columns`` has entries.
    """
    for r in range(gt.shape[0]):
        if not _parse_gt(buf, offsets[r], offsets[r + 1], columns, gt, phased, r):
            return r
    return -1


@njit(cache=True, nogil=True, inline="always")
def _info_end(buf, a, b):
    """The integer value of key ``END`` in the INFO text ``buf[a:b)``; -1 if absent or not a
    plain non-negative integer."""
    i = a
    while i + 4 <= b:
        if buf[i] == 69 and buf[i + 1] == 78 and buf[i + 2] == 68 and buf[i + 3] == 61:  # END=
            j = i + 4
            v = 0
            while j < b and buf[j] != _SEMI:
                c = buf[j]
                if c < 48 or c > 57:
                    return -1
                v = v * 10 + (c - 48)
                j += 1
            return v if j > i + 4 else -1
        while i < b and buf[i] != _SEMI:  # next key
            i += 1
        i += 1
    return -1


@njit(cache=True, nogil=True)
def parse_lines(buf, columns, pos, ref_at, alt_at, alt_end, end_value, has_gt, gt, phased):
    """Parse whole VCF data lines: the columns the engine reads and the selected samples' GT.

    Parameters
    ----------
    buf : uint8 (n_bytes,)
        Data lines, each ending in LF (no header lines).
    columns : int64 (n_file_samples,)
        As in :func:`parse_genotypes`.
    pos, ref_at, alt_at, alt_end, end_value : int64 (>= n_lines,), out
        Per kept record: 0-based POS; byte offsets of REF's start, ALT's start and ALT's end
        (exclusive; REF ends at ``alt_at - 1``, a TAB); INFO/END (-1 when absent).
    has_gt : bool (>= n_lines,), out
        FORMAT starts with GT (else bcftools applies nothing: GT is set to 0, phased).
    gt : int16 (>= n_lines, n_selected, 2), out
    phased : bool (>= n_lines, n_selected), out

    Returns
    -------
    (int, int, int)
        Records kept (ALT not ``.``), then -1 or the byte offset of the first malformed line
        and its kind (:data:`BAD_COLUMNS`, :data:`BAD_SAMPLES`).
    """
    n = buf.shape[0]
    i = 0
    r = 0
    at = np.zeros(10, np.int64)  # at[k]: byte offset of column k's first byte (k = 1..9)
    while i < n:
        line = i
        col = 0
        while i < n and buf[i] != _LF and col < 9:
            if buf[i] == _TAB:
                col += 1
                at[col] = i + 1
            i += 1
        if col < 9:
            return r, line, BAD_COLUMNS
        c1, c2, c3, c4, c5, c7, c8, c9 = at[1], at[2], at[3], at[4], at[5], at[7], at[8], at[9]
        e = i
        while e < n and buf[e] != _LF:
            e += 1
        if c5 - c4 == 2 and buf[c4] == _DOT:  # ALT '.': nothing to apply
            i = e + 1
            continue
        p = 0
        for k in range(c1, c2 - 1):
            p = p * 10 + (buf[k] - 48)
        pos[r] = p - 1
        ref_at[r] = c3
        alt_at[r] = c4
        alt_end[r] = c5 - 1
        end_value[r] = _info_end(buf, c7, c8 - 1)
        f = c9 - 1 - c8
        gt_first = f >= 2 and buf[c8] == 71 and buf[c8 + 1] == 84 and (f == 2 or buf[c8 + 2] == _COLON)
        has_gt[r] = gt_first
        if not _parse_gt(buf, c9, e, columns, gt, phased, r):
            return r, line, BAD_SAMPLES
        if not gt_first:  # no GT field: nothing applies (bcftools skips the record)
            gt[r] = 0
            phased[r] = True
        r += 1
        i = e + 1
    return r, -1, 0


@njit(cache=True, nogil=True, inline="always")
def _up(c):
    return c - 32 if 97 <= c <= 122 else c


@njit(cache=True, nogil=True)
def is_indel_bytes(t, r0, r1, a0, a1):
    """:func:`prep.variants.is_indel_htslib` on REF ``t[r0:r1)`` and ALT ``t[a0:a1)``."""
    nr, na = r1 - r0, a1 - a0
    if nr == 1 and na == 1:
        return False
    i = 0
    while i < nr and i < na and _up(t[r0 + i]) == _up(t[a0 + i]):
        i += 1
    if i == nr and i < na:
        return t[a0 + i] != 91 and t[a0 + i] != 93  # '[' ']'
    if i < nr and i == na:
        return True
    if i == nr and i == na:
        return False
    re_, ae = nr - 1, na - 1
    while re_ > i and ae > i and _up(t[r0 + re_]) == _up(t[a0 + ae]):
        re_ -= 1
        ae -= 1
    if ae == i:
        return re_ != i and _up(t[r0 + re_]) == _up(t[a0 + ae])
    if re_ == i:
        return _up(t[r0 + re_]) == _up(t[a0 + ae])
    return False


@njit(cache=True, nogil=True, inline="always")
def _symbolic(t, a0, a1):
    """``<...>``, ``*``, ``.``, an empty ALT or a breakend (``[`` or ``]`` in it)."""
    if a1 == a0 or t[a0] == 60:  # '<'
        return True
    if a1 - a0 == 1 and (t[a0] == _STAR or t[a0] == _DOT):
        return True
    for k in range(a0, a1):
        if t[k] == 91 or t[k] == 93:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _symbolic_del(t, a0, a1):
    """``<DEL>``, any case."""
    return (a1 - a0 == 5 and t[a0] == 60 and _up(t[a0 + 1]) == 68 and _up(t[a0 + 2]) == 69
            and _up(t[a0 + 3]) == 76 and t[a0 + 4] == 62)


@njit(cache=True, nogil=True)
def allele_table(text, text_off, ref_chars, span, encode, first_allele, allele_offsets,
                 allele_codes, allele_flags):
    """The allele table of records given as ``REF<TAB>ALT`` text.

    Parameters
    ----------
    text : uint8
        Record ``i`` is ``text[text_off[i]:text_off[i + 1]]``: REF (``ref_chars[i]`` bytes),
        a TAB, the ALT column (comma-separated alleles).
    text_off : int64 (n_rec + 1,)
    ref_chars : int64 (n_rec,)
    span : int64 (n_rec,)
        Reference bases each record spans (htslib's ``rlen``).
    encode : uint8 (256,)
        Byte -> code (:data:`prep.encoding.ENCODE_TABLE`).
    first_allele : int64 (n_rec,), out
    allele_offsets : int64 (>= n_alleles + 1,), out
    allele_codes : uint8 (>= total ALT bytes,), out
    allele_flags : uint8 (>= n_alleles,), out

    Returns
    -------
    (int, int)
        Alleles and codes written.
    """
    j = 0
    k = 0
    allele_offsets[0] = 0
    for i in range(first_allele.shape[0]):
        r0 = text_off[i]
        r1 = r0 + ref_chars[i]
        end = text_off[i + 1]
        lower = FLAG_REF_LOWER if r1 > r0 and 97 <= text[r0] <= 122 else 0
        first_allele[i] = j
        a0 = r1 + 1
        while True:
            a1 = a0
            while a1 < end and text[a1] != _COMMA:
                a1 += 1
            fl = lower
            if _symbolic_del(text, a0, a1):
                fl |= FLAG_SYMBOLIC_DEL | (FLAG_TRIM if span[i] > 1 else 0)
                allele_codes[k] = encode[text[r0]] if r1 > r0 else 4
                k += 1
            elif _symbolic(text, a0, a1):
                fl |= FLAG_SYMBOLIC
            else:
                if r1 > r0 and text[r0] == text[a0] and is_indel_bytes(text, r0, r1, a0, a1):
                    fl |= FLAG_TRIM
                for m in range(a0, a1):
                    allele_codes[k] = encode[text[m]]
                    k += 1
            allele_flags[j] = fl
            j += 1
            allele_offsets[j] = k
            if a1 >= end:
                break
            a0 = a1 + 1
    return j, k


def empty_gt(n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(gt, phased) of zero records."""
    return np.zeros((0, n_samples, 2), np.int16), np.zeros((0, n_samples), np.bool_)
