"""Records of one VCF/BCF region as raw arrays: positions, allele text, genotypes of the
selected samples.

:class:`VcfFile` is one open file of a :class:`prep.vcf_files.VcfSet`, reading only the
selected samples. Text files (bgzip + tabix) are read as whole lines, about
:data:`TEXT_CHUNK_BYTES` at a time, joined into one byte buffer and parsed by the numba kernel
:func:`prep.vcf_parse.parse_lines` (POS, REF, ALT, INFO/END and the GT of the selected sample
columns; unwanted columns are skipped without being materialised): no Python step per record
besides pysam handing the line over. BCF (and any file pysam cannot read as tabix text) goes
through cyvcf2, whose htslib parses only the selected samples. Peak memory therefore scales with
(records read x selected samples), not with the file's sample count.

:meth:`VcfFile.records` returns :class:`Records`: 0-based positions (VCF POS - 1), the reference
bases each record spans (htslib's ``rlen``: ``INFO/END - POS + 1`` when a record has
``END >= POS``, as a symbolic ``<DEL>`` does, else len(REF)), each record's ``REF<TAB>ALT`` text,
GT allele indexes int16 (n_rec, n_samples, 2) (-1 missing; a haploid call's second allele 0) and
phase flags bool (n_rec, n_samples). Records without ALT are skipped. A contig that the header
declares but that has no records reads as no records, through tabix as through cyvcf2.
:mod:`prep.variants` turns them into the kernels' arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pysam
from cyvcf2 import VCF

from prep.vcf_files import VcfError, check_vcf_file
from prep.vcf_parse import BAD_COLUMNS, empty_gt, parse_genotypes, parse_lines

__all__ = ["TEXT_CHUNK_BYTES", "Records", "VcfFile", "parse_genotypes"]

TEXT_CHUNK_BYTES = 4 << 20
"""Text lines parsed per chunk (bytes): the transient text (the lines, then one byte buffer)
is about twice this, whatever the span."""


class Records(NamedTuple):
    """The records of one region of one file, in file order (see the module docstring)."""

    pos: np.ndarray
    """int64 (n_rec,): 0-based start of each record (VCF POS - 1)."""
    span: np.ndarray
    """int64 (n_rec,): reference bases the record spans (htslib's ``rlen``)."""
    text: np.ndarray
    """uint8: record ``i``'s ``REF<TAB>ALT`` as written is ``text[text_off[i]:text_off[i+1]]``."""
    text_off: np.ndarray
    """int64 (n_rec + 1,)."""
    ref_chars: np.ndarray
    """int64 (n_rec,): length of REF (the text before the TAB)."""
    gt: np.ndarray
    """int16 (n_rec, n_samples, 2): allele indexes of the selected samples (-1 missing)."""
    phased: np.ndarray
    """bool (n_rec, n_samples)."""

    @staticmethod
    def empty(n_samples: int) -> Records:
        gt, ph = empty_gt(n_samples)
        z = np.zeros(0, np.int64)
        return Records(z, z, np.zeros(0, np.uint8), np.zeros(1, np.int64), z, gt, ph)

    @staticmethod
    def concat(parts: list[Records], n_samples: int) -> Records:
        """One :class:`Records` of several consecutive ones."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Records.empty(n_samples)
        offs = [parts[0].text_off]
        base = parts[0].text_off[-1]
        for p in parts[1:]:
            offs.append(p.text_off[1:] + base)
            base += p.text_off[-1]
        return Records(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("pos", "span", "text")),
            np.concatenate(offs), np.concatenate([p.ref_chars for p in parts]),
            np.concatenate([p.gt for p in parts]), np.concatenate([p.phased for p in parts]))


def _spans(pos: np.ndarray, ref_chars: np.ndarray, end: np.ndarray) -> np.ndarray:
    """htslib's ``rlen``: ``END - POS + 1`` where END >= POS (``end`` -1: none), else len(REF)."""
    return np.where(end > pos, end - pos, ref_chars)


def _text_of(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """(text, text_off): the byte ranges ``buf[starts[i]:ends[i])`` back to back."""
    lens = ends - starts
    off = np.zeros(lens.shape[0] + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    idx = np.repeat(starts - off[:-1], lens) + np.arange(off[-1], dtype=np.int64)
    return buf[idx], off


def _corrupt_message(path, chrom: str, start: int, end: int, err: Exception) -> str:
    return (f"VCF {path} is truncated or corrupt: reading {chrom}:{max(start, 0) + 1}-{end} "
            f"failed ({err}). Check it with `bgzip -t {path}`, then copy or download it again "
            "and re-index it (`tabix -f -p vcf`)")


def _check_sorted(path, chrom: str, pos: np.ndarray) -> None:
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
        self.tabix_contigs: frozenset[str] = frozenset()
        if path.suffix == ".gz" and os.path.exists(str(path) + ".tbi"):
            try:
                self.tabix = pysam.TabixFile(str(path))
                self.tabix_contigs = frozenset(self.tabix.contigs)
            except (OSError, ValueError):
                self.tabix = None

    def records(self, vcf_chrom: str, start: int, end: int):
        """Records overlapping ``vcf_chrom:[start, end)`` (0-based half-open), in file order.

        ``vcf_chrom`` is the contig as this file spells it. Returns :class:`Records`; a contig
        the header declares without records gives none.

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
        _check_sorted(self.path, vcf_chrom, found.pos)
        return found

    def _records_cyvcf2(self, vcf_chrom: str, start: int, end: int) -> Records:
        """:class:`Records` via cyvcf2 (htslib's ``rlen`` read from the record itself).

        Used for BCF and any file pysam cannot read as tabix-indexed text; htslib parses only
        the selected samples (``VCF(samples=...)``).
        """
        n_s = self.n_samples
        region = f"{vcf_chrom}:{max(start, 0) + 1}-{max(end, 1)}"
        try:
            records = self.vcf(region)
        except Exception as err:
            raise VcfError(f"cannot read {region} from {self.path}: {err}") from None
        pos, span, texts, ref_chars, gts, phased = [], [], [], [], [], []
        try:
            records = list(records)
        except Exception as err:  # noqa: BLE001 - cyvcf2 raises plain Exception on bad blocks
            raise VcfError(_corrupt_message(self.path, vcf_chrom, start, end, err)) from None
        for rec in records:
            if not rec.ALT:
                continue  # no ALT allele: nothing to apply
            pos.append(rec.POS - 1)
            span.append(rec.end - rec.start)
            texts.append(f"{rec.REF}\t{','.join(rec.ALT)}")
            ref_chars.append(len(rec.REF))
            g = rec.genotype.array()[self.subset_columns]  # (n_s, ploidy + 1) int16
            if g.shape[1] >= 3:
                pair = g[:, :2].copy()
            else:  # haploid record
                pair = np.concatenate([g[:, :1], np.zeros((n_s, 1), g.dtype)], axis=1)
            ends_early = pair[:, 1] == -2  # vector end: a haploid sample in a diploid record
            pair[ends_early, 1] = 0  # the second haplotype keeps the reference, as in bcftools
            gts.append(pair.astype(np.int16))
            phased.append((g[:, -1] != 0) | ends_early | (g.shape[1] < 3))
        if not pos:
            return Records.empty(n_s)
        lens = np.array([len(t) for t in texts], np.int64)
        text_off = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(lens, out=text_off[1:])
        text = np.frombuffer("".join(texts).encode("ascii", errors="replace"), np.uint8)
        return Records(np.array(pos, np.int64), np.array(span, np.int64), text, text_off,
                       np.array(ref_chars, np.int64), np.stack(gts), np.stack(phased))

    def _records_text(self, vcf_chrom: str, start: int, end: int) -> Records:
        """Same as :meth:`_records_cyvcf2`, parsing tabix text lines with the numba parser.

        About :data:`TEXT_CHUNK_BYTES` of lines at a time are joined into one byte buffer and
        parsed into (chunk records x selected samples) arrays, so the text held at any time is
        bounded whatever the span.
        """
        if vcf_chrom not in self.tabix_contigs:  # declared in the header, no record indexed
            return Records.empty(self.n_samples)
        try:
            lines = self.tabix.fetch(vcf_chrom, max(start, 0), max(end, 1))
        except (ValueError, OSError) as err:
            raise VcfError(f"cannot read {vcf_chrom}:{start + 1}-{end} from {self.path}: "
                           f"{err}") from None
        parts: list[Records] = []
        chunk: list[str] = []
        size = 0
        try:
            for line in lines:
                chunk.append(line)
                size += len(line)
                if size >= TEXT_CHUNK_BYTES:
                    parts.append(self._parse_chunk(vcf_chrom, chunk))
                    size = 0
        except (OSError, ValueError) as err:  # pysam: "iteration failed (error code -2)"
            raise VcfError(_corrupt_message(self.path, vcf_chrom, start, end, err)) from None
        if chunk:
            parts.append(self._parse_chunk(vcf_chrom, chunk))
        return Records.concat(parts, self.n_samples)

    def _parse_chunk(self, vcf_chrom: str, lines: list[str]) -> Records:
        """Parse whole text lines (no LF) with :func:`prep.vcf_parse.parse_lines`; ``lines``
        is emptied (its text is released once joined)."""
        n, n_s = len(lines), self.n_samples
        lines.append("")  # the join then ends in LF too
        text = "\n".join(lines)
        lines.clear()
        buf = np.frombuffer(text.encode("ascii", errors="replace"), np.uint8)
        del text
        pos, ref_at, alt_at, alt_end, end_value = (np.empty(n, np.int64) for _ in range(5))
        has_gt = np.empty(n, np.bool_)
        gt = np.empty((n, n_s, 2), np.int16)
        ph = np.empty((n, n_s), np.bool_)
        n_rec, bad_at, bad_kind = parse_lines(buf, self.columns, pos, ref_at, alt_at, alt_end,
                                              end_value, has_gt, gt, ph)
        if bad_at >= 0:
            raise self._bad_line(buf, bad_at, bad_kind)
        pos, ref_at, alt_at, alt_end = pos[:n_rec], ref_at[:n_rec], alt_at[:n_rec], alt_end[:n_rec]
        text, text_off = _text_of(buf, ref_at, alt_end)
        ref_chars = alt_at - 1 - ref_at
        if n_rec < n:  # records without ALT were dropped: do not keep the unused rows alive
            gt, ph = gt[:n_rec].copy(), ph[:n_rec].copy()
        return Records(pos, _spans(pos, ref_chars, end_value[:n_rec]), text, text_off,
                       ref_chars, gt, ph)

    def _bad_line(self, buf: np.ndarray, at: int, kind: int) -> VcfError:
        fields = bytes(buf[at : at + 4096]).split(b"\n", 1)[0].decode("ascii", "replace")
        fields = fields.split("\t")
        if kind == BAD_COLUMNS:
            return VcfError(
                f"{self.path}: record at {fields[0]}:{fields[1] if len(fields) > 1 else '?'} "
                f"has {len(fields)} columns; expected 9 plus one per sample")
        return VcfError(f"{self.path}: record {fields[0]}:{fields[1]} has fewer sample "
                        f"columns than the header's {self.n_file_samples} samples")

    def close(self) -> None:
        self.vcf.close()
        if self.tabix is not None:
            self.tabix.close()
