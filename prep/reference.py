"""Reference genome access: FASTA (plain or bgzip, indexed) through pysam, as uint8 codes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pysam

from prep.contigs import resolve_contig
from prep.encoding import ENCODE_TABLE, N_CODE

__all__ = ["Reference", "ReferenceError", "CACHE_BASES"]

CACHE_BASES = 1 << 20
"""Bases of the last span read that a :class:`Reference` keeps (2 bytes each)."""
_GAP = 1 << 16
"""A request starting at most this far past the kept span extends it (the gap is read too)."""


class ReferenceError(ValueError):
    """The reference FASTA cannot be opened or read."""


class Reference:
    """A reference FASTA served as A, C, G, T, N codes (soft-masked lower case is upper case).

    Parameters
    ----------
    path : str or Path
        FASTA, plain or bgzip-compressed, with a ``.fai`` index (and ``.gzi`` for bgzip); an
        index missing next to a plain FASTA is built by pysam.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise ReferenceError(f"reference FASTA {self.path} does not exist")
        try:
            self._fasta = pysam.FastaFile(str(self.path))
        except (OSError, ValueError) as err:
            hint = ""
            if str(self.path).endswith(".gz"):
                hint = (
                    " If it is plain gzip, recompress it with `bgzip` (htslib) and index it "
                    "with `samtools faidx`."
                )
            raise ReferenceError(f"cannot open reference FASTA {self.path}: {err}.{hint}") from None
        self.lengths = dict(zip(self._fasta.references, self._fasta.lengths, strict=True))
        self._cached: tuple | None = None  # (contig, start, end, codes, lower)

    @property
    def contigs(self) -> list[str]:
        """Contig names as the FASTA spells them."""
        return list(self.lengths)

    def resolve(self, chrom: str) -> str:
        """The FASTA's name for ``chrom`` (aliases ``chr22``/``22``, ``chrM``/``MT``)."""
        return resolve_contig(chrom, self.lengths, f"reference FASTA {self.path}")

    def length(self, chrom: str) -> int:
        """Length in bases of ``chrom``."""
        return self.lengths[self.resolve(chrom)]

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Reference codes of ``chrom:[start, end)``, 0-based half-open.

        Positions before 0 or past the contig end are N (code 4), so the result always has
        ``end - start`` entries.

        Returns
        -------
        np.ndarray, shape (end - start,), uint8, values 0..4
        """
        return self.fetch_with_case(chrom, start, end)[0]

    def fetch_with_case(self, chrom: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`fetch`, plus where the FASTA writes the base in lower case.

        The last span read (at most :data:`CACHE_BASES` bases, extended forward when a request
        starts inside it, or just past it, and ends beyond it) is kept, so neighbouring requests -- the REF check
        and the windows of one batch of genes, the next batch along the chromosome -- read and
        decode each base once. The arrays returned are the caller's own.

        Returns
        -------
        (np.ndarray, np.ndarray)
            Codes, shape (end - start,), uint8 0..4; and a mask of the same shape, uint8,
            1 for lower-case (soft-masked) bases.
        """
        name = self.resolve(chrom)
        c = self._cached
        if c is None or c[0] != name or not c[1] <= start <= c[2] + _GAP:
            c = (name, start, end, *self._read(name, start, end))
        elif end > c[2]:  # extend forward, keeping at most CACHE_BASES (or this request)
            codes, lower = self._read(name, c[2], end)
            keep = max(c[1], min(start, end - CACHE_BASES))
            c = (name, keep, end, np.concatenate([c[3][keep - c[1]:], codes]),
                 np.concatenate([c[4][keep - c[1]:], lower]))
        self._cached = c
        lo, hi = start - c[1], max(end, start) - c[1]
        return c[3][lo:hi].copy(), c[4][lo:hi].copy()

    def _read(self, name: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(codes, lower) of ``name:[start, end)`` read from the file (N outside the contig)."""
        n = end - start
        out = np.full(max(n, 0), N_CODE, dtype=np.uint8)
        lower = np.zeros(max(n, 0), dtype=np.uint8)
        lo, hi = max(start, 0), min(end, self.lengths[name])
        if hi > lo:
            try:
                raw = self._fasta.fetch(name, lo, hi).encode("ascii")
            except (OSError, ValueError, UnicodeEncodeError) as err:  # htslib: "failure when
                # retrieving sequence on '22'" for a corrupt or truncated bgzip block
                raise ReferenceError(
                    f"reference FASTA {self.path}: cannot read {name}:{lo + 1}-{hi} ({err}); the "
                    "file is corrupt or truncated, or its .fai/.gzi index belongs to another "
                    "file: re-download it, recompress with `bgzip` and re-index with "
                    "`samtools faidx`"
                ) from None
            if len(raw) != hi - lo:
                raise ReferenceError(
                    f"{self.path}: read {len(raw)} bases for {name}:{lo + 1}-{hi}, expected "
                    f"{hi - lo}; the .fai index may be stale (re-run `samtools faidx`)"
                )
            letters = np.frombuffer(raw, dtype=np.uint8)
            out[lo - start : hi - start] = ENCODE_TABLE[letters]
            lower[lo - start : hi - start] = (letters >= ord("a")) & (letters <= ord("z"))
        return out, lower

    def clear_cache(self) -> None:
        """Forget the span kept from the last read."""
        self._cached = None

    def close(self) -> None:
        self._cached = None
        self._fasta.close()
