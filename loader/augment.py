"""Batch windows and their augmentation draws (NumPy, in the loading processes).

A batch window is ``n`` bases around a gene's TSS (:class:`Window`), cut from the gene's
haplotype as a stored window of ``W = L + 2 x flank`` bases would hold it (prep puts the TSS at
index n // 2, or n - 1 - n // 2 for a gene stored reverse-complemented). A shift ``s`` moves the
TSS to ``tss + s``: the window's bases move right by s. Reverse complement flips both haplotypes
together and complements them; the TSS goes to n - 1 - tss. :func:`prep.edits.build_windows`
does all of it, straight from a gene's edits into the batch; this module draws the shifts and
reverse complements (:func:`draw_augment`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Window", "draw_augment"]


@dataclass(frozen=True)
class Window:
    """How the batch windows are cut.

    Attributes
    ----------
    length : int
        n, the window length (``[loader] length``, at most the stored L).
    fill : "flank" or "N"
        Bases shifted in: the real bases within the stored flanks (N beyond them), or N.
    """

    length: int
    fill: str = "flank"


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
