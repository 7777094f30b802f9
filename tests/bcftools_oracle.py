"""The reference implementation hapflow's haplotypes are compared against: samtools + bcftools.

Every helper shells out to the real tools, one ``bcftools consensus`` process per
(sample, haplotype) with many regions in one multi-record FASTA on its stdin:

    samtools faidx REF CHROM:S1-E1 CHROM:S2-E2 ... | bcftools consensus -s SAMPLE -H 1pIu VCF

Coordinates: the Python side speaks 0-based half-open ``[start0, end0)``; samtools speaks
1-based closed ``S-E`` with ``S = start0 + 1``, ``E = end0``. Haplotypes are numbered as
bcftools numbers them, ``hap`` = 1 or 2 (hapflow's ``hap_index`` 0 or 1 plus one).

What bcftools 1.16 does at the edges (checked by hand, and pinned by tests/test_builder_edges.py):
- A record starting before a region is ignored in that region ("ignoring overlapping variant"),
  even when its REF span reaches into it.
- A record running past a region's end is clipped to the region: its REF to the bases inside,
  its ALT to as many bases when the ALT is the longer one ("trimming variant").
- A record starting at or inside the REF span of an applied record is skipped ("overlaps with
  another variant"), except an indel whose REF and ALT share their first base, starting exactly
  at the last REF base of an applied record that was not an insertion.
- Missing alleles (``.``) leave the reference; unphased genotypes give IUPAC codes with
  ``-H 1pIu`` (which read back here as N).
- A symbolic ``<DEL>`` (any case) keeps the base at POS -- the FASTA's, REF is never checked --
  and removes POS + 1 .. INFO/END (htslib's rlen; SVLEN is ignored; END < POS is ignored); it
  may start on the last REF base of the previous record when it removes at least one base.
  ``<*>``/``<NON_REF>`` are not applied; other symbolic ALTs stop bcftools with an error;
  breakends and ``*`` are written literally (pinned by tests/test_builder_symbolic.py).

The chain file (``-c``) is UCSC chain format, one chain per FASTA record:
``chain score tName tSize + tStart tEnd qName qSize + qStart qEnd id`` then ``size dt dq`` lines
and a last ``size``. bcftools 1.16 writes tStart/qStart as the 0-based start of the region on the
chromosome (both the same), tEnd = the region end, qEnd = qStart + the haplotype's length; a gap
opens after the shared first base of an indel (REF[0] == ALT[0]), else at POS itself. Block
sizes of 0 occur (a variant at a region's first or last base). Adjacent gaps merge: when an
insertion joins a deletion at its last base, the chain shows one gap with dt > 0 and dq > 0,
and a TSS deleted by it maps past the inserted bases (hapflow puts it on the first inserted
base), so :func:`fixed_window_from_chain` is not the reference for that one configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pysam
import pytest

__all__ = [
    "Chain",
    "apply_consensus",
    "consensus",
    "consensus_many",
    "contig_length",
    "faidx",
    "fixed_window_from_chain",
    "fixed_windows_from_chain",
    "gt_only_bcf",
    "have_tools",
    "normalize",
    "read_chains",
    "requires_tools",
]

_NON_ACGT = re.compile(r"[^ACGT]")


def have_tools() -> bool:
    """True when both ``bcftools`` and ``samtools`` are on PATH."""
    return shutil.which("bcftools") is not None and shutil.which("samtools") is not None


requires_tools = pytest.mark.skipif(
    not have_tools(), reason="bcftools and samtools must be on PATH"
)
"""Skip marker for tests that run bcftools/samtools (use with ``@pytest.mark.bcftools``)."""


def _require_tools() -> None:
    if not have_tools():
        pytest.skip("bcftools and samtools must be on PATH")


def normalize(seq: str) -> str:
    """Upper-case ``seq`` and turn every non-ACGT letter (IUPAC, lower-case n) into N."""
    return _NON_ACGT.sub("N", seq.upper())


def contig_length(ref: str | os.PathLike, chrom: str) -> int:
    """Length of ``chrom`` according to the FASTA index ``REF.fai``."""
    with open(f"{ref}.fai") as fh:
        for line in fh:
            name, length = line.split("\t")[:2]
            if name == chrom:
                return int(length)
    raise KeyError(f"contig {chrom!r} is not in {ref}.fai")


def _run(cmd: Sequence[str], stdin: str | None = None) -> tuple[str, str]:
    """Run ``cmd``; return (stdout, stderr), raising with stderr on failure."""
    proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout, proc.stderr


def _parse_fasta(text: str) -> list[str]:
    """Sequences of a multi-record FASTA, in order, normalized."""
    seqs: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith(">"):
            seqs.append([])
        elif seqs:
            seqs[-1].append(line.strip())
    return [normalize("".join(parts)) for parts in seqs]


def faidx(ref: str | os.PathLike, chrom: str, starts0: Sequence[int], ends0: Sequence[int]) -> str:
    """``samtools faidx`` text for the 0-based half-open intervals (one FASTA record each).

    Starts below 0 are clipped to 0 (samtools rejects them); ends past the contig are clipped
    by samtools itself. Every interval must keep at least one base after clipping.
    """
    _require_tools()
    regions = []
    for s, e in zip(starts0, ends0, strict=True):
        s = max(0, int(s))
        if int(e) <= s:
            raise ValueError(f"interval [{s}, {e}) of {chrom} is empty after clipping at 0")
        regions.append(f"{chrom}:{s + 1}-{int(e)}")
    return _run(["samtools", "faidx", str(ref), *regions])[0]


def gt_only_bcf(
    vcf: str | os.PathLike, out: str | os.PathLike, samples: Sequence[str] | None = None
) -> Path:
    """Copy ``vcf`` to an indexed BCF keeping only FORMAT/GT (and ``samples``, when given).

    The same records, alleles and INFO (END of symbolic deletions): bcftools builds the same
    haplotypes from it, several times faster than from a VCF with per-sample DS and GL fields.
    """
    _require_tools()
    out = Path(out)
    with pysam.VariantFile(str(vcf)) as vf:
        extra = [f"FORMAT/{tag}" for tag in vf.header.formats if tag != "GT"]
    subset = ["-s", ",".join(samples)] if samples is not None else []
    if extra:
        text = subprocess.run(
            ["bcftools", "view", *subset, "-Ou", str(vcf)], capture_output=True, check=True
        ).stdout
        annotate = ["bcftools", "annotate", "-x", ",".join(extra), "-Ob", "-o", str(out), "-"]
        subprocess.run(annotate, input=text, capture_output=True, check=True)
    else:
        view = ["bcftools", "view", *subset, "-Ob", "-o", str(out), str(vcf)]
        subprocess.run(view, capture_output=True, check=True)
    subprocess.run(["bcftools", "index", "-f", str(out)], capture_output=True, check=True)
    return out


def apply_consensus(
    fasta_text: str,
    vcf: str | os.PathLike,
    sample: str,
    hap: int,
    *,
    chain_path: str | os.PathLike | None = None,
    phasing: str = "pIu",
    stats: dict | None = None,
) -> list[str]:
    """Run one ``bcftools consensus`` over a (multi-record) samtools FASTA.

    Parameters
    ----------
    fasta_text : str, output of :func:`faidx` (headers ``chrom:S-E``)
    vcf : bgzipped, indexed VCF
    sample : str, the sample whose genotypes are applied
    hap : int, 1 or 2 (bcftools numbering)
    chain_path : optional path of the chain file to write
    phasing : ``"pIu"`` (phased allele, IUPAC for unphased GTs) or ``""`` (the hap-th allele
        regardless of phasing, ``-H 1``)
    stats : dict, optional
        Filled with bcftools' own tallies over all records: ``applied`` ("Applied N variants")
        and ``overlap_skipped`` ("The site ... overlaps with another variant, skipping").

    Returns
    -------
    list of str, one normalized haplotype per FASTA record
    """
    _require_tools()
    if hap not in (1, 2):
        raise ValueError(f"hap must be 1 or 2 (bcftools numbering), got {hap}")
    cmd = ["bcftools", "consensus", "-s", sample, "-H", f"{hap}{phasing}"]
    if chain_path is not None:
        cmd += ["-c", str(chain_path)]
    out, err = _run([*cmd, str(vcf)], stdin=fasta_text)
    if stats is not None:
        applied = re.search(r"^Applied (\d+) variants", err, re.M)
        stats["applied"] = int(applied.group(1)) if applied else 0
        stats["overlap_skipped"] = len(re.findall(r"overlaps with another variant, skipping", err))
    return _parse_fasta(out)


def consensus_many(
    ref, vcf, chrom: str, starts0, ends0, sample: str, hap: int, chain_path=None, phasing="pIu"
) -> list[str]:
    """bcftools haplotypes of many 0-based half-open intervals in one process."""
    text = faidx(ref, chrom, starts0, ends0)
    return apply_consensus(text, vcf, sample, hap, chain_path=chain_path, phasing=phasing)


def consensus(
    ref,
    vcf,
    chrom: str,
    start0: int,
    end0: int,
    sample: str,
    hap: int,
    chain_path=None,
    phasing="pIu",
) -> str:
    """bcftools haplotype of one 0-based half-open interval ``[start0, end0)``."""
    return consensus_many(ref, vcf, chrom, [start0], [end0], sample, hap, chain_path, phasing)[0]


@dataclass(frozen=True)
class Chain:
    """One chain of a bcftools ``-c`` file: reference (t) -> haplotype (q) blocks."""

    t_start: int
    """0-based reference start of the region (absolute on the chromosome)."""
    t_end: int
    """0-based exclusive reference end of the region."""
    q_len: int
    """Length of the haplotype emitted for the region."""
    blocks: tuple[tuple[int, int, int], ...]
    """``(size, dt, dq)``: ``size`` aligned bases, then ``dt`` reference-only and ``dq``
    haplotype-only bases (the last block has ``dt = dq = 0``)."""

    def ref_to_hap(self, pos0: int) -> int:
        """Haplotype index (0-based, from the region start) of reference base ``pos0``.

        A base inside a gap (deleted, or replaced by a complex variant) maps to the first
        haplotype base after the gap.
        """
        if not self.t_start <= pos0 < self.t_end:
            raise ValueError(f"{pos0} is outside the chain's [{self.t_start}, {self.t_end})")
        t, q = self.t_start, 0
        for size, dt, dq in self.blocks:
            if pos0 < t + size:
                return q + (pos0 - t)
            t, q = t + size, q + size
            if pos0 < t + dt:
                return q + dq
            t, q = t + dt, q + dq
        raise AssertionError(f"chain blocks end at {t} before {pos0}; blocks={self.blocks}")


def read_chains(path: str | os.PathLike) -> list[Chain]:
    """Parse a bcftools chain file; one :class:`Chain` per FASTA record, in order."""
    chains: list[Chain] = []
    header: list[str] | None = None
    blocks: list[tuple[int, int, int]] = []
    for line in Path(path).read_text().splitlines() + [""]:
        fields = line.split()
        if fields and fields[0] == "chain":
            header, blocks = fields, []
        elif fields and header is not None:
            size, dt, dq = (int(x) for x in fields + ["0", "0"][: 3 - len(fields)])
            blocks.append((size, dt, dq))
        elif header is not None:  # a blank line closes the chain
            t_start, t_end = int(header[5]), int(header[6])
            q_start, q_end = int(header[10]), int(header[11])
            chain = Chain(t_start, t_end, q_end - q_start, tuple(blocks))
            assert sum(b[0] + b[1] for b in blocks) == t_end - t_start, f"bad chain {header}"
            assert sum(b[0] + b[2] for b in blocks) == q_end - q_start, f"bad chain {header}"
            chains.append(chain)
            header = None
    return chains


def fixed_windows_from_chain(
    ref,
    vcf,
    chrom: str,
    tss0s: Sequence[int],
    length: int,
    sample: str,
    hap: int,
    pad: int | None = None,
    workdir: str | os.PathLike | None = None,
) -> list[str]:
    """Fixed-length haplotype windows centred on each TSS, built from bcftools + its chain.

    For each 0-based TSS, bcftools builds the haplotype of the wide interval
    ``[tss0 - length//2 - pad, tss0 + length - length//2 + pad)`` (clipped to the contig) and
    writes a chain; the chain maps the TSS to its haplotype index ``h`` (where reference base
    ``tss0`` is emitted, or the first base after it when it is deleted); the window is
    ``hap[h - length//2 : h - length//2 + length]`` with N where it leaves the haplotype.

    Returns
    -------
    list of str, each of exactly ``length`` letters, the TSS at index ``length // 2``
    """
    pad = length + 2000 if pad is None else pad
    half = length // 2
    n = contig_length(ref, chrom)
    starts = [max(0, t - half - pad) for t in tss0s]
    ends = [min(n, t + length - half + pad) for t in tss0s]
    workdir = Path(workdir) if workdir is not None else Path(os.environ.get("TMPDIR", "/tmp"))
    chain_path = workdir / f"oracle_{os.getpid()}_{sample}_{hap}.chain"
    try:
        seqs = consensus_many(ref, vcf, chrom, starts, ends, sample, hap, chain_path)
        chains = read_chains(chain_path)
    finally:
        chain_path.unlink(missing_ok=True)
    assert len(chains) == len(seqs) == len(tss0s), (len(chains), len(seqs), len(tss0s))
    out = []
    for tss0, seq, chain in zip(tss0s, seqs, chains, strict=True):
        assert chain.q_len == len(seq), (chain, len(seq))
        lo = chain.ref_to_hap(tss0) - half
        out.append("".join(seq[i] if 0 <= i < len(seq) else "N" for i in range(lo, lo + length)))
    return out


def fixed_window_from_chain(
    ref, vcf, chrom: str, tss0: int, length: int, sample: str, hap: int, pad=None, workdir=None
) -> str:
    """One window of :func:`fixed_windows_from_chain`."""
    return fixed_windows_from_chain(ref, vcf, chrom, [tss0], length, sample, hap, pad, workdir)[0]
