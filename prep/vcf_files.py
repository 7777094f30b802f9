"""The genotype files of a study: which file holds which contig, and whether each is usable.

``[haplotypes] vcf`` may be one file, a list of files or a ``{chrom}`` pattern (1000 Genomes
ships one VCF per chromosome): :class:`VcfSet` says which file holds which contig (names matched
through :func:`hapflow.names.contig_aliases`) and which samples are in every file (the study's;
files with different sample sets are allowed, the samples missing from some file are left out
and named once in a warning).
:func:`check_vcf_file` stops early on a file that cannot be read by region (missing, truncated,
unindexed, index older than the data). :func:`read_sample_list` reads ``[haplotypes] samples`` /
``samples_file``: the samples to read from these files.

Reading records is :mod:`prep.vcf_records` (one open file) and :mod:`prep.variants` (the
reader the haplotype engine uses).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path

import pysam
from cyvcf2 import VCF

from hapflow.names import contig_aliases
from prep.contigs import ContigError, resolve_contig

__all__ = ["VcfError", "VcfSet", "check_vcf_file", "read_header", "index_contigs",
           "read_sample_list"]


log = logging.getLogger(__name__)


class VcfError(ValueError):
    """The VCF cannot be read or a record is malformed; the message names file and record."""


_WARNED: set[tuple[str, ...]] = set()
"""File sets whose left-out samples were already named in this process (one warning each)."""


def index_contigs(path: Path) -> list[str]:
    """Contigs that have records, from the file's .tbi/.csi index (not the header's list)."""
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


def read_header(path: Path) -> tuple[list[str], list[str]]:
    """(samples, contig names as cyvcf2 sees them: header contigs, else the index's)."""
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
        Files may hold different samples: the set's samples are those in every file, in the
        first file's order; the others are in :attr:`partial` (:meth:`warn_partial` names them
        once). No sample in every file is an error.

    Attributes
    ----------
    files : list of Path
        Every file of the set (a pattern: every existing file it matches, sorted).
    samples : list of str
        Samples in every file, in the first file's order.
    file_samples : dict of Path to list of str
        Every file's samples, in its header's order.
    partial : dict of str to list of Path
        Samples in some file but not in all: sample -> the files it is missing from (samples
        in the first file's order, then those of later files).
    """

    def __init__(self, spec):
        if isinstance(spec, VcfSet):
            self.spec, self.pattern, self.files = spec.spec, spec.pattern, list(spec.files)
            self.samples, self._contigs = list(spec.samples), dict(spec._contigs)
            self._seqnames = dict(spec._seqnames)
            self.file_samples, self.partial = dict(spec.file_samples), dict(spec.partial)
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
        self.file_samples: dict[Path, list[str]] = {}
        self.partial: dict[str, list[Path]] = {}
        self.samples = self._check_samples()
        if self.pattern is None and len(self.files) > 1:
            for path in self.files:
                for contig in index_contigs(path):
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
        """Read every file's samples; the set's are those in every file (first file's order).

        Raises
        ------
        VcfError
            No sample is in every file.
        """
        for path in self.files:
            samples, seqnames = read_header(path)
            self._seqnames[path] = seqnames
            self.file_samples[path] = samples
        sets = {path: set(samples) for path, samples in self.file_samples.items()}
        everyone = list(dict.fromkeys(s for samples in self.file_samples.values() for s in samples))
        self.partial = {s: [p for p in self.files if s not in sets[p]] for s in everyone
                        if any(s not in sets[p] for p in self.files)}
        common = [s for s in self.file_samples[self.files[0]] if s not in self.partial]
        if not common:
            sizes = ", ".join(f"{p.name}: {len(sets[p])}" for p in self.files[:5])
            raise VcfError(
                f"no sample is in every file of {self.describe()} (samples per file: {sizes}): "
                "the study's individuals are those in every file; check that the files use the "
                "same sample ids (`bcftools query -l FILE`)"
            )
        return common

    def describe_partial(self, limit: int = 3) -> str | None:
        """The samples left out because some file lacks them, in one sentence (None: none)."""
        if not self.partial:
            return None
        per_file = []
        for path in self.files:
            lacking = [s for s, files in self.partial.items() if path in files]
            if lacking:
                more = ", ..." if len(lacking) > limit else ""
                per_file.append(f"{len(lacking)} from {path.name} (e.g. "
                                f"{', '.join(lacking[:limit])}{more})")
        total = len(self.partial) + len(self.samples)
        return (f"{len(self.partial)} of the {total} samples of {self.describe()} are not in "
                f"every file and are left out: missing {'; '.join(per_file)}. The "
                f"{len(self.samples)} samples in every file are used")

    def warn_partial(self, where: str = "") -> None:
        """Log :meth:`describe_partial` as one warning, once per process and file set;
        ``where`` is appended (e.g. where the full list is written)."""
        text = self.describe_partial()
        key = tuple(str(p) for p in self.files)
        if text and key not in _WARNED:
            _WARNED.add(key)
            log.warning("%s%s", text, where)

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
                        self._seqnames[path] = read_header(path)[1]
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


def read_sample_list(samples: list[str] | None, samples_file: str | None) -> list[str] | None:
    """Samples from a list or a one-per-line file (blank lines and '#' comments ignored).

    Returns None when neither is given (every sample of the VCF).
    """
    if samples and samples_file:
        raise ValueError("give samples or samples_file, not both")
    if samples_file:
        path = Path(samples_file)
        if not path.exists():
            raise FileNotFoundError(f"sample file {path} does not exist")
        out = [ln.split()[0] for ln in path.read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
        if not out:
            raise ValueError(f"sample file {path} lists no samples")
        return out
    return list(samples) if samples else None
