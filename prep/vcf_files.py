"""The genotype files of a study: which file holds which contig, and whether each is usable.

``[haplotypes] vcf`` may be one file, a list of files or a ``{chrom}`` pattern (1000 Genomes
ships one VCF per chromosome): :class:`VcfSet` says which file holds which contig (names matched
through :func:`hapflow.names.contig_aliases`) and checks that every file has the same samples.
:func:`check_vcf_file` stops early on a file that cannot be read by region (missing, truncated,
unindexed, index older than the data). :func:`read_sample_list` reads ``[haplotypes] samples`` /
``samples_file``: the samples to read from these files.

Reading records is :mod:`prep.vcf_records` (one open file) and :mod:`prep.variants` (the
reader the haplotype engine uses).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pysam
from cyvcf2 import VCF

from hapflow.names import contig_aliases
from prep.contigs import ContigError, resolve_contig

__all__ = ["VcfError", "VcfSet", "check_vcf_file", "read_header", "index_contigs",
           "read_sample_list"]


class VcfError(ValueError):
    """The VCF cannot be read or a record is malformed; the message names file and record."""




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
        first = None
        for path in self.files:
            samples, seqnames = read_header(path)
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
