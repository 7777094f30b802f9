"""loader.device: one-hot encoding and reverse complements on tensors, literal cases."""

from __future__ import annotations

import pytest
import torch

from loader.device import (
    average_forward_rc,
    reverse_complement,
    reverse_complement_one_hot,
    to_one_hot,
)

CODES = torch.tensor([[0, 1, 2, 3, 4]], dtype=torch.uint8)  # A C G T N


def test_to_one_hot_literal():
    x = to_one_hot(CODES)
    assert x.shape == (1, 5, 4) and x.dtype == torch.float32
    assert x[0].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_to_one_hot_batch_shape_and_dtype():
    seq = torch.randint(0, 5, (3, 2, 128), dtype=torch.uint8)
    x = to_one_hot(seq, torch.bfloat16, "cpu")
    assert x.shape == (3, 2, 128, 4) and x.dtype == torch.bfloat16
    assert x.sum(-1).eq((seq < 4).to(torch.bfloat16)).all()


def test_to_one_hot_raises_on_non_codes():
    with pytest.raises(TypeError, match="uint8"):
        to_one_hot(CODES.float())


def test_reverse_complement_literal_and_twice_identity():
    assert reverse_complement(torch.tensor([0, 0, 1, 4, 3], dtype=torch.uint8)).tolist() == [
        0, 4, 2, 3, 3]
    seq = torch.randint(0, 5, (2, 2, 64), dtype=torch.uint8)
    assert torch.equal(reverse_complement(reverse_complement(seq)), seq)


def test_reverse_complement_one_hot_matches_codes():
    seq = torch.randint(0, 5, (2, 2, 64), dtype=torch.uint8)
    assert torch.equal(reverse_complement_one_hot(to_one_hot(seq)),
                       to_one_hot(reverse_complement(seq)))
    with pytest.raises(ValueError, match="L, 4"):
        reverse_complement_one_hot(torch.zeros(2, 4, 3))


def test_average_forward_rc():
    x = to_one_hot(torch.tensor([[0, 0, 1]], dtype=torch.uint8))  # AAC; RC = GTT

    def count_a(t):  # (1, L, 4) -> (1,)
        return t[..., 0].sum(-1)

    assert average_forward_rc(count_a, x).tolist() == [1.0]  # (2 + 0) / 2

    def per_position_a(t):  # (1, L, 4) -> (1, L)
        return t[..., 0]

    assert average_forward_rc(per_position_a, x, output_flip_dim=-1).tolist() == [[0.5, 0.5, 0.0]]
