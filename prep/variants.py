"""Read a VCF/BCF region once into flat arrays the haplotype kernels walk.

A :class:`VariantBlock` holds every record overlapping a span of one contig, for every selected
sample, in file order. Alleles are ragged (flat codes + offsets); genotypes are one allele index
per haplotype and record, after the unphased-genotype policy has been applied. The VCF is read
once per block (region batch), never once per sample.

Coordinates: ``pos`` is 0-based (VCF POS - 1); a record covers reference ``[pos, pos + ref_len)``,
``ref_len`` being htslib's ``rlen`` (``INFO/END - POS + 1`` when END >= POS, else len(REF)).

Symbolic alleles, as ``bcftools consensus`` (1.16) treats them:

* ``<DEL>`` (any case) is an ordinary deletion allele: the record's REF span is ``[POS - 1,
  END)`` (0-based; ``END`` from INFO, SVLEN is ignored as htslib 1.16 ignores it; without END, or
  with END < POS, the span is REF's own length), its ALT is the one anchor base at POS -- the
  FASTA's base, which bcftools keeps whatever REF says -- so the bases ``POS + 1 .. END``
  (1-based) are removed. It carries :data:`TRIM_FIRST_BASE` when it removes at least one base
  (bcftools' ``trim_beg``: it may start on the last REF base of the previous record, keeping the
  base already written there) and :data:`SYMBOLIC_DEL`, which the kernels ignore.
* every other symbolic allele (``<INS>``, ``<DUP>``, ``<CN0>``, ``<DEL:ME:ALU>``, ``<*>``,
  ``<NON_REF>``, ``*``, breakends such as ``G]1:10]``) is :data:`SYMBOLIC`: never applied,
  counted. bcftools stops with an error at most of these and writes breakends and ``*``
  literally; a carried ``<*>``/``<NON_REF>`` (a gVCF reference block) it does not apply either,
  but it then skips later records starting inside the block, which hapflow does not.
* a record whose ALT alleles are all symbolic (``<DEL>`` included) is never checked against the
  FASTA, as bcftools never checks it; any other record is, over REF's own bases, and a REF span
  (END) longer than REF is a mismatch when a selected haplotype carries one of its sequence
  alleles (bcftools refuses to apply such an allele).

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
from prep.vcf_parse import (
    FLAG_REF_LOWER,
    FLAG_SYMBOLIC,
    FLAG_SYMBOLIC_DEL,
    FLAG_TRIM,
    allele_table,
)
from prep.vcf_records import Records, VcfFile

__all__ = [
    "SYMBOLIC",
    "SYMBOLIC_DEL",
    "TRIM_FIRST_BASE",
    "REF_FIRST_LOWER",
    "UNPHASED_POLICIES",
    "VariantBlock",
    "VariantReader",
    "UnphasedGenotypeError",
    "ReferenceMismatchError",
    "is_indel_htslib",
]

SYMBOLIC = np.uint8(FLAG_SYMBOLIC)
"""Allele flag: symbolic (``<INS>``, ``<DUP>``, ``*``, breakends...; not ``<DEL>``); never
applied, counted."""
TRIM_FIRST_BASE = np.uint8(FLAG_TRIM)
"""Allele flag: an indel whose first base equals REF's (bcftools ``trim_beg``)."""
REF_FIRST_LOWER = np.uint8(FLAG_REF_LOWER)
"""Allele flag: the record's REF starts with a lower-case letter (matters to bcftools when an
insertion joins the previous variant on soft-masked sequence)."""
SYMBOLIC_DEL = np.uint8(FLAG_SYMBOLIC_DEL)
"""Allele flag: a symbolic ``<DEL>``, stored as an ordinary deletion (ALT = the anchor base over
the REF span ``[pos, pos + ref_len)``); the kernels ignore this bit."""

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
        Bases of reference the record spans: htslib's ``rlen`` (``END - POS + 1`` when INFO/END
        >= POS, else len(REF)).
    first_allele : np.ndarray, shape (n_rec,), int64
        Row in the allele table of each record's ALT 1 (ALT k is row ``first_allele + k - 1``).
    allele_offsets : np.ndarray, shape (n_alleles + 1,), int64
        ALT allele ``j`` is ``allele_codes[allele_offsets[j]:allele_offsets[j + 1]]``.
    allele_codes : np.ndarray, shape (allele_offsets[-1],), uint8
        ALT alleles as codes 0..4 (a ``<DEL>``: its one anchor base; a skipped symbolic allele:
        no codes).
    allele_flags : np.ndarray, shape (n_alleles,), uint8
        :data:`SYMBOLIC`, :data:`TRIM_FIRST_BASE`, :data:`REF_FIRST_LOWER` and
        :data:`SYMBOLIC_DEL` bits.
    hap_allele : np.ndarray, shape (2 * n_samples, n_rec), int16
        Allele index carried by haplotype ``2 * sample + hap`` (hap 0 = first GT allele):
        0 = REF, k = ALT k, -1 = missing (reference is kept and the miss is counted).
    text, text_off, ref_chars : np.ndarray
        Each record's ``REF<TAB>ALT`` as written (see :class:`prep.vcf_records.Records`);
        :attr:`ref_alleles` and :attr:`alt_alleles` are built from it when first asked for.
    ref_mismatch : np.ndarray, shape (n_rec,), bool
        Records whose REF disagreed with the FASTA and were skipped (``ref_mismatch="skip"``).
    n_unphased : int
        Unphased heterozygous genotypes met (resolved by the unphased policy).
    unphased : np.ndarray, shape (n_rec,), int32, optional
        Per record, the selected samples whose genotype there is unphased and heterozygous
        (None when there is none in the block).
    """

    chrom: str
    pos: np.ndarray
    ref_len: np.ndarray
    first_allele: np.ndarray
    allele_offsets: np.ndarray
    allele_codes: np.ndarray
    allele_flags: np.ndarray
    hap_allele: np.ndarray
    text: np.ndarray
    text_off: np.ndarray
    ref_chars: np.ndarray
    ref_mismatch: np.ndarray | None = None
    n_unphased: int = 0
    unphased: np.ndarray | None = None
    _max_deletion: np.ndarray | None = field(default=None, repr=False)
    _strings: tuple | None = field(default=None, repr=False)

    @property
    def n_records(self) -> int:
        return int(self.pos.shape[0])

    def _texts(self) -> tuple[list[str], list[list[str]]]:
        if self._strings is None:
            whole = bytes(self.text).decode("ascii", errors="replace")
            refs, alts = [], []
            for a, b in zip(self.text_off[:-1].tolist(), self.text_off[1:].tolist(),
                            strict=True):
                ref, _, alt = whole[a:b].partition("\t")
                refs.append(ref)
                alts.append(alt.split(","))
            self._strings = (refs, alts)
        return self._strings

    @property
    def ref_alleles(self) -> list[str]:
        """REF of each record, as written (built on first use)."""
        return self._texts()[0]

    @property
    def alt_alleles(self) -> list[list[str]]:
        """ALT alleles of each record, as written (built on first use)."""
        return self._texts()[1]

    def arrays(self) -> VariantArrays:
        """The arrays the kernels walk, as one bundle (:class:`prep.kernels.VariantArrays`)."""
        return VariantArrays(self.pos, self.ref_len, self.first_allele, self.allele_offsets,
                             self.allele_codes, self.allele_flags, self.hap_allele)

    def max_deletion(self) -> np.ndarray:
        """Upper bound of bases each record can remove: max(0, REF len - shortest ALT len).

        Skipped symbolic alleles do not count (a ``<DEL>`` does). Computed once per block.

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

    def max_insertion(self) -> np.ndarray:
        """Upper bound of bases each record can add: max(0, longest ALT len - REF span).

        Skipped symbolic alleles do not count.

        Returns
        -------
        np.ndarray, shape (n_rec,), int64
        """
        lens = np.diff(self.allele_offsets)
        lens = np.where((self.allele_flags & SYMBOLIC) != 0, 0, lens)
        if not self.n_records:
            return np.zeros(0, dtype=np.int64)
        return np.maximum(0, np.maximum.reduceat(lens, self.first_allele) - self.ref_len)

    def joined(self, keep_from: int, later: VariantBlock) -> VariantBlock:
        """This block's records ``keep_from`` onwards, then every record of ``later`` (read
        from the same file and contig after them): one block, in file order."""
        k, j = keep_from, int(self.first_allele[keep_from]) if keep_from < self.n_records \
            else self.allele_flags.shape[0]
        c, t = int(self.allele_offsets[j]), int(self.text_off[k])
        cat = np.concatenate
        return VariantBlock(
            chrom=self.chrom, pos=cat([self.pos[k:], later.pos]),
            ref_len=cat([self.ref_len[k:], later.ref_len]),
            first_allele=cat([self.first_allele[k:] - j,
                              later.first_allele + (self.allele_flags.shape[0] - j)]),
            allele_offsets=cat([self.allele_offsets[j:-1] - c,
                                later.allele_offsets + (self.allele_offsets[-1] - c)]),
            allele_codes=cat([self.allele_codes[c:], later.allele_codes]),
            allele_flags=cat([self.allele_flags[j:], later.allele_flags]),
            hap_allele=np.ascontiguousarray(cat([self.hap_allele[:, k:], later.hap_allele],
                                                axis=1)),
            text=cat([self.text[t:], later.text]),
            text_off=cat([self.text_off[k:-1] - t, later.text_off + (self.text_off[-1] - t)]),
            ref_chars=cat([self.ref_chars[k:], later.ref_chars]),
            ref_mismatch=cat([self.ref_mismatch[k:], later.ref_mismatch]),
            n_unphased=self.n_unphased + later.n_unphased,
        )


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


