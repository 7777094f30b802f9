"""On the training device: one-hot encoding and reverse-complement averaging.

Batches carry uint8 codes (4x to 8x fewer bytes than one-hot through worker queues and the
host-to-device copy); one-hot happens here, on the device, never in a worker::

    x = to_one_hot(batch["seq"], torch.bfloat16, "cuda")   # (B, 2, L, 4)
    y = average_forward_rc(model, x)                        # eval: forward + RC averaged
"""

from __future__ import annotations

import torch

from prep.encoding import COMPLEMENT

__all__ = ["to_one_hot", "reverse_complement", "reverse_complement_one_hot",
           "average_forward_rc"]

_TABLES: dict[tuple, torch.Tensor] = {}


def _table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, device)
    if key not in _TABLES:
        table = torch.zeros(5, 4, dtype=dtype, device=device)
        table[torch.arange(4), torch.arange(4)] = 1  # A, C, G, T; N (code 4) stays all zero
        _TABLES[key] = table
    return _TABLES[key]


def to_one_hot(seq: torch.Tensor, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """One-hot encode codes on ``device``; N is all zeros.

    Parameters
    ----------
    seq : torch.Tensor, shape (..., L), uint8, values 0..4 (A, C, G, T, N)
        E.g. a batch's ``seq`` of shape (B, 2, L), on the CPU (pinned or not).
    dtype : torch.dtype
        float32, bfloat16, ...
    device : torch.device or str, optional
        Default: ``seq``'s device. The uint8 codes are copied first (non-blocking).

    Returns
    -------
    torch.Tensor, shape (..., L, 4), ``dtype``, on ``device``; channels A, C, G, T.

    Raises
    ------
    TypeError
        ``seq`` is not a uint8 tensor.
    """
    if not isinstance(seq, torch.Tensor) or seq.dtype != torch.uint8:
        raise TypeError(f"seq must be a uint8 tensor of codes, got {getattr(seq, 'dtype', seq)}")
    device = seq.device if device is None else torch.device(device)
    codes = seq.to(device, non_blocking=True).to(torch.int32)
    return torch.nn.functional.embedding(codes, _table(dtype, device))


_COMPLEMENT = torch.from_numpy(COMPLEMENT)  # prep's table, (5,) uint8, sharing its memory


def reverse_complement(seq: torch.Tensor) -> torch.Tensor:
    """Reverse complement codes along the last axis.

    Parameters
    ----------
    seq : torch.Tensor, shape (..., L), uint8, values 0..4

    Returns
    -------
    torch.Tensor, shape (..., L), uint8, a new tensor on ``seq``'s device
    """
    if seq.dtype != torch.uint8:
        raise TypeError(f"seq must be uint8 codes, got {seq.dtype}")
    return _COMPLEMENT.to(seq.device)[seq.flip(-1).long()]


def reverse_complement_one_hot(x: torch.Tensor) -> torch.Tensor:
    """Reverse complement a one-hot tensor of shape (..., L, 4) (channels A, C, G, T)."""
    if x.shape[-1] != 4:
        raise ValueError(f"x must have shape (..., L, 4), got {tuple(x.shape)}")
    return x.flip(-2).flip(-1)


def average_forward_rc(fn, x: torch.Tensor, output_flip_dim: int | None = None) -> torch.Tensor:
    """Average ``fn`` over a one-hot input and its reverse complement.

    Parameters
    ----------
    fn : callable
        Maps x to predictions.
    x : torch.Tensor, shape (..., L, 4)
    output_flip_dim : int, optional
        Position axis of the output (e.g. Enformer's bins) to flip back before averaging;
        None for per-sequence outputs.

    Returns
    -------
    torch.Tensor
        ``(fn(x) + fn(rc(x))) / 2``.
    """
    forward = fn(x)
    backward = fn(reverse_complement_one_hot(x))
    if output_flip_dim is not None:
        backward = backward.flip(output_flip_dim)
    return (forward + backward) / 2
