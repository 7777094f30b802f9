"""Read a VCF/BCF region once into flat arrays the haplotype kernels walk.

A :class:`VariantBlock` holds every record overlapping a span of one contig, for every selected
sample, in file order. Alleles are ragged (flat codes + offsets); genotypes are one allele index
per haplotype and record, after the unphased-genotype policy has been applied. The VCF is read
once per block (region batch), never once per sample.

Coordinates: ``pos`` is 0-based (VCF POS - 1); a record covers reference ``[pos, pos + ref_len)``.

Genotypes may sit in one file, a list of files or a ``{chrom}`` pattern (1000 Genomes ships one
VCF per chromosome): :class:`VcfSet` says which file holds which contig. Only the selected
samples are parsed (text lines: the numba parser skips unwanted sample columns without
materialising them; BCF: htslib's sample subsetting), and text lines are parsed in chunks, so
peak memory scales with (records read x selected samples), not with the file's sample count.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from hapflow.names import contig_aliases
from prep.contigs import ContigError, resolve_contig
from prep.encoding import ENCODE_TABLE
from prep.kernels import VariantArrays

__all__ = [
    "SYMBOLIC",
    "TRIM_FIRST_BASE",
    "REF_FIRST_LOWER",
    "UNPHASED_POLICIES",
    "VariantBlock",
    "VariantReader",
    "VcfSet",
    "VcfError",
    "check_vcf_file",
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


_TEXT_CHUNK_BYTES = 32 << 20  # text lines parsed per chunk: bounds the transient line buffer
_REF_CHECK_RECORDS = 1 << 16  # records whose REF is checked against one reference fetch


def _index_contigs(path: Path) -> list[str]:
    """Contigs that have records, from the file's .tbi/.csi index (not the header's list)."""
    import pysam

    try:
        with pysam.VariantFile(str(path)) as f:
            if f.index is None:
                raise VcfError(f"VCF {path} has no index; bgzip it and run `tabix -p vcf` "
                               "(or `bcftools index`) so regions can be read")
            return list(f.index.keys())
    except (OSError, ValueError) as err:
        raise VcfError(f"cannot open VCF {path}: {err}") from None


_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
"""The empty BGZF block that ends every complete bgzip file (SAM/BAM spec 4.1.2)."""


def check_vcf_file(path: str | os.PathLike) -> None:
    """Stop early, naming the file and the fix, on a VCF that cannot be read by region.

    Checks that ``path`` exists, ends with the BGZF end-of-file block (a truncated download or
    copy does not), has a ``.tbi``/``.csi`` index and that the index is not older than the data
    (an index left from before the file was rewritten points at the wrong bytes; htslib only
    warns). Costs two ``stat`` calls and a 28-byte read.

    Raises
    ------
    VcfError
    """
    path = Path(path)
    if not path.exists():
        raise VcfError(f"VCF {path} does not exist")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(size - len(_BGZF_EOF), 0))
            tail = fh.read()
    except OSError as err:
        raise VcfError(f"cannot read VCF {path}: {err.strerror or err}") from None
    if tail != _BGZF_EOF:
        raise VcfError(
            f"VCF {path} is truncated or not bgzip-compressed (it lacks the BGZF end-of-file "
            "block): copy or download it again, or compress it with `bgzip` and index it with "
            "`tabix -p vcf`"
        )
    index = [Path(str(path) + ext) for ext in (".tbi", ".csi") if Path(str(path) + ext).exists()]
    if not index:
        raise VcfError(f"VCF {path} has no index; bgzip it and run `tabix -p vcf` "
                       "(or `bcftools index`) so regions can be read")
    if all(i.stat().st_mtime + 1 < path.stat().st_mtime for i in index):
        raise VcfError(
            f"the index {index[0]} is older than its VCF {path}: the file was rewritten after "
            f"it was indexed, so regions would be read from the wrong place. Re-index with "
            f"`tabix -f -p vcf {path}` (or `touch {index[0]}` if you know the index is current)"
        )


def _header(path: Path) -> tuple[list[str], list[str]]:
    """(samples, contig names as cyvcf2 sees them: header contigs, else the index's)."""
    from cyvcf2 import VCF

    if not path.exists():
        raise VcfError(f"VCF {path} does not exist")
    try:
        probe = VCF(str(path), lazy=True)
    except (OSError, Exception) as err:  # cyvcf2 raises plain Exception on bad files
        raise VcfError(f"cannot open VCF {path}: {err}") from None
    try:
        return list(probe.samples), list(probe.seqnames)
    finally:
        probe.close()


class VcfSet:
    """The genotype files of a study and which of them holds which contig.

    Parameters
    ----------
    spec : str, Path, list of them, or VcfSet
        One VCF/BCF (bgzipped, indexed); a list of them, each contig taken from the file whose
        index lists it (a contig in two files is an error); or a pattern with ``{chrom}``
        (``ALL.chr{chrom}.phase3_shapeit2_mvncall_integrated_v5b.20130502.genotypes.vcf.gz``),
        where a contig's file is found by substituting its name or an alias (``chr22``, ``22``).
        Every file must have the same samples; the first file's order is the set's order.

    Attributes
    ----------
    files : list of Path
        Every file of the set (a pattern: every existing file it matches, sorted).
    samples : list of str
        Samples of the first file, in its order.
    """

    def __init__(self, spec):
        if isinstance(spec, VcfSet):
            self.spec, self.pattern, self.files = spec.spec, spec.pattern, list(spec.files)
            self.samples, self._contigs = list(spec.samples), dict(spec._contigs)
            self._seqnames = dict(spec._seqnames)
            return
        if isinstance(spec, (str, os.PathLike)):
            items = [str(spec)]
        elif isinstance(spec, (list, tuple)) and spec:
            items = [str(x) for x in spec]
        else:
            raise VcfError(f"vcf must be a file, a list of files or a {{chrom}} pattern, not "
                           f"{spec!r}")
        self.spec = items[0] if len(items) == 1 else items
        self.pattern: str | None = None
        self._contigs: dict[str, Path] = {}  # list mode: contig (index name) -> file
        if any("{chrom}" in x for x in items):
            if len(items) > 1:
                raise VcfError("give either one {chrom} pattern or a list of files, not both: "
                               f"{items}")
            self.pattern = items[0]
            self.files = self._pattern_files(self.pattern)
        else:
            self.files = [Path(x) for x in items]
            if len(set(self.files)) != len(self.files):
                raise VcfError(f"the vcf list names a file twice: {items}")
        self._seqnames: dict[Path, list[str]] = {}
        self.samples = self._check_samples()
        if self.pattern is None and len(self.files) > 1:
            for path in self.files:
                for contig in _index_contigs(path):
                    if contig in self._contigs:
                        raise VcfError(
                            f"contig {contig} has records in both {self._contigs[contig]} and "
                            f"{path}; list each contig's file once"
                        )
                    self._contigs[contig] = path

    @staticmethod
    def _pattern_files(pattern: str) -> list[Path]:
        head, _, tail = pattern.partition("{chrom}")
        if "{chrom}" in tail:  # several placeholders: all take the same name
            rx = re.compile(re.escape(head) + r"([^/]+?)" + re.escape(tail).replace(
                re.escape("{chrom}"), r"\1") + "$")
        else:
            rx = re.compile(re.escape(head) + r"([^/]+?)" + re.escape(tail) + "$")
        parts = pattern.split("{chrom}")
        found = sorted(Path(p) for p in glob.glob("*".join(glob.escape(x) for x in parts))
                       if rx.match(p))
        if not found:
            raise VcfError(f"no VCF matches the pattern {pattern}: check the folder and that "
                           "{chrom} stands where the chromosome name goes")
        return found

    def _check_samples(self) -> list[str]:
        first = None
        for path in self.files:
            samples, seqnames = _header(path)
            self._seqnames[path] = seqnames
            if first is None:
                first = (path, samples)
                continue
            want, have = set(first[1]), set(samples)
            if want != have:
                missing = [s for s in first[1] if s not in have]
                extra = [s for s in samples if s not in want]
                show = lambda xs: ", ".join(xs[:10]) + (" ..." if len(xs) > 10 else "")  # noqa: E731
                raise VcfError(
                    f"{path} does not have the same samples as {first[0]}: "
                    + (f"{len(missing)} missing ({show(missing)})" if missing else "")
                    + ("; " if missing and extra else "")
                    + (f"{len(extra)} not in {first[0].name} ({show(extra)})" if extra else "")
                    + ". Every file of the set must hold the same samples."
                )
        return list(first[1])

    def describe(self) -> str:
        """The set in words, for logs and errors."""
        if self.pattern is not None:
            return f"{self.pattern} ({len(self.files)} file(s))"
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{len(self.files)} VCFs ({', '.join(p.name for p in self.files[:3])}" + (
            ", ...)" if len(self.files) > 3 else ")")

    def locate(self, chrom: str) -> tuple[Path, str]:
        """The file holding ``chrom`` and the contig's name in it (aliases accepted).

        Raises
        ------
        ContigError
            No file holds the contig (or an alias).
        """
        if self.pattern is not None:
            tried = []
            for alias in contig_aliases(chrom):
                path = Path(self.pattern.replace("{chrom}", alias))
                tried.append(path.name)
                if path.exists():
                    if path not in self._seqnames:  # created after the set was opened
                        self._seqnames[path] = _header(path)[1]
                    return path, resolve_contig(chrom, self._seqnames[path], f"VCF {path}")
            raise ContigError(
                f"contig {chrom!r}: no file of the pattern {self.pattern} exists for it (tried "
                f"{', '.join(tried)}). Check the pattern and that the chromosome's VCF is there."
            )
        if len(self.files) == 1:
            path = self.files[0]
            return path, resolve_contig(chrom, self._seqnames[path], f"VCF {path}")
        name = resolve_contig(chrom, self._contigs, self.describe())
        return self._contigs[name], name

    def resolve(self, chrom: str) -> str:
        """The contig's name in the file that holds it."""
        return self.locate(chrom)[1]


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


class _VcfFile:
    """One open file of a :class:`VcfSet`, reading the selected samples only."""

    def __init__(self, path: Path, samples: list[str], file_samples: list[str]):
        from cyvcf2 import VCF

        self.path = path
        check_vcf_file(path)
        col_of = {s: i for i, s in enumerate(file_samples)}
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
            import pysam

            try:
                self.tabix = pysam.TabixFile(str(path))
            except (OSError, ValueError):
                self.tabix = None

    def close(self) -> None:
        self.vcf.close()
        if self.tabix is not None:
            self.tabix.close()


class VariantReader:
    """Genotypes of selected samples read by region from a :class:`VcfSet` (VCF/BCF, indexed).

    Parameters
    ----------
    vcf : str, Path, list of them, or VcfSet
        One VCF/BCF, a list, or a ``{chrom}`` pattern (see :class:`VcfSet`).
    samples : list of str, optional
        Samples to keep, in this order; ``None`` keeps all, in the (first) VCF's order. Only
        these are parsed.
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
        if missing:
            raise VcfError(
                f"{len(missing)} requested sample(s) are not in {self.vcfs.describe()}: "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. "
                "Check the sample list against `bcftools query -l`."
            )
        if len(set(samples)) != len(samples):
            raise VcfError(f"the sample list for {self.vcfs.describe()} names a sample twice")
        self.samples = samples
        # sample index in the set's order: the key of the 'random' unphased policy
        self._sample_ids = np.array([index[s] for s in samples], dtype=np.uint64)
        self._files: dict[Path, _VcfFile] = {}
        self._open(self.vcfs.files[0])  # fail early on a missing index or unreadable file

    @property
    def path(self) -> Path:
        """The first file of the set (the only one for a single VCF)."""
        return self.vcfs.files[0]

    def _open(self, path: Path) -> _VcfFile:
        handle = self._files.get(path)
        if handle is None:
            file_samples = _header(path)[0] if path != self.vcfs.files[0] else self.vcfs.samples
            handle = self._files[path] = _VcfFile(path, self.samples, file_samples)
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
        f = self._open(path)
        n_s = len(self.samples)
        if f.tabix is not None:
            pos, refs, alts, gt, ph = self._records_text(f, vcf_chrom, start, end)
        else:
            pos, refs, alts, gt, ph = self._records_cyvcf2(f, vcf_chrom, start, end)
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
        n_rec = len(pos)
        _check_sorted(path, vcf_chrom, pos)
        lens = np.array([len(c) for c in codes], dtype=np.int64)
        offsets = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        flat = np.frombuffer(b"".join(codes), dtype=np.uint8)
        n_alt = np.diff(np.append(np.array(first, dtype=np.int64), n_alleles))
        bad_rec = (gt.max(axis=(1, 2)) if n_rec and n_s else np.zeros(n_rec, np.int16)) > n_alt
        if bad_rec.any():
            i = int(np.nonzero(bad_rec)[0][0])
            s = int(np.nonzero((gt[i] > n_alt[i]).any(axis=1))[0][0])
            raise VcfError(
                f"{path}: {vcf_chrom}:{pos[i] + 1} sample {self.samples[s]} has GT allele "
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
            hap_allele=np.zeros((2 * n_s, 0), dtype=np.int16),
            ref_alleles=refs,
            alt_alleles=alts,
        )
        gt = self._apply_unphased_policy(path, block, gt, ph)
        del ph
        if reference is not None and n_rec:
            self._check_ref(path, block, gt, reference, chrom, ref_mismatch)
        # (n_rec, n_s, 2) -> (n_s * 2, n_rec): each haplotype's alleles contiguous for the kernels
        block.hap_allele = np.ascontiguousarray(gt.reshape(n_rec, 2 * n_s).T)
        return block

    def _records_cyvcf2(self, f: _VcfFile, vcf_chrom: str, start: int, end: int):
        """(pos, refs, alts, gt (n_rec, n_s, 2) int16, phased (n_rec, n_s) bool) via cyvcf2.

        Used for BCF and any file pysam cannot read as tabix-indexed text; htslib parses only
        the selected samples (``VCF(samples=...)``).
        """
        n_s = len(self.samples)
        region = f"{vcf_chrom}:{max(start, 0) + 1}-{max(end, 1)}"
        try:
            records = f.vcf(region)
        except Exception as err:
            raise VcfError(f"cannot read {region} from {f.path}: {err}") from None
        pos, refs, alts, gts, phased = [], [], [], [], []
        try:
            records = list(records)
        except Exception as err:  # noqa: BLE001 - cyvcf2 raises plain Exception on bad blocks
            raise VcfError(_corrupt_message(f.path, vcf_chrom, start, end, err)) from None
        for rec in records:
            if not rec.ALT:
                continue  # no ALT allele: nothing to apply
            pos.append(rec.POS - 1)
            refs.append(rec.REF)
            alts.append(list(rec.ALT))
            g = rec.genotype.array()[f.subset_columns]  # (n_s, ploidy + 1) int16
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

    def _records_text(self, f: _VcfFile, vcf_chrom: str, start: int, end: int):
        """Same as :meth:`_records_cyvcf2`, parsing tabix text lines with the numba GT parser.

        The sample columns of about ``_TEXT_CHUNK_BYTES`` of lines are gathered in one byte
        buffer and parsed into (chunk records x selected samples) arrays; the buffer is reused,
        so the text held at any time is bounded whatever the span.
        """
        try:
            lines = f.tabix.fetch(vcf_chrom, max(start, 0), max(end, 1))
        except (ValueError, OSError) as err:
            raise VcfError(f"cannot read {vcf_chrom}:{start + 1}-{end} from {f.path}: "
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
                        f"{f.path}: record at {fields[0]}:{fields[1] if len(fields) > 1 else '?'} "
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
                if len(buf) >= _TEXT_CHUNK_BYTES:
                    self._parse_chunk(f, vcf_chrom, pos, buf, ends, has_gt, gts, phs)
                    buf.clear()
                    ends, has_gt = [], []
        except VcfError:
            raise
        except (OSError, ValueError) as err:  # pysam: "iteration failed (error code -2)"
            raise VcfError(_corrupt_message(f.path, vcf_chrom, start, end, err)) from None
        self._parse_chunk(f, vcf_chrom, pos, buf, ends, has_gt, gts, phs)
        if len(gts) == 1:
            return pos, refs, alts, gts[0], phs[0]
        return pos, refs, alts, np.concatenate(gts), np.concatenate(phs)

    def _parse_chunk(self, f: _VcfFile, vcf_chrom, pos, buf, ends, has_gt, gts, phs) -> None:
        """Parse the sample columns of the last ``len(ends)`` records into ``gts``/``phs``."""
        n_rec, n_s = len(ends), len(self.samples)
        offsets = np.zeros(n_rec + 1, dtype=np.int64)
        offsets[1:] = ends
        gt = np.empty((n_rec, n_s, 2), dtype=np.int16)
        ph = np.empty((n_rec, n_s), dtype=np.bool_)
        view = np.frombuffer(buf, np.uint8) if n_rec else np.zeros(0, np.uint8)
        bad = parse_genotypes(view, offsets, f.columns, gt, ph)
        del view  # a live view would stop the caller from clearing (resizing) buf
        if bad >= 0:
            rec = len(pos) - n_rec + bad
            raise VcfError(f"{f.path}: record {vcf_chrom}:{pos[rec] + 1} has fewer sample "
                           f"columns than the header's {f.n_file_samples} samples")
        no_gt = ~np.array(has_gt, dtype=bool)
        if no_gt.any():  # no GT field: nothing applies (bcftools skips the record)
            gt[no_gt] = 0
            ph[no_gt] = True
        gts.append(gt)
        phs.append(ph)

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
        from prep.encoding import decode

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
