"""The NumPy crop of a stored window: the oracle the window kernels are held to.

A format-2 shard stored each sample as ``seq`` of shape (2, W), W = L + 2 x flank, TSS at
``tss_index`` (W // 2, or W - 1 - W // 2 when stored reverse-complemented); its loader cropped,
shifted and reverse-complemented that window per sample. :func:`crop` is that crop, kept here
(no longer in the loader) so that tests can compare :func:`prep.edits.build_windows` and the
format-3 loader with it byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from prep.builder import HaplotypeBuilder
from prep.encoding import N_CODE, reverse_complement

__all__ = ["crop", "crop_start", "StudyWindows"]


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


class StudyWindows:
    """The windows a study's loader must give, built by :class:`prep.builder.HaplotypeBuilder`
    from the study's own inputs (``shards/meta.json``'s config), one gene at a time.

    ``fixed(rows, length)``: (len(rows), 2, length) uint8, the builder's windows of ``length``
    around each manifest row's TSS (shift 0, forward strand); ``cropped(rows, shift, rc, fill,
    length)``: the :func:`crop` of the stored W-base window a format-2 shard held (minus-strand
    genes stored reverse-complemented with ``[haplotypes] reverse_minus``), shifted and
    reverse-complemented, and each crop's TSS index.
    """

    def __init__(self, shards):
        shards = Path(shards)
        meta = json.loads((shards / "meta.json").read_text())
        self.hap, self.flank = meta["config"]["haplotypes"], meta["config"]["shard"]["flank"]
        self.manifest = pl.read_parquet(shards / "manifest.parquet")
        individuals = sorted(set(self.manifest["individual"].to_list()))
        self.builder = HaplotypeBuilder(self.hap["reference"], self.hap["vcf"], individuals,
                                        snps_only=self.hap["snps_only"],
                                        unphased=self.hap["unphased"],
                                        ref_mismatch=self.hap["ref_mismatch"],
                                        seed=self.hap["seed"])
        self.sample_of = {s: i for i, s in enumerate(self.builder.samples)}

    def _by_gene(self, rows, length: int, minus_stored: bool):
        """(position in rows, the row's window of ``length``, minus) for every row, one gene
        built at a time."""
        rows = np.asarray(rows)
        table = self.manifest[rows.tolist()]
        for gene in table["gene"].unique().to_list():
            at = np.flatnonzero((table["gene"] == gene).to_numpy())
            first = table.row(int(at[0]), named=True)
            minus = first["strand"] == "-" and self.hap["reverse_minus"] and minus_stored
            seqs = self.builder.fixed(first["chrom"], np.array([first["tss"]]), length,
                                      np.array([minus])).seqs[0]
            for i in at:
                yield int(i), seqs[self.sample_of[table["individual"][int(i)]]], minus

    def fixed(self, rows, length: int) -> np.ndarray:
        out = np.empty((len(rows), 2, length), np.uint8)
        for i, seq, _ in self._by_gene(rows, length, minus_stored=False):
            out[i] = seq
        return out

    def cropped(self, rows, shift, rc, fill: str, length: int) -> tuple[np.ndarray, np.ndarray]:
        width = self.hap["length"] + 2 * self.flank
        out = np.empty((len(rows), 2, length), np.uint8)
        tss = np.empty(len(rows), np.int64)
        for i, seq, minus in self._by_gene(rows, width, minus_stored=True):
            index = width - 1 - width // 2 if minus else width // 2
            out[i], tss[i] = crop(seq, index, self.flank, length, int(shift[i]), bool(rc[i]),
                                  fill)
        return out, tss
