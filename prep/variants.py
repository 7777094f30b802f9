"""Read a VCF/BCF region once into flat arrays the haplotype kernels walk.

A :class:`VariantBlock` holds every record overlapping a span of one contig, for every selected
sample, in file order. Alleles are ragged (flat codes + offsets); genotypes are one allele index
per haplotype and record, after the unphased-genotype policy has been applied. The VCF is read
once per block (region batch), never once per sample.

Coordinates: ``pos`` is 0-based (VCF POS - 1); a record covers reference ``[pos, pos + ref_len)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from prep.contigs import resolve_contig
from prep.encoding import ENCODE_TABLE

__all__ = [
    "SYMBOLIC",
    "TRIM_FIRST_BASE",
    "REF_FIRST_LOWER",
    "UNPHASED_POLICIES",
    "VariantBlock",
    "VariantReader",
    "VcfError",
    "UnphasedGenotypeError",
    "ReferenceMismatchError",
    "is_indel_htslib",
]

SYMBOLIC = np.uint8(1)
"""Allele flag: symbolic (``<DEL>``, ``<INS>``, ``*``, breakends); never applied, counted."""
TRIM_FIRST_BASE = np.uint8(2)
"""Allele flag: an indel whose first base equals REF's (bcftools ``trim_beg``)."""
REF_FIRST_LOWER = np.uint8(4)
"""Allele flag: the record's REF starts with a lower-case letter (matters to bcftools when an
insertion joins the previous variant on soft-masked sequence)."""

UNPHASED_POLICIES = ("error", "reference", "as-phased", "random")


class VcfError(ValueError):
    """The VCF cannot be read or a record is malformed; the message names file and record."""


class UnphasedGenotypeError(VcfError):
    """A heterozygous genotype is unphased and the policy is ``error``."""


class ReferenceMismatchError(VcfError):
    """A record's REF disagrees with the reference FASTA."""


def is_indel_htslib(ref: str, alt: str) -> bool:
    """Whether htslib's ``bcf_set_variant_type`` calls ``alt`` an indel (VCF_INDEL) vs ``ref``.

    bcftools consensus keeps the first (padding) base of such alleles untouched and allows them
    to start on the last base of a preceding variant; MNPs and complex replacements are not
    indels in this sense even when they change length.
    """
    r, a = ref.upper(), alt.upper()
    if len(r) == 1 and len(a) == 1:
        return False
    i = 0
    while i < len(r) and i < len(a) and r[i] == a[i]:
        i += 1
    if i == len(r) and i < len(a):
        return a[i] not in "[]"
    if i < len(r) and i == len(a):
        return True
    if i == len(r) and i == len(a):
        return False
    re_, ae = len(r) - 1, len(a) - 1
    while re_ > i and ae > i and r[re_] == a[ae]:
        re_ -= 1
        ae -= 1
    if ae == i:
        return re_ != i and r[re_] == a[ae]
    if re_ == i:
        return r[re_] == a[ae]
    return False


def _is_symbolic(alt: str) -> bool:
    return alt.startswith("<") or alt in ("*", ".") or "[" in alt or "]" in alt


