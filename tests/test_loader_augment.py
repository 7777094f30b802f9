"""loader.augment's draws, and the NumPy crop oracle (tests/window_oracle.py) the window kernels
are held to, on literal windows."""

from __future__ import annotations

import numpy as np
import pytest

from loader.augment import draw_augment
from loader.order import seeded_rng
from prep.encoding import reverse_complement
from tests.window_oracle import crop, crop_start

N = 4
# W = 10 = L 6 + 2 * flank 2; forward-stored TSS at W // 2 = 5
SEQ = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 0, 1],
                [3, 3, 2, 2, 1, 1, 0, 0, 4, 4]], dtype=np.uint8)


def test_crop_start_forward_and_reverse_stored():
    assert crop_start(10, 5, 6) == (2, 3)  # forward: TSS at L // 2
    assert crop_start(10, 4, 6) == (2, 2)  # stored reverse-complemented: TSS at L - 1 - L // 2
    assert crop_start(10, 5, 4) == (3, 2)


def test_crop_unshifted_is_the_central_window():
    out, tss = crop(SEQ, 5, flank=2)
    assert out.tolist() == [[2, 3, 0, 1, 2, 3], [2, 2, 1, 1, 0, 0]]
    assert tss == 3


@pytest.mark.parametrize("shift, row0, tss", [
    (1, [1, 2, 3, 0, 1, 2], 4),
    (2, [0, 1, 2, 3, 0, 1], 5),
    (-2, [0, 1, 2, 3, 0, 1], 1),
    (3, [N, 0, 1, 2, 3, 0], 6),   # past the stored flank: N
])
def test_crop_shift_moves_tss_and_bases_right_by_shift(shift, row0, tss):
    out, t = crop(SEQ, 5, flank=2, shift=shift)
    assert out[0].tolist() == row0
    assert t == tss


def test_crop_shift_fill_n():
    out, tss = crop(SEQ, 5, flank=2, shift=1, fill="N")
    assert out[0].tolist() == [N, 2, 3, 0, 1, 2]
    assert tss == 4
    out, _ = crop(SEQ, 5, flank=2, shift=-2, fill="N")
    assert out[0].tolist() == [0, 1, 2, 3, N, N]


def test_crop_reverse_is_prep_reverse_complement():
    fwd, tss = crop(SEQ, 5, flank=2, shift=1)
    rev, rtss = crop(SEQ, 5, flank=2, shift=1, reverse=True)
    assert rev.tolist() == reverse_complement(fwd).tolist()
    assert rev[0].tolist() == [1, 2, 3, 0, 1, 2]
    assert rtss == 6 - 1 - tss
    assert reverse_complement(rev).tolist() == fwd.tolist()  # RC twice is the identity


def test_crop_shorter_length_keeps_tss_centred():
    out, tss = crop(SEQ, 5, flank=2, length=4)
    assert out[0].tolist() == [3, 0, 1, 2] and tss == 2


def test_crop_leaves_input_unchanged():
    before = SEQ.copy()
    crop(SEQ, 5, flank=2, shift=2, reverse=True)
    assert (SEQ == before).all()


def test_crop_raises_on_bad_input():
    with pytest.raises(ValueError, match=r"shape \(2, W\)"):
        crop(SEQ[0], 5, flank=2)
    with pytest.raises(ValueError, match="fill"):
        crop(SEQ, 5, flank=2, fill="zeros")
    with pytest.raises(ValueError, match="crop length"):
        crop(SEQ, 5, flank=2, length=11)


def test_draw_augment_ranges_and_probabilities():
    shift, rev = draw_augment(seeded_rng(0, "augment"), 1000, 0.5, 3)
    assert shift.min() == -3 and shift.max() == 3
    assert 400 < rev.sum() < 600
    _, none = draw_augment(seeded_rng(0, "augment"), 50, 0.0, 0)
    _, every = draw_augment(seeded_rng(0, "augment"), 50, 1.0, 0)
    assert not none.any() and every.all()
