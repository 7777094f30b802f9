"""Records of one VCF/BCF region as raw arrays: positions, alleles, genotypes of the selected
samples.

:class:`VcfFile` is one open file of a :class:`prep.vcf_files.VcfSet`, reading only the
selected samples. Text files (bgzip + tabix) are parsed line by line: the sample columns of
about :data:`TEXT_CHUNK_BYTES` of lines are gathered into one byte buffer and parsed by the
numba kernel :func:`parse_genotypes`, which skips unwanted sample columns without materialising
them; BCF (and any file pysam cannot read as tabix text) goes through cyvcf2, whose htslib
parses only the selected samples. Peak memory therefore scales with (records read x selected
samples), not with the file's sample count.

:meth:`VcfFile.records` returns ``(pos, refs, alts, gt, phased)``: 0-based positions (VCF POS -
1), REF strings, ALT lists, GT allele indexes int16 (n_rec, n_samples, 2) (-1 missing; a haploid
call's second allele 0) and phase flags bool (n_rec, n_samples). Records without ALT are
skipped. :mod:`prep.variants` turns them into the kernels' arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pysam
from cyvcf2 import VCF
from numba import njit

from prep.vcf_files import VcfError, check_vcf_file

__all__ = ["TEXT_CHUNK_BYTES", "VcfFile", "parse_genotypes"]

TEXT_CHUNK_BYTES = 32 << 20
"""Text lines parsed per chunk (bytes of sample columns): bounds the transient line buffer."""


@njit(cache=True, nogil=True)
def parse_genotypes(buf, offsets, columns, gt, phased):
    """Parse the GT field of the selected sample columns of every record.

    Unselected columns are skipped byte by byte (up to their tab) and never stored, so the
    output holds only the selected samples whatever the file's sample count.

    Parameters
    ----------
    buf : uint8 (n_bytes,)
        Sample columns of record ``r`` (tab-separated, GT first) in
        ``buf[offsets[r]:offsets[r + 1]]``.
    offsets : int64 (n_rec + 1,)
    columns : int64 (n_file_samples,)
        For each sample column of the file (header order), the output slot it is parsed into
        (``0 <= slot < gt.shape[1]``), or -1 to skip it.
    gt : int16 (n_rec, n_selected, 2), out
        Allele indexes; ``.`` is -1; a haploid genotype's second entry is 0 (reference).
    phased : bool (n_rec, n_selected), out
        Whether the separator before the second allele is ``|`` (haploid: True).

    Returns
    -------
    int
        -1, or the first record with fewer sample columns than ``columns`` has entries.
    """
    n_rec, n_cols = gt.shape[0], columns.shape[0]
    for r in range(n_rec):
        i = offsets[r]
        end = offsets[r + 1]
        for col in range(n_cols):
            if i >= end:
                return r
            s = columns[col]
            if s >= 0:
                k = 0
                val = -1
                ph = True
                gt[r, s, 1] = 0
                while i < end:
                    c = buf[i]
                    if c == 58 or c == 9 or c == 10:  # ':' TAB LF
                        break
                    if 48 <= c <= 57:
                        val = (val if val > 0 else 0) * 10 + (c - 48)
                    elif c == 46:  # '.'
                        val = -1
                    elif c == 124 or c == 47:  # '|' '/'
                        if k < 2:
                            gt[r, s, k] = val
                        k += 1
                        if k == 1:
                            ph = c == 124
                        val = -1
                    i += 1
                if k < 2:
                    gt[r, s, k] = val
                phased[r, s] = ph
            while i < end and buf[i] != 9:
                i += 1
            i += 1
    return -1


def _corrupt_message(path, chrom: str, start: int, end: int, err: Exception) -> str:
    return (f"VCF {path} is truncated or corrupt: reading {chrom}:{max(start, 0) + 1}-{end} "
            f"failed ({err}). Check it with `bgzip -t {path}`, then copy or download it again "
            "and re-index it (`tabix -f -p vcf`)")


def _check_sorted(path, chrom: str, pos: list[int]) -> None:
    """Records of one region must come in position order (bcftools consensus needs it too)."""
    if len(pos) < 2:
        return
    p = np.asarray(pos, dtype=np.int64)
    down = np.nonzero(p[1:] < p[:-1])[0]
    if down.size:
        i = int(down[0])
        raise VcfError(
            f"VCF {path} is not sorted: the record at {chrom}:{p[i + 1] + 1} follows one at "
            f"{chrom}:{p[i] + 1}. Sort it (`bcftools sort -Oz -o sorted.vcf.gz {path}`) and "
            "index the sorted file (`tabix -p vcf sorted.vcf.gz`)"
        )


class VcfFile:
    """One open file of a :class:`prep.vcf_files.VcfSet`, reading the selected samples only.

    Parameters
    ----------
    path : Path
        The VCF/BCF (checked by :func:`prep.vcf_files.check_vcf_file`).
    samples : list of str
        The samples to read, in output order.
    file_samples : list of str
        Every sample of the file, in header order.
    """

    def __init__(self, path: Path, samples: list[str], file_samples: list[str]):
        self.path = path
        self.n_samples = len(samples)
        check_vcf_file(path)
        col_of = {s: i for i, s in enumerate(file_samples)}
        lacking = [s for s in samples if s not in col_of]
        if lacking:
            raise VcfError(f"{path} lacks {len(lacking)} of the samples read from the other "
                           f"files of its set (e.g. {lacking[0]}); a file of the set added "
                           "after the run started must hold the same samples")
        # output slot of every column of the file, -1 for samples not selected (text path)
        self.columns = np.full(len(file_samples), -1, dtype=np.int64)
        self.columns[[col_of[s] for s in samples]] = np.arange(len(samples))
        self.n_file_samples = len(file_samples)
        self.vcf = VCF(str(path), samples=samples, lazy=True, threads=1)
        order = {s: i for i, s in enumerate(self.vcf.samples)}
        # column of each requested sample in cyvcf2's (file-ordered, subset) genotype array
        self.subset_columns = np.array([order[s] for s in samples], dtype=np.int64)
        self.tabix = None
        if path.suffix == ".gz" and os.path.exists(str(path) + ".tbi"):
            try:
                self.tabix = pysam.TabixFile(str(path))
            except (OSError, ValueError):
                self.tabix = None

    def records(self, vcf_chrom: str, start: int, end: int):
        """Records overlapping ``vcf_chrom:[start, end)`` (0-based half-open), in file order.

        ``vcf_chrom`` is the contig as this file spells it. Returns ``(pos, refs, alts, gt,
        phased)`` (see the module docstring).

        Raises
        ------
        VcfError
            An unreadable region (truncated or corrupt file), a record with too few columns,
            records out of position order.
        """
        if self.tabix is not None:
            found = self._records_text(vcf_chrom, start, end)
        else:
            found = self._records_cyvcf2(vcf_chrom, start, end)
        _check_sorted(self.path, vcf_chrom, found[0])
        return found

    def _records_cyvcf2(self, vcf_chrom: str, start: int, end: int):
        """(pos, refs, alts, gt (n_rec, n_s, 2) int16, phased (n_rec, n_s) bool) via cyvcf2.

        Used for BCF and any file pysam cannot read as tabix-indexed text; htslib parses only
        the selected samples (``VCF(samples=...)``).
        """
        n_s = self.n_samples
        region = f"{vcf_chrom}:{max(start, 0) + 1}-{max(end, 1)}"
        try:
            records = self.vcf(region)
        except Exception as err:
            raise VcfError(f"cannot read {region} from {self.path}: {err}") from None
        pos, refs, alts, gts, phased = [], [], [], [], []
        try:
            records = list(records)
        except Exception as err:  # noqa: BLE001 - cyvcf2 raises plain Exception on bad blocks
            raise VcfError(_corrupt_message(self.path, vcf_chrom, start, end, err)) from None
        for rec in records:
            if not rec.ALT:
                continue  # no ALT allele: nothing to apply
            pos.append(rec.POS - 1)
            refs.append(rec.REF)
            alts.append(list(rec.ALT))
            g = rec.genotype.array()[self.subset_columns]  # (n_s, ploidy + 1) int16
            if g.shape[1] >= 3:
                pair = g[:, :2].copy()
            else:  # haploid record
                pair = np.concatenate([g[:, :1], np.zeros((n_s, 1), g.dtype)], axis=1)
            ends_early = pair[:, 1] == -2  # vector end: a haploid sample in a diploid record
            pair[ends_early, 1] = 0  # the second haplotype keeps the reference, as in bcftools
            gts.append(pair.astype(np.int16))
            phased.append((g[:, -1] != 0) | ends_early | (g.shape[1] < 3))
        gt = np.stack(gts) if gts else np.zeros((0, n_s, 2), np.int16)
        ph = np.stack(phased) if phased else np.zeros((0, n_s), bool)
        return pos, refs, alts, gt, ph

    def _records_text(self, vcf_chrom: str, start: int, end: int):
        """Same as :meth:`_records_cyvcf2`, parsing tabix text lines with the numba GT parser.

        The sample columns of about :data:`TEXT_CHUNK_BYTES` of lines are gathered in one byte
        buffer and parsed into (chunk records x selected samples) arrays; the buffer is reused,
        so the text held at any time is bounded whatever the span.
        """
        try:
            lines = self.tabix.fetch(vcf_chrom, max(start, 0), max(end, 1))
        except (ValueError, OSError) as err:
            raise VcfError(f"cannot read {vcf_chrom}:{start + 1}-{end} from {self.path}: "
                           f"{err}") from None
        pos: list[int] = []
        refs: list[str] = []
        alts: list[list[str]] = []
        gts, phs = [], []
        buf = bytearray()
        ends: list[int] = []  # end of each record's sample columns in buf (exclusive, + tab)
        has_gt: list[bool] = []
        try:
            for line in lines:
                fields = line.split("\t", 9)
                if len(fields) < 10:
                    raise VcfError(
                        f"{self.path}: record at {fields[0]}:{fields[1] if len(fields) > 1 else '?'} "
                        f"has {len(fields)} columns; expected 9 plus one per sample")
                if fields[4] == ".":
                    continue
                pos.append(int(fields[1]) - 1)
                refs.append(fields[3])
                alts.append(fields[4].split(","))
                has_gt.append(fields[8] == "GT" or fields[8].startswith("GT:"))
                buf += fields[9].encode("ascii", errors="replace")
                buf += b"\t"
                ends.append(len(buf))
                if len(buf) >= TEXT_CHUNK_BYTES:
                    self._parse_chunk(vcf_chrom, pos, buf, ends, has_gt, gts, phs)
                    buf.clear()
                    ends, has_gt = [], []
        except VcfError:
            raise
        except (OSError, ValueError) as err:  # pysam: "iteration failed (error code -2)"
            raise VcfError(_corrupt_message(self.path, vcf_chrom, start, end, err)) from None
        self._parse_chunk(vcf_chrom, pos, buf, ends, has_gt, gts, phs)
        if len(gts) == 1:
            return pos, refs, alts, gts[0], phs[0]
        return pos, refs, alts, np.concatenate(gts), np.concatenate(phs)

    def _parse_chunk(self, vcf_chrom, pos, buf, ends, has_gt, gts, phs) -> None:
        """Parse the sample columns of the last ``len(ends)`` records into ``gts``/``phs``."""
        n_rec, n_s = len(ends), self.n_samples
        offsets = np.zeros(n_rec + 1, dtype=np.int64)
        offsets[1:] = ends
        gt = np.empty((n_rec, n_s, 2), dtype=np.int16)
        ph = np.empty((n_rec, n_s), dtype=np.bool_)
        view = np.frombuffer(buf, np.uint8) if n_rec else np.zeros(0, np.uint8)
        bad = parse_genotypes(view, offsets, self.columns, gt, ph)
        del view  # a live view would stop the caller from clearing (resizing) buf
        if bad >= 0:
            rec = len(pos) - n_rec + bad
            raise VcfError(f"{self.path}: record {vcf_chrom}:{pos[rec] + 1} has fewer sample "
                           f"columns than the header's {self.n_file_samples} samples")
        no_gt = ~np.array(has_gt, dtype=bool)
        if no_gt.any():  # no GT field: nothing applies (bcftools skips the record)
            gt[no_gt] = 0
            ph[no_gt] = True
        gts.append(gt)
        phs.append(ph)

    def close(self) -> None:
        self.vcf.close()
        if self.tabix is not None:
            self.tabix.close()
