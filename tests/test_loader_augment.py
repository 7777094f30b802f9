"""loader.augment: crops, shifts and reverse complements of literal windows."""

from __future__ import annotations

import numpy as np
import pytest

from loader.augment import crop, crop_start, draw_augment, reverse_complement_rows
from loader.order import seeded_rng
from prep.encoding import reverse_complement

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


@pytest.mark.parametrize("n", [8, 24, 64, 6])  # one word, an odd word count, even, NumPy path
def test_reverse_complement_rows_kernel_matches_prep(n):
    codes = seeded_rng(0, "codes", n).integers(0, 5, size=(3, n)).astype(np.uint8)
    x = codes.copy()
    reverse_complement_rows(x)
    assert x.tolist() == reverse_complement(codes).tolist()


def test_reverse_complement_rows_literal_and_raises():
    x = np.array([[0, 1, 2, 3, 4, 4, 0, 0]], dtype=np.uint8)  # ACGTNNAA
    reverse_complement_rows(x)
    assert x.tolist() == [[3, 3, 4, 4, 0, 1, 2, 3]]  # TTNNACGT
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        reverse_complement_rows(np.zeros((2, 8), dtype=np.int64))
