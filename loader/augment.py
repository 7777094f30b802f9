"""Cropping, shifting and reverse-complementing stored windows (NumPy, in workers).

A stored sample is ``seq`` of shape (2, W), uint8 codes (A, C, G, T, N = 0..4), W = L + 2 *
flank, with the TSS at ``tss_index`` (0-based). A crop of length n puts the TSS where prep puts
it in an n-bp window: index n // 2, or n - 1 - n // 2 when the window was stored reverse-
complemented (``tss_index == W - 1 - W // 2``). A shift s moves the TSS to ``tss + s``: the
window's bases move right by s. Reverse complement flips both haplotypes together and
complements them (prep.encoding.reverse_complement semantics); the TSS goes to n - 1 - tss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from prep.encoding import COMPLEMENT, N_CODE

__all__ = ["Window", "crop", "crop_to", "crop_start", "crop_into", "reverse_complement_rows",
           "draw_augment"]


@dataclass(frozen=True)
class Window:
    """How stored windows become batch windows.

    Attributes
    ----------
    length : int
        n, the output length.
    fill : "flank" or "N"
        Bases shifted in: the stored flanks (N beyond them), or N.
    """

    length: int
    fill: str = "flank"

    def write(self, out: np.ndarray, seq: np.ndarray, tss_index: int, shift: int,
              reverse: bool) -> int:
        """Crop a stored window into ``out`` (shape (2, n), written in place); return the
        crop's TSS index. As :func:`crop_to` with this window's ``fill``."""
        return crop_to(out, seq, tss_index, shift, reverse, self.fill)


def crop_start(width: int, tss_index: int, length: int) -> tuple[int, int]:
    """Where an unshifted crop of ``length`` starts in a stored window, and its TSS index.

    Parameters
    ----------
    width : int
        W, the stored window's length.
    tss_index : int
        0-based TSS index in the stored window.
    length : int
        n, the crop length (<= W).

    Returns
    -------
    (start, tss) : (int, int)
        0-based start in the stored window; 0-based TSS index in the crop.
    """
    if not 0 < length <= width:
        raise ValueError(f"crop length {length} must be in 1..{width} (the stored window)")
    tss = length // 2 if tss_index == width // 2 else length - 1 - length // 2
    return tss_index - tss, tss


def crop_into(out: np.ndarray, seq: np.ndarray, start: int, lo: int, hi: int) -> None:
    """Write ``seq[:, start:start + n]`` into ``out``, N where the source is outside [lo, hi).

    Parameters
    ----------
    out : np.ndarray, shape (2, n), uint8
        Written in place.
    seq : np.ndarray, shape (2, W), uint8
    start : int
        0-based source index of ``out[:, 0]`` (may be negative or run past W).
    lo, hi : int
        0-based half-open source range whose bases may be used; others become N.
    """
    n = out.shape[-1]
    src_lo, src_hi = max(start, lo, 0), min(start + n, hi, seq.shape[-1])
    if src_hi <= src_lo:
        out[:] = N_CODE
        return
    d_lo, d_hi = src_lo - start, src_hi - start
    out[:, d_lo:d_hi] = seq[:, src_lo:src_hi]
    if d_lo:
        out[:, :d_lo] = N_CODE
    if d_hi < n:
        out[:, d_hi:] = N_CODE


_C3 = np.uint64(0x0303030303030303)
_C1 = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True, inline="always")
def _rc_word(w):
    """Reverse complement 8 codes packed in a uint64 (byte order reversed, then complemented)."""
    w = ((w & np.uint64(0x00000000FFFFFFFF)) << np.uint64(32)) | (w >> np.uint64(32))
    w = (((w & np.uint64(0x0000FFFF0000FFFF)) << np.uint64(16))
         | ((w & np.uint64(0xFFFF0000FFFF0000)) >> np.uint64(16)))
    w = (((w & np.uint64(0x00FF00FF00FF00FF)) << np.uint64(8))
         | ((w & np.uint64(0xFF00FF00FF00FF00)) >> np.uint64(8)))
    # A, C, G, T = 0..3 -> 3..0 by x ^ 3; N = 4 -> 7, taken back to 4 by subtracting 3 where
    # bit 2 is set (bytes never borrow: each is at most 7).
    w ^= _C3
    return w - ((w >> np.uint64(2)) & _C1) * np.uint64(3)


@njit(cache=True, nogil=True)
def _rc_rows_kernel(words):
    """Reverse complement each row of ``words`` (R, m) uint64 (8 codes each) in place."""
    m = words.shape[1]
    for r in range(words.shape[0]):
        row = words[r]
        for j in range((m + 1) // 2):
            a = _rc_word(row[j])
            b = _rc_word(row[m - 1 - j])
            row[j] = b
            row[m - 1 - j] = a


def reverse_complement_rows(x: np.ndarray) -> None:
    """Reverse complement every row of ``x`` in place (A<->T, C<->G, N stays N).

    Parameters
    ----------
    x : np.ndarray, shape (R, n), uint8, C-contiguous, values 0..4
        Rows are reversed along n. With n a multiple of 8 (every Enformer length) a numba kernel
        works 8 codes at a time, ~7x faster than a byte lookup; other lengths use NumPy.
    """
    if x.dtype != np.uint8 or x.ndim != 2 or not x.flags.c_contiguous:
        raise ValueError(f"x must be a C-contiguous uint8 array of shape (R, n), got "
                         f"{x.dtype} {x.shape}")
    if x.shape[1] % 8 == 0 and x.ctypes.data % 8 == 0:
        _rc_rows_kernel(x.view(np.uint64))
    else:
        x[:] = COMPLEMENT[x[:, ::-1]]


def crop(seq: np.ndarray, tss_index: int, flank: int, length: int | None = None,
         shift: int = 0, reverse: bool = False, fill: str = "flank") -> tuple[np.ndarray, int]:
    """Crop a stored window around its TSS, shifted and optionally reverse-complemented.

    Parameters
    ----------
    seq : np.ndarray, shape (2, W), uint8
    tss_index : int
        0-based TSS index in ``seq``.
    flank : int
        Real bases stored each side of the L-bp window (W = L + 2 * flank).
    length : int, optional
        n, the output length (default L).
    shift : int
        The TSS moves from its unshifted crop index t to t + shift.
    reverse : bool
        Reverse-complement after shifting.
    fill : "flank" or "N"
        Bases shifted in: the stored flanks (N beyond them), or N.

    Returns
    -------
    (window, tss) : (np.ndarray, shape (2, n), uint8, a new array; int)
        The crop and the 0-based TSS index in it.

    Raises
    ------
    ValueError
        Bad shapes or ``fill``.
    """
    seq = np.asarray(seq)
    if seq.ndim != 2 or seq.shape[0] != 2 or seq.dtype != np.uint8:
        raise ValueError(f"seq must be uint8 of shape (2, W), got {seq.dtype} {seq.shape}")
    if fill not in ("flank", "N"):
        raise ValueError(f"fill must be 'flank' or 'N', got {fill!r}")
    n = seq.shape[1] - 2 * flank if length is None else length
    crop_start(seq.shape[1], tss_index, n)  # a bad length raises here, before allocating
    out = np.empty((2, n), dtype=np.uint8)
    return out, crop_to(out, seq, tss_index, shift, reverse, fill)


def crop_to(out: np.ndarray, seq: np.ndarray, tss_index: int, shift: int = 0,
            reverse: bool = False, fill: str = "flank") -> int:
    """:func:`crop` into ``out``, whose length n is the crop's: the loader's crop of a sample.

    Parameters
    ----------
    out : np.ndarray, shape (2, n), uint8, C-contiguous
        Written in place.
    seq : np.ndarray, shape (2, W), uint8
    tss_index, shift, reverse, fill
        As in :func:`crop`.

    Returns
    -------
    int
        The 0-based TSS index in ``out``.
    """
    width, n = seq.shape[-1], out.shape[-1]
    base, tss = crop_start(width, tss_index, n)
    lo, hi = (0, width) if fill == "flank" else (base, base + n)
    crop_into(out, seq, base - shift, lo, hi)
    tss += shift
    if reverse:
        reverse_complement_rows(out)
        return n - 1 - tss
    return tss


def draw_augment(rng: np.random.Generator, n: int, rc_prob: float,
                 max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Augmentation of ``n`` samples: shifts uniform in [-max_shift, max_shift], RC flags.

    Returns
    -------
    (shift, reverse) : (np.ndarray, shape (n,), int64; np.ndarray, shape (n,), bool)
    """
    shift = rng.integers(-max_shift, max_shift + 1, size=n)
    reverse = rng.random(n) < rc_prob
    return shift.astype(np.int64), reverse