@dataclass
class VariantBlock:
    """All records overlapping one span of one contig, ready for the kernels.

    Attributes
    ----------
    chrom : str
        Contig name as the VCF spells it.
    pos : np.ndarray, shape (n_rec,), int64
        0-based start of each record's REF.
    ref_len : np.ndarray, shape (n_rec,), int64
        Length of REF.
    first_allele : np.ndarray, shape (n_rec,), int64
        Row in the allele table of each record's ALT 1 (ALT k is row ``first_allele + k - 1``).
    allele_offsets : np.ndarray, shape (n_alleles + 1,), int64
        ALT allele ``j`` is ``allele_codes[allele_offsets[j]:allele_offsets[j + 1]]``.
    allele_codes : np.ndarray, shape (allele_offsets[-1],), uint8
        ALT alleles as codes 0..4.
    allele_flags : np.ndarray, shape (n_alleles,), uint8
        :data:`SYMBOLIC`, :data:`TRIM_FIRST_BASE` and :data:`REF_FIRST_LOWER` bits.
    hap_allele : np.ndarray, shape (2 * n_samples, n_rec), int16
        Allele index carried by haplotype ``2 * sample + hap`` (hap 0 = first GT allele):
        0 = REF, k = ALT k, -1 = missing (reference is kept and the miss is counted).
    ref_mismatch : np.ndarray, shape (n_rec,), bool
        Records whose REF disagreed with the FASTA and were skipped (``ref_mismatch="skip"``).
    n_unphased : int
        Unphased heterozygous genotypes met (resolved by the unphased policy).
    """

    chrom: str
    pos: np.ndarray
    ref_len: np.ndarray
    first_allele: np.ndarray
    allele_offsets: np.ndarray
    allele_codes: np.ndarray
    allele_flags: np.ndarray
    hap_allele: np.ndarray
    ref_alleles: list[str] = field(default_factory=list)
    alt_alleles: list[list[str]] = field(default_factory=list)
    ref_mismatch: np.ndarray | None = None
    n_unphased: int = 0
    _max_deletion: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_records(self) -> int:
        return int(self.pos.shape[0])

    def max_deletion(self) -> np.ndarray:
        """Upper bound of bases each record can remove: max(0, REF len - shortest ALT len).

        Symbolic alleles do not count. Computed once per block.

        Returns
        -------
        np.ndarray, shape (n_rec,), int64
        """
        if self._max_deletion is None:
            lens = np.diff(self.allele_offsets)
            lens = np.where((self.allele_flags & SYMBOLIC) != 0, np.iinfo(np.int64).max, lens)
            out = np.zeros(self.n_records, dtype=np.int64)
            if self.n_records:
                shortest = np.minimum.reduceat(lens, self.first_allele)
                out = np.maximum(0, self.ref_len - np.minimum(shortest, self.ref_len))
            self._max_deletion = out
        return self._max_deletion


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised; a deterministic hash of uint64 values."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


@njit(cache=True, nogil=True)
def parse_genotypes(buf, offsets, gt, phased):
    """Parse the GT field of every sample column of every record.

    Parameters
    ----------
    buf : uint8 (n_bytes,)
        Sample columns of record ``r`` (tab-separated, GT first) in
        ``buf[offsets[r]:offsets[r + 1]]``.
    offsets : int64 (n_rec + 1,)
    gt : int16 (n_rec, n_samples, 2), out
        Allele indexes; ``.`` is -1; a haploid genotype's second entry is 0 (reference).
    phased : bool (n_rec, n_samples), out
        Whether the separator before the second allele is ``|`` (haploid: True).

    Returns
    -------
    int
        -1, or the first record with fewer sample columns than ``gt`` has samples.
    """
    n_rec, n_s = gt.shape[0], gt.shape[1]
    for r in range(n_rec):
        i = offsets[r]
        end = offsets[r + 1]
        for s in range(n_s):
            if i >= end:
                return r
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


