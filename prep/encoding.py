"""Sequence codes: A, C, G, T, N = 0, 1, 2, 3, 4 as ``uint8``.

Every haplotype in hapflow is an array of these codes. Lower-case (soft-masked) bases encode
like upper-case ones; every other byte (IUPAC ambiguity codes, ``-``, ...) encodes as N.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ALPHABET",
    "N_CODE",
    "ENCODE_TABLE",
    "COMPLEMENT",
    "encode",
    "decode",
    "one_hot",
    "reverse_complement",
]

ALPHABET = b"ACGTN"
"""The five letters, indexed by code."""

N_CODE = 4
"""The code of N (also of every non-ACGT byte)."""

ENCODE_TABLE = np.full(256, N_CODE, dtype=np.uint8)
"""``ENCODE_TABLE[byte]`` is the code of an ASCII byte, shape (256,), uint8."""
for _code, _letter in enumerate(b"ACGT"):
    ENCODE_TABLE[_letter] = _code
    ENCODE_TABLE[ord(chr(_letter).lower())] = _code

_DECODE_TABLE = np.frombuffer(ALPHABET, dtype=np.uint8)

COMPLEMENT = np.array([3, 2, 1, 0, 4], np.uint8)
"""``COMPLEMENT[code]`` is the code of the complementary base, shape (5,), uint8: A<->T,
C<->G, N stays N. The one reverse-complement table (the loader's NumPy and torch versions are
built from it)."""


def encode(seq: str | bytes | np.ndarray) -> np.ndarray:
    """Encode a DNA string to codes.

    Parameters
    ----------
    seq : str, bytes or uint8 array of ASCII bytes, length L

    Returns
    -------
    np.ndarray, shape (L,), uint8, values 0..4
    """
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    if isinstance(seq, (bytes, bytearray, memoryview)):
        seq = np.frombuffer(seq, dtype=np.uint8)
    seq = np.asarray(seq)
    if seq.dtype != np.uint8:
        raise TypeError(f"encode expects ASCII bytes as uint8, got dtype {seq.dtype}")
    return ENCODE_TABLE[seq]


def decode(codes: np.ndarray) -> str:
    """Decode codes back to an upper-case string.

    Parameters
    ----------
    codes : np.ndarray, shape (L,), uint8, values 0..4

    Raises
    ------
    ValueError
        If a code is above 4.
    """
    codes = np.asarray(codes)
    if codes.size and int(codes.max()) > N_CODE:
        raise ValueError(f"codes must be 0..4 (A, C, G, T, N); found {int(codes.max())}")
    return _DECODE_TABLE[codes].tobytes().decode("ascii")


def one_hot(codes: np.ndarray, dtype=np.float32) -> np.ndarray:
    """One-hot encode codes; N is all zeros.

    Parameters
    ----------
    codes : np.ndarray, shape (..., L), uint8, values 0..4
    dtype : numpy dtype of the result

    Returns
    -------
    np.ndarray, shape (..., L, 4), columns A, C, G, T
    """
    codes = np.asarray(codes)
    eye = np.zeros((5, 4), dtype=dtype)
    eye[np.arange(4), np.arange(4)] = 1
    return eye[codes]


def reverse_complement(codes: np.ndarray) -> np.ndarray:
    """Reverse complement along the last axis (A<->T, C<->G, N stays N).

    Parameters
    ----------
    codes : np.ndarray, shape (..., L), uint8, values 0..4

    Returns
    -------
    np.ndarray, shape (..., L), uint8, a new array
    """
    codes = np.asarray(codes)
    return np.ascontiguousarray(COMPLEMENT[codes[..., ::-1]])
