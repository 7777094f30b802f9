"""Read a VCF/BCF region once into flat arrays the haplotype kernels walk.

A :class:`VariantBlock` holds every record overlapping a span of one contig, for every selected
sample, in file order. Alleles are ragged (flat codes + offsets); genotypes are one allele index
per haplotype and record, after the unphased-genotype policy has been applied. The VCF is read
once per block (region batch), never once per sample.

Coordinates: ``pos`` is 0-based (VCF POS - 1); a record covers reference ``[pos, pos + ref_len)``.

:class:`VariantReader` reads blocks from the study's genotype files (:class:`prep.vcf_files.
VcfSet`: one file, a list or a ``{chrom}`` pattern) through :class:`prep.vcf_records.VcfFile`,
which parses only the selected samples, so peak memory scales with (records read x selected
samples), not with the file's sample count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prep.encoding import ENCODE_TABLE, decode
from prep.kernels import VariantArrays
from prep.vcf_files import VcfError, VcfSet, read_header
from prep.vcf_records import VcfFile

__all__ = [
    "SYMBOLIC",
    "TRIM_FIRST_BASE",
    "REF_FIRST_LOWER",
    "UNPHASED_POLICIES",
    "VariantBlock",
    "VariantReader",
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

    def arrays(self) -> VariantArrays:
        """The arrays the kernels walk, as one bundle (:class:`prep.kernels.VariantArrays`)."""
        return VariantArrays(self.pos, self.ref_len, self.first_allele, self.allele_offsets,
                             self.allele_codes, self.allele_flags, self.hap_allele)

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


_REF_CHECK_RECORDS = 1 << 16  # records whose REF is checked against one reference fetch


def _block(chrom: str, pos: list[int], refs: list[str], alts: list[list[str]],
           n_hap: int) -> VariantBlock:
    """A block of records without genotypes yet: the allele table (codes, offsets, flags)."""
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
            fl = SYMBOLIC if sym else 0
            if not sym and is_indel_htslib(ref, a) and ref[0] == a[0]:
                fl |= TRIM_FIRST_BASE
            if ref[:1].islower():
                fl |= REF_FIRST_LOWER
            flags.append(int(fl))
            codes.append(b"" if sym else a.encode("ascii", errors="replace"))
        n_alleles += len(alt)
    lens = np.array([len(c) for c in codes], dtype=np.int64)
    offsets = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.frombuffer(b"".join(codes), dtype=np.uint8)
    return VariantBlock(
        ref_mismatch=np.zeros(len(pos), dtype=bool),
        chrom=chrom,
        pos=np.array(pos, dtype=np.int64),
        ref_len=np.array(ref_len, dtype=np.int64),
        first_allele=np.array(first, dtype=np.int64),
        allele_offsets=offsets,
        allele_codes=ENCODE_TABLE[flat],
        allele_flags=np.array(flags, dtype=np.uint8),
        hap_allele=np.zeros((n_hap, 0), dtype=np.int16),
        ref_alleles=refs,
        alt_alleles=alts,
    )


class VariantReader:
    """Genotypes of selected samples read by region from a :class:`VcfSet` (VCF/BCF, indexed).

    Parameters
    ----------
    vcf : str, Path, list of them, or VcfSet
        One VCF/BCF, a list, or a ``{chrom}`` pattern (see :class:`VcfSet`).
    samples : list of str, optional
        Samples to keep, in this order; ``None`` keeps every sample that is in all files of
        the set, in the first file's order (the others are named in one warning). Only these
        are parsed.
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
        vcf,
        samples: list[str] | None = None,
        *,
        unphased: str = "error",
        seed: int = 0,
    ):
        if unphased not in UNPHASED_POLICIES:
            raise ValueError(
                f"unphased policy {unphased!r} is not one of {', '.join(UNPHASED_POLICIES)}"
            )
        self.unphased = unphased
        self.seed = int(seed)
        self.vcfs = vcf if isinstance(vcf, VcfSet) else VcfSet(vcf)
        all_samples = self.vcfs.samples
        if samples is None:
            samples = all_samples
        samples = list(samples)
        index = {s: i for i, s in enumerate(all_samples)}
        missing = [s for s in samples if s not in index]
        partial = [s for s in missing if s in self.vcfs.partial]
        if partial:
            s = partial[0]
            raise VcfError(
                f"{len(partial)} requested sample(s) are not in every file of "
                f"{self.vcfs.describe()}, e.g. {s} (missing from "
                f"{', '.join(p.name for p in self.vcfs.partial[s])}); a sample is read only "
                "from a set whose every file holds it: leave it out or add it to that file")
        if missing:
            raise VcfError(
                f"{len(missing)} requested sample(s) are not in {self.vcfs.describe()}: "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. "
                "Check the sample list against `bcftools query -l`."
            )
        if len(set(samples)) != len(samples):
            raise VcfError(f"the sample list for {self.vcfs.describe()} names a sample twice")
        self.samples = samples
        self.vcfs.warn_partial()
        # sample index in the set's order: the key of the 'random' unphased policy
        self._sample_ids = np.array([index[s] for s in samples], dtype=np.uint64)
        self._files: dict[Path, VcfFile] = {}
        self._open(self.vcfs.files[0])  # fail early on a missing index or unreadable file

    @property
    def path(self) -> Path:
        """The first file of the set (the only one for a single VCF)."""
        return self.vcfs.files[0]

    def _open(self, path: Path) -> VcfFile:
        handle = self._files.get(path)
        if handle is None:
            file_samples = self.vcfs.file_samples.get(path) or read_header(path)[0]
            handle = self._files[path] = VcfFile(path, self.samples, file_samples)
        return handle

    def locate(self, chrom: str) -> tuple[Path, str]:
        """The file holding ``chrom`` and the contig's name in it (see :meth:`VcfSet.locate`)."""
        return self.vcfs.locate(chrom)

    def resolve(self, chrom: str) -> str:
        """The contig's name in the VCF that holds it (aliases ``chr22``/``22`` accepted)."""
        return self.vcfs.resolve(chrom)

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

        Memory: the block holds 2 bytes per (record, selected haplotype); text lines are
        parsed in chunks of about 32 MB, so unselected samples cost nothing.
        """
        path, vcf_chrom = self.locate(chrom)
        pos, refs, alts, gt, ph = self._open(path).records(vcf_chrom, start, end)
        block = _block(vcf_chrom, pos, refs, alts, 2 * len(self.samples))
        self._check_gt(path, block, gt)
        gt = self._apply_unphased_policy(path, block, gt, ph)
        del ph
        n_rec = block.n_records
        if reference is not None and n_rec:
            self._check_ref(path, block, gt, reference, chrom, ref_mismatch)
        # (n_rec, n_s, 2) -> (n_s * 2, n_rec): each haplotype's alleles contiguous for the kernels
        block.hap_allele = np.ascontiguousarray(gt.reshape(n_rec, 2 * len(self.samples)).T)
        return block

    def _check_gt(self, path: Path, block: VariantBlock, gt: np.ndarray) -> None:
        """Every GT allele index names an allele of its record."""
        n_rec = block.n_records
        n_alt = np.diff(np.append(block.first_allele, block.allele_flags.shape[0]))
        most = gt.max(axis=(1, 2)) if n_rec and gt.shape[1] else np.zeros(n_rec, np.int16)
        bad_rec = most > n_alt
        if bad_rec.any():
            i = int(np.nonzero(bad_rec)[0][0])
            s = int(np.nonzero((gt[i] > n_alt[i]).any(axis=1))[0][0])
            raise VcfError(
                f"{path}: {block.chrom}:{block.pos[i] + 1} sample {self.samples[s]} has GT "
                f"allele {int(gt[i, s].max())} but the record has only {int(n_alt[i])} ALT "
                "allele(s)"
            )

    def _apply_unphased_policy(self, path: Path, block: VariantBlock, gt: np.ndarray,
                               ph: np.ndarray) -> np.ndarray:
        het = (~ph) & (gt[:, :, 0] != gt[:, :, 1])
        block.n_unphased = int(het.sum())
        if not block.n_unphased:
            return gt
        if self.unphased == "error":
            i, s = np.argwhere(het)[0]
            a, b = (int(x) for x in gt[i, s])
            show = lambda x: "." if x < 0 else str(x)  # noqa: E731
            raise UnphasedGenotypeError(
                f"{path}: sample {self.samples[s]} at {block.chrom}:{block.pos[i] + 1} "
                f"({block.ref_alleles[i]}>{','.join(block.alt_alleles[i])}) has the unphased "
                f"heterozygous genotype {show(a)}/{show(b)} ({block.n_unphased} such genotypes "
                "in this region). Phase the VCF (SHAPEIT, Beagle, Eagle) or choose an unphased "
                "policy: 'reference', 'as-phased' or 'random'."
            )
        # gt is this read's own array: resolve in place (a copy would double the peak)
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

    def _check_ref(self, path, block, gt, reference, chrom, ref_mismatch):
        """Compare every REF with the FASTA, ``_REF_CHECK_RECORDS`` records at a time.

        Vectorised; the reference is fetched per chunk of records (their span only), so a
        whole-chromosome preload never holds the chromosome's sequence.
        """
        n = block.n_records
        mismatch = np.zeros(n, dtype=bool)
        for c0 in range(0, n, _REF_CHECK_RECORDS):
            c1 = min(n, c0 + _REF_CHECK_RECORDS)
            pos, lens = block.pos[c0:c1], block.ref_len[c0:c1]
            lo, hi = int(pos.min()), int((pos + lens).max())
            ref_codes = reference.fetch(chrom, lo, hi)
            text = "".join(block.ref_alleles[c0:c1]).encode("ascii", errors="replace")
            want = ENCODE_TABLE[np.frombuffer(text, np.uint8)]
            rec = np.repeat(np.arange(c1 - c0), lens)  # record of each REF base
            first = np.cumsum(lens) - lens  # offset of each record's REF in ``want``
            idx = (pos - lo)[rec] + (np.arange(rec.shape[0]) - first[rec])
            mismatch[c0 + np.unique(rec[ref_codes[idx] != want])] = True
        bad = np.nonzero(mismatch)[0].tolist()
        if not bad:
            return
        if ref_mismatch == "skip":
            gt[bad] = 0
            block.ref_mismatch[bad] = True
            return
        i = bad[0]
        p = int(block.pos[i])
        fa = decode(reference.fetch(chrom, p, p + len(block.ref_alleles[i])))
        raise ReferenceMismatchError(
            f"{path}: REF at {block.chrom}:{block.pos[i] + 1} is {block.ref_alleles[i]} but "
            f"the reference FASTA {reference.path} has {fa} there ({len(bad)} mismatching "
            "record(s) in this region). Use the FASTA the VCF was called against (same build), "
            "or set ref_mismatch = 'skip' to drop such records."
        )

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