class VariantReader:
    """An open VCF/BCF (bgzipped and indexed) read by region through cyvcf2.

    Parameters
    ----------
    path : str or Path
        VCF or BCF with a .tbi/.csi index.
    samples : list of str, optional
        Samples to keep, in this order; ``None`` keeps all, in the VCF's order.
    unphased : {"error", "reference", "as-phased", "random"}
        What to do with an unphased heterozygous genotype (``0/1``): stop with an error naming
        sample and site; give both haplotypes the reference allele; take the alleles in the
        order written (as if ``|``); or assign them to haplotypes by a seeded coin flip that
        depends only on (seed, site, sample), so it is the same in every run and every batch.
    seed : int
        Seed of the ``random`` policy.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        samples: list[str] | None = None,
        *,
        unphased: str = "error",
        seed: int = 0,
    ):
        from cyvcf2 import VCF

        self.path = Path(path)
        if unphased not in UNPHASED_POLICIES:
            raise ValueError(
                f"unphased policy {unphased!r} is not one of {', '.join(UNPHASED_POLICIES)}"
            )
        self.unphased = unphased
        self.seed = int(seed)
        if not self.path.exists():
            raise VcfError(f"VCF {self.path} does not exist")
        try:
            probe = VCF(str(self.path), lazy=True)
        except (OSError, Exception) as err:  # cyvcf2 raises plain Exception on bad files
            raise VcfError(f"cannot open VCF {self.path}: {err}") from None
        all_samples = list(probe.samples)
        self.seqnames = list(probe.seqnames)
        probe.close()
        if samples is None:
            samples = all_samples
        samples = list(samples)
        missing = [s for s in samples if s not in set(all_samples)]
        if missing:
            raise VcfError(
                f"{len(missing)} requested sample(s) are not in {self.path}: "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. "
                "Check the sample list against `bcftools query -l`."
            )
        if len(set(samples)) != len(samples):
            raise VcfError(f"the sample list for {self.path} names a sample twice")
        self.samples = samples
        self._vcf = VCF(str(self.path), samples=samples, lazy=True, threads=1)
        order = {s: i for i, s in enumerate(self._vcf.samples)}
        # Column of each requested sample in cyvcf2's (file-ordered) genotype array.
        self._columns = np.array([order[s] for s in samples], dtype=np.int64)
        self._sample_ids = np.array([all_samples.index(s) for s in samples], dtype=np.uint64)
        # Column of each requested sample among all of the file's samples (text fast path).
        self._all_columns = self._sample_ids.astype(np.int64)
        self._n_all = len(all_samples)
        self._tabix = None
        if self.path.suffix == ".gz" and os.path.exists(str(self.path) + ".tbi"):
            import pysam

            try:
                self._tabix = pysam.TabixFile(str(self.path))
            except (OSError, ValueError):
                self._tabix = None
        if not self._has_index():
            raise VcfError(
                f"VCF {self.path} has no index; bgzip it and run `tabix -p vcf` "
                "(or `bcftools index`) so regions can be read"
            )

    def _has_index(self) -> bool:
        p = str(self.path)
        return any(os.path.exists(p + ext) for ext in (".tbi", ".csi"))

    def resolve(self, chrom: str) -> str:
        return resolve_contig(chrom, self.seqnames, f"VCF {self.path}")

    def read(
        self,
        chrom: str,
        start: int,
        end: int,
        reference=None,
        ref_mismatch: str = "error",
    ) -> VariantBlock:
        """All records overlapping ``chrom:[start, end)`` (0-based half-open), in file order.

        Parameters
        ----------
        reference : prep.reference.Reference, optional
            When given, each record's REF is checked against it.
        ref_mismatch : {"error", "skip"}
            A REF that disagrees with the FASTA stops with an error naming the site, or
            (``skip``) the record is dropped and counted.
        """
        vcf_chrom = self.resolve(chrom)
        n_s = len(self.samples)
        if self._tabix is not None:
            pos, refs, alts, gt, ph = self._records_text(vcf_chrom, start, end)
        else:
            pos, refs, alts, gt, ph = self._records_cyvcf2(vcf_chrom, start, end)
        ref_len: list[int] = []
        first: list[int] = []
        codes: list[bytes] = []
        flags: list[int] = []
        n_alleles = 0
        for ref, alt in zip(refs, alts, strict=True):
            ref_len.append(len(ref))
            first.append(n_alleles)
            for a in alt:
                sym = _is_symbolic(a)
                f = SYMBOLIC if sym else 0
                if not sym and is_indel_htslib(ref, a) and ref[0] == a[0]:
                    f |= TRIM_FIRST_BASE
                if ref[:1].islower():
                    f |= REF_FIRST_LOWER
                flags.append(int(f))
                codes.append(b"" if sym else a.encode("ascii", errors="replace"))
            n_alleles += len(alt)
        n_rec = len(pos)
        lens = np.array([len(c) for c in codes], dtype=np.int64)
        offsets = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.frombuffer(b"".join(codes), dtype=np.uint8)
        n_alt = np.diff(np.append(np.array(first, dtype=np.int64), n_alleles))
        bad = gt > n_alt[:, None, None]
        if bad.any():
            i, s, _ = np.argwhere(bad)[0]
            raise VcfError(
                f"{self.path}: {vcf_chrom}:{pos[i] + 1} sample {self.samples[s]} has GT allele "
                f"{int(gt[i, s].max())} but the record has only {int(n_alt[i])} ALT allele(s)"
            )
        block = VariantBlock(
            ref_mismatch=np.zeros(n_rec, dtype=bool),
            chrom=vcf_chrom,
            pos=np.array(pos, dtype=np.int64),
            ref_len=np.array(ref_len, dtype=np.int64),
            first_allele=np.array(first, dtype=np.int64),
            allele_offsets=offsets,
            allele_codes=ENCODE_TABLE[flat],
            allele_flags=np.array(flags, dtype=np.uint8),
            hap_allele=np.zeros((2 * n_s, n_rec), dtype=np.int16),
            ref_alleles=refs,
            alt_alleles=alts,
        )
        gt = self._apply_unphased_policy(block, gt, ph)
        if reference is not None and n_rec:
            self._check_ref(block, gt, reference, chrom, ref_mismatch)
        # (n_rec, n_s, 2) -> (n_s * 2, n_rec): each haplotype's alleles contiguous for the kernels
        block.hap_allele = np.ascontiguousarray(gt.reshape(n_rec, 2 * n_s).T)
        return block

    def _records_cyvcf2(self, vcf_chrom: str, start: int, end: int):
        """(pos, refs, alts, gt (n_rec, n_s, 2) int16, phased (n_rec, n_s) bool) via cyvcf2.

        Used for BCF and any file pysam cannot read as tabix-indexed text.
        """
        n_s = len(self.samples)
        region = f"{vcf_chrom}:{max(start, 0) + 1}-{max(end, 1)}"
        try:
            records = self._vcf(region)
        except Exception as err:
            raise VcfError(f"cannot read {region} from {self.path}: {err}") from None
        pos, refs, alts, gts, phased = [], [], [], [], []
        for rec in records:
            if not rec.ALT:
                continue  # no ALT allele: nothing to apply
            pos.append(rec.POS - 1)
            refs.append(rec.REF)
            alts.append(list(rec.ALT))
            g = rec.genotype.array()[self._columns]  # (n_s, ploidy + 1) int16
            if g.shape[1] >= 3:
                pair = g[:, :2].copy()
            else:  # haploid record
                pair = np.concatenate([g[:, :1], np.zeros((n_s, 1), g.dtype)], axis=1)
            ends_early = pair[:, 1] == -2  # vector end: a haploid sample in a diploid record
            pair[ends_early, 1] = 0  # the second haplotype keeps the reference, as in bcftools
            gts.append(pair)
            phased.append((g[:, -1] != 0) | ends_early | (g.shape[1] < 3))
        gt = np.stack(gts).astype(np.int16) if gts else np.zeros((0, n_s, 2), np.int16)
        ph = np.stack(phased) if phased else np.zeros((0, n_s), bool)
        return pos, refs, alts, gt, ph

    def _records_text(self, vcf_chrom: str, start: int, end: int):
        """Same as :meth:`_records_cyvcf2`, parsing tabix text lines with a numba GT parser."""
        try:
            lines = list(self._tabix.fetch(vcf_chrom, max(start, 0), max(end, 1)))
        except (ValueError, OSError) as err:
            raise VcfError(f"cannot read {vcf_chrom}:{start + 1}-{end} from {self.path}: "
                           f"{err}") from None
        pos, refs, alts, columns, has_gt = [], [], [], [], []
        for line in lines:
            f = line.split("\t", 9)
            if len(f) < 10:
                raise VcfError(f"{self.path}: record at {f[0]}:{f[1] if len(f) > 1 else '?'} has "
                               f"{len(f)} columns; expected 9 plus one per sample")
            if f[4] == ".":
                continue
            pos.append(int(f[1]) - 1)
            refs.append(f[3])
            alts.append(f[4].split(","))
            has_gt.append(f[8] == "GT" or f[8].startswith("GT:"))
            columns.append(f[9])
        n_rec, n_all = len(pos), self._n_all
        buf = np.frombuffer("\t".join(columns).encode("ascii", errors="replace"), np.uint8)
        offsets = np.zeros(n_rec + 1, dtype=np.int64)
        np.cumsum([len(c) + 1 for c in columns], out=offsets[1:])
        gt = np.empty((n_rec, n_all, 2), dtype=np.int16)
        ph = np.empty((n_rec, n_all), dtype=np.bool_)
        bad = parse_genotypes(buf, offsets, gt, ph)
        if bad >= 0:
            raise VcfError(f"{self.path}: record {vcf_chrom}:{pos[bad] + 1} has fewer sample "
                           f"columns than the header's {n_all} samples")
        no_gt = ~np.array(has_gt, dtype=bool)
        if no_gt.any():  # no GT field: nothing applies (bcftools skips the record)
            gt[no_gt] = 0
            ph[no_gt] = True
        return pos, refs, alts, gt[:, self._all_columns], ph[:, self._all_columns]

    def _apply_unphased_policy(self, block: VariantBlock, gt: np.ndarray, ph: np.ndarray):
        het = (~ph) & (gt[:, :, 0] != gt[:, :, 1])
        block.n_unphased = int(het.sum())
        if not block.n_unphased:
            return gt
        if self.unphased == "error":
            i, s = np.argwhere(het)[0]
            a, b = (int(x) for x in gt[i, s])
            show = lambda x: "." if x < 0 else str(x)  # noqa: E731
            raise UnphasedGenotypeError(
                f"{self.path}: sample {self.samples[s]} at {block.chrom}:{block.pos[i] + 1} "
                f"({block.ref_alleles[i]}>{','.join(block.alt_alleles[i])}) has the unphased "
                f"heterozygous genotype {show(a)}/{show(b)} ({block.n_unphased} such genotypes "
                "in this region). Phase the VCF (SHAPEIT, Beagle, Eagle) or choose an unphased "
                "policy: 'reference', 'as-phased' or 'random'."
            )
        gt = gt.copy()
        if self.unphased == "reference":
            gt[het] = 0
        elif self.unphased == "random":
            i, s = np.nonzero(het)
            with np.errstate(over="ignore"):  # wrap-around multiplication is the point
                salt = np.uint64(self.seed) * np.uint64(0x632BE59BD9B4E019)
                key = block.pos[i].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ _mix64(
                    self._sample_ids[s] + salt
                )
            flip = (_mix64(key) & np.uint64(1)).astype(bool)
            pairs = gt[i, s]
            gt[i[flip], s[flip]] = pairs[flip][:, ::-1]
        return gt

    def _check_ref(self, block, gt, reference, chrom, ref_mismatch):
        lo = int(block.pos.min())
        hi = int((block.pos + block.ref_len).max())
        ref_codes = reference.fetch(chrom, lo, hi)
        bad = []
        for i, r in enumerate(block.ref_alleles):
            p = int(block.pos[i]) - lo
            want = ENCODE_TABLE[np.frombuffer(r.encode("ascii", errors="replace"), np.uint8)]
            if not np.array_equal(ref_codes[p : p + len(r)], want):
                bad.append(i)
        if not bad:
            return
        if ref_mismatch == "skip":
            gt[bad] = 0
            block.ref_mismatch[bad] = True
            return
        i = bad[0]
        p = int(block.pos[i]) - lo
        from prep.encoding import decode

        fa = decode(ref_codes[p : p + len(block.ref_alleles[i])])
        raise ReferenceMismatchError(
            f"{self.path}: REF at {block.chrom}:{block.pos[i] + 1} is {block.ref_alleles[i]} but "
            f"the reference FASTA {reference.path} has {fa} there ({len(bad)} mismatching "
            "record(s) in this region). Use the FASTA the VCF was called against (same build), "
            "or set ref_mismatch = 'skip' to drop such records."
        )

    def close(self) -> None:
        self._vcf.close()
        if self._tabix is not None:
            self._tabix.close()
