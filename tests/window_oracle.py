"""The NumPy crop of a stored window: the oracle the window kernels are held to.

A format-2 shard stored each sample as ``seq`` of shape (2, W), W = L + 2 x flank, TSS at
``tss_index`` (W // 2, or W - 1 - W // 2 when stored reverse-complemented); its loader cropped,
shifted and reverse-complemented that window per sample. :func:`crop` is that crop, kept here
(no longer in the loader) so that tests can compare :func:`prep.edits.build_windows` and the
format-3 loader with it byte for byte.
"""

from __future__ import annotations

import numpy as np

from prep.encoding import N_CODE, reverse_complement

__all__ = ["crop", "crop_start"]


def crop_start(width: int, tss_index: int, length: int) -> tuple[int, int]:
    """(0-based start in the stored window, 0-based TSS index in the crop) of an unshifted
    crop of ``length`` bases."""
    if not 0 < length <= width:
        raise ValueError(f"crop length {length} must be in 1..{width} (the stored window)")
    tss = length // 2 if tss_index == width // 2 else length - 1 - length // 2
    return tss_index - tss, tss


def crop(seq: np.ndarray, tss_index: int, flank: int, length: int | None = None,
         shift: int = 0, reverse: bool = False, fill: str = "flank") -> tuple[np.ndarray, int]:
    """Crop a stored window (2, W) uint8 around its TSS: shifted by ``shift`` (the window's
    bases move right), N beyond the stored window (``fill="flank"``) or beyond the unshifted
    crop (``fill="N"``), then reverse-complemented with ``reverse``.

    Returns (window (2, n) uint8, a new array; its 0-based TSS index).
    """
    seq = np.asarray(seq)
    if seq.ndim != 2 or seq.shape[0] != 2 or seq.dtype != np.uint8:
        raise ValueError(f"seq must be uint8 of shape (2, W), got {seq.dtype} {seq.shape}")
    if fill not in ("flank", "N"):
        raise ValueError(f"fill must be 'flank' or 'N', got {fill!r}")
    width = seq.shape[1]
    n = width - 2 * flank if length is None else length
    base, tss = crop_start(width, tss_index, n)
    lo, hi = (0, width) if fill == "flank" else (base, base + n)
    start = base - shift
    out = np.full((2, n), N_CODE, dtype=np.uint8)
    src_lo, src_hi = max(start, lo, 0), min(start + n, hi, width)
    if src_hi > src_lo:
        out[:, src_lo - start:src_hi - start] = seq[:, src_lo:src_hi]
    tss += shift
    if reverse:
        return reverse_complement(out), n - 1 - tss
    return out, tss