def _block(chrom: str, rec: Records, n_hap: int) -> VariantBlock:
    """A block of records without genotypes yet: the allele table (codes, offsets, flags)."""
    n = rec.pos.shape[0]
    n_alleles = n + int(np.count_nonzero(rec.text == 44))  # one more per comma in ALT
    first = np.empty(n, np.int64)
    offsets = np.empty(n_alleles + 1, np.int64)
    codes = np.empty(rec.text.shape[0], np.uint8)
    flags = np.empty(n_alleles, np.uint8)
    _, n_codes = allele_table(rec.text, rec.text_off, rec.ref_chars, rec.span, ENCODE_TABLE,
                              first, offsets, codes, flags)
    return VariantBlock(
        chrom=chrom, pos=rec.pos, ref_len=rec.span, first_allele=first,
        allele_offsets=offsets, allele_codes=codes[:n_codes].copy(), allele_flags=flags,
        hap_allele=np.zeros((n_hap, 0), dtype=np.int16), text=rec.text, text_off=rec.text_off,
        ref_chars=rec.ref_chars, ref_mismatch=np.zeros(n, dtype=bool),
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
            When given, REFs are checked against it and each ``<DEL>`` is anchored on its base
            (see the module docstring); without it a ``<DEL>``'s anchor is REF's first base.
        ref_mismatch : {"error", "skip"}
            A REF that disagrees with the FASTA stops with an error naming the site, or
            (``skip``) the record is dropped and counted.

        Memory: the block holds 2 bytes per (record, selected haplotype); text lines are
        parsed in chunks of about 32 MB, so unselected samples cost nothing.
        """
        path, vcf_chrom = self.locate(chrom)
        rec = self._open(path).records(vcf_chrom, start, end)
        gt, ph = rec.gt, rec.phased
        block = _block(vcf_chrom, rec, 2 * len(self.samples))
        del rec
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
        block.unphased = het.sum(axis=1, dtype=np.int32)
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
        """Check REFs against the FASTA and anchor every ``<DEL>`` on the FASTA's base.

        Records with a sequence ALT allele are checked over REF's own bases (at most the REF
        span); a span (END) longer than REF is a mismatch when a selected haplotype carries
        one of those sequence alleles, which bcftools refuses to apply. Records whose ALT alleles are all symbolic are not checked (bcftools never
        checks them, applied or not). A ``<DEL>``'s ALT code becomes the FASTA's base at POS,
        the base bcftools keeps. Vectorised, ``_REF_CHECK_RECORDS`` records per reference
        fetch (their span only), so a whole-chromosome preload never holds the chromosome.
        """
        n = block.n_records
        flags = block.allele_flags
        literal = ((flags & (SYMBOLIC | SYMBOLIC_DEL)) == 0).astype(np.int64)
        checked = np.add.reduceat(literal, block.first_allele) > 0
        text_len = block.ref_chars
        lens = np.where(checked, np.minimum(text_len, block.ref_len), 0)
        mismatch = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(checked & (block.ref_len > text_len)).tolist():
            carried = gt[i].ravel()  # rare: a sequence ALT in a record whose END passes REF
            carried = carried[carried > 0] + (block.first_allele[i] - 1)
            mismatch[i] = bool(literal[carried].any())
        dels = np.flatnonzero(flags & SYMBOLIC_DEL)  # alleles to anchor
        del_rec = np.searchsorted(block.first_allele, dels, side="right") - 1
        for c0 in range(0, n, _REF_CHECK_RECORDS):
            c1 = min(n, c0 + _REF_CHECK_RECORDS)
            pos, ln = block.pos[c0:c1], lens[c0:c1]
            d0, d1 = np.searchsorted(del_rec, [c0, c1])
            use = (ln > 0) | np.isin(np.arange(c0, c1), del_rec[d0:d1])
            if not use.any():
                continue
            lo, hi = int(pos[use].min()), int((pos + np.maximum(ln, 1))[use].max())
            ref_codes = reference.fetch(chrom, lo, hi)
            anchor = block.allele_offsets[dels[d0:d1]]
            block.allele_codes[anchor] = ref_codes[block.pos[del_rec[d0:d1]] - lo]
            rec = np.repeat(np.arange(c1 - c0), ln)  # record of each checked REF base
            off = np.arange(rec.shape[0]) - (np.cumsum(ln) - ln)[rec]  # base within its REF
            want = ENCODE_TABLE[block.text[block.text_off[c0:c1][rec] + off]]
            differ = ref_codes[(pos - lo)[rec] + off] != want
            mismatch[c0 + np.unique(rec[differ])] = True
        bad = np.nonzero(mismatch)[0].tolist()
        if not bad:
            return
        if ref_mismatch == "skip":
            gt[bad] = 0
            block.ref_mismatch[bad] = True
            return
        raise ReferenceMismatchError(self._mismatch_message(path, block, bad, reference, chrom))

    @staticmethod
    def _mismatch_message(path, block, bad, reference, chrom) -> str:
        i = bad[0]
        p, ref, span = int(block.pos[i]), block.ref_alleles[i], int(block.ref_len[i])
        where = f"{path}: REF at {block.chrom}:{p + 1}"
        if span > len(ref):
            what = (f"{where} is {ref} ({len(ref)} base(s)) but its INFO/END makes the record "
                    f"span {span} bases, which bcftools refuses to apply (only a symbolic <DEL> "
                    "may span more than its REF)")
        else:
            fa = decode(reference.fetch(chrom, p, p + len(ref)))
            what = f"{where} is {ref} but the reference FASTA {reference.path} has {fa} there"
        return (
            f"{what} ({len(bad)} mismatching record(s) in this region). Use the FASTA the VCF was "
            "called against (same build), or set ref_mismatch = 'skip' to drop such records."
        )

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
