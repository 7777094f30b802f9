"""prep.builder against bcftools consensus on real 1000 Genomes data (data/chr22_demo, chr20_extra).

Ragged mode must equal ``samtools faidx | bcftools consensus -H {1,2}pIu`` byte for byte for
every gene window that holds variants; fixed mode must equal the window cut from a wider
bcftools haplotype around the TSS's haplotype position, read from bcftools' own chain file.

    pytest -m bcftools tests/test_builder_bcftools.py

(The last test, the default unphased policy on the real unphased VCF, needs no bcftools.)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pysam
import pytest
from bcftools_oracle import (
    apply_consensus,
    faidx,
    fixed_windows_from_chain,
    gt_only_bcf,
    requires_tools,
)

from prep.builder import HaplotypeBuilder
from prep.encoding import decode
from prep.variants import UnphasedGenotypeError

DATA = Path(__file__).resolve().parents[1] / "data"
WINDOW = 49_152
HALF = WINDOW // 2

CHR22 = DATA / "chr22_demo"
CHR22_FA = CHR22 / "GRCh37_22_padded_realonly_20000001-21000000.fa.gz"
CHR22_VCF = CHR22 / "beagle_test.chr22_20.0-20.1Mb.phased.vcf.gz"
CHR22_TSS = CHR22 / "tss_chr22_20-21Mb_GRCh37.tsv"

CHR20 = DATA / "chr20_extra"
CHR20_FA = CHR20 / "GRCh37_20_padded_realonly_1000001-2000000.fa.gz"
CHR20_VCF = CHR20 / "shapeit4_reference.chr20_1-2Mb.phased300.vcf.gz"
CHR20_UNPHASED_VCF = CHR20 / "shapeit4_unphased.chr20_1-2Mb.203.vcf.gz"
CHR20_TSS = CHR20 / "tss_chr20_1-2Mb_GRCh37_from_EnformerAssessment.tsv"
CHR20_REAL = (1_000_000, 2_000_000)  # 0-based half-open span of real sequence and variants

N_CHR20_SAMPLES = 40  # bcftools over all 300 samples x 36 genes takes ~70 s; every 7th sample
N_THREADS = max(2, os.cpu_count() or 2)


# ------------------------------------------------------------------ inputs
def _chr22_genes() -> tuple[str, np.ndarray]:
    """(TSS-table contig name, 0-based TSSs) of the chr22 genes whose window holds variants."""
    rows = [line.rstrip("\n").split("\t") for line in CHR22_TSS.open() if line[0] != "#"]
    chroms = {r[0] for r in rows}
    assert chroms == {"chr22"}, chroms  # the VCF and FASTA say "22": the engine must alias
    tss = np.array([int(r[6]) - 1 for r in rows], dtype=np.int64)
    return "chr22", tss[_has_variants(CHR22_VCF, "22", tss)]


def _chr20_genes() -> tuple[str, np.ndarray]:
    """(TSS-table contig name, 0-based TSSs) of the chr20 genes whose window is real sequence."""
    lines = CHR20_TSS.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert {r["chr_hg19"] for r in rows} == {"chr20"}
    tss = np.array([int(float(r["tss_hg19"])) - 1 for r in rows], dtype=np.int64)
    inside = (tss - HALF >= CHR20_REAL[0]) & (tss + HALF <= CHR20_REAL[1])
    return "chr20", tss[inside]


def _has_variants(vcf: Path, chrom: str, tss: np.ndarray) -> np.ndarray:
    with pysam.VariantFile(str(vcf)) as vf:
        return np.array([any(True for _ in vf.fetch(chrom, t - HALF, t + HALF)) for t in tss])


def _unphased_hets(vcf: Path, chrom: str, starts, ends, samples: list[str]) -> int:
    """Unphased heterozygous genotypes of ``samples`` in the intervals (pysam's count)."""
    n = 0
    with pysam.VariantFile(str(vcf)) as vf:
        vf.subset_samples(samples)
        for lo, hi in zip(starts, ends, strict=True):
            for rec in vf.fetch(chrom, int(lo), int(hi)):
                for call in rec.samples.values():
                    n += (not call.phased) and len(set(call["GT"])) > 1
    return n


def _vcf_samples(vcf: Path) -> list[str]:
    with pysam.VariantFile(str(vcf)) as vf:
        return list(vf.header.samples)


# ------------------------------------------------------------------ comparison
def _describe(got: str, want: str) -> str:
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    i = min(len(got), len(want)) if i is None else i
    return (
        f"lengths {len(got)} (hapflow) vs {len(want)} (bcftools), first difference at {i}: "
        f"hapflow ...{got[max(0, i - 10) : i + 10]}... bcftools ...{want[max(0, i - 10) : i + 10]}..."
    )


def _bcftools_all(fasta_text: str, vcf: Path, samples: list[str], phasing: str = "pIu"):
    """{(sample_index, hap_index): (haplotypes per region, stats)} from parallel bcftools runs."""

    def one(job):
        s, h = job
        stats: dict = {}
        seqs = apply_consensus(fasta_text, vcf, samples[s], h + 1, phasing=phasing, stats=stats)
        return job, (seqs, stats)

    jobs = [(s, h) for s in range(len(samples)) for h in (0, 1)]
    with ThreadPoolExecutor(N_THREADS) as pool:
        return dict(pool.map(one, jobs))


def _assert_ragged_matches(rag, oracle, labels: list[str], samples: list[str]):
    bad = []
    for (s, h), (seqs, stats) in oracle.items():
        for g, want in enumerate(seqs):
            got = decode(rag.get(g, s, h))
            if got != want:
                bad.append(f"{labels[g]} {samples[s]} hap{h}: {_describe(got, want)}")
        applied = int(rag.counts["applied"][:, s, h].sum())
        skipped = int(rag.counts["overlap_skipped"][:, s, h].sum())
        if (applied, skipped) != (stats["applied"], stats["overlap_skipped"]):
            bad.append(
                f"{samples[s]} hap{h}: counts applied/overlap_skipped {applied}/{skipped}, "
                f"bcftools {stats['applied']}/{stats['overlap_skipped']}"
            )
    assert not bad, f"{len(bad)} mismatches, e.g.\n" + "\n".join(bad[:10])


# ------------------------------------------------------------------ tests
@pytest.mark.bcftools
@requires_tools
def test_ragged_chr22_all_samples_match_bcftools(tmp_path):
    chrom, tss = _chr22_genes()
    assert len(tss) == 10  # ARVCF ... ZDHHC8: the genes near the 20.0-20.1 Mb variants
    starts, ends = tss - HALF, tss + HALF
    builder = HaplotypeBuilder(CHR22_FA, CHR22_VCF)
    rag = builder.ragged(chrom, starts, ends)
    samples = builder.samples
    assert len(samples) == 191

    text = faidx(CHR22_FA, "22", starts, ends)
    oracle = _bcftools_all(text, gt_only_bcf(CHR22_VCF, tmp_path / "gt.bcf"), samples)
    assert rag.lengths().min() != rag.lengths().max()  # indels were applied
    _assert_ragged_matches(rag, oracle, [f"22:{t + 1}" for t in tss], samples)


@pytest.mark.bcftools
@requires_tools
def test_ragged_chr20_indels_match_bcftools(tmp_path):
    chrom, tss = _chr20_genes()
    assert len(tss) == 36
    samples = _vcf_samples(CHR20_VCF)[:: 300 // N_CHR20_SAMPLES][:N_CHR20_SAMPLES]
    starts, ends = tss - HALF, tss + HALF
    rag = HaplotypeBuilder(CHR20_FA, CHR20_VCF, samples=samples).ragged(chrom, starts, ends)

    text = faidx(CHR20_FA, "20", starts, ends)
    oracle = _bcftools_all(text, gt_only_bcf(CHR20_VCF, tmp_path / "gt.bcf", samples), samples)
    lengths = rag.lengths()
    assert (lengths != WINDOW).mean() > 0.5  # most haplotypes carry an indel
    _assert_ragged_matches(rag, oracle, [f"20:{t + 1}" for t in tss], samples)


@pytest.mark.bcftools
@requires_tools
def test_fixed_chr20_indels_match_bcftools_chain(tmp_path):
    chrom, tss = _chr20_genes()
    tss = tss[::6]  # 6 genes spread over the megabase
    samples = _vcf_samples(CHR20_VCF)[::15]  # 20 samples
    out = HaplotypeBuilder(CHR20_FA, CHR20_VCF, samples=samples).fixed(chrom, tss, WINDOW)
    assert out.seqs.shape == (len(tss), len(samples), 2, WINDOW)
    assert out.tss_index == HALF

    bcf = gt_only_bcf(CHR20_VCF, tmp_path / "gt.bcf", samples)

    def one(job):
        s, h = job
        return job, fixed_windows_from_chain(
            CHR20_FA, bcf, "20", list(tss), WINDOW, samples[s], h + 1, workdir=tmp_path
        )

    jobs = [(s, h) for s in range(len(samples)) for h in (0, 1)]
    with ThreadPoolExecutor(N_THREADS) as pool:
        oracle = dict(pool.map(one, jobs))
    bad = []
    for (s, h), windows in oracle.items():
        for g, want in enumerate(windows):
            got = decode(out.seqs[g, s, h])
            if got != want:
                bad.append(f"20:{tss[g] + 1} {samples[s]} hap{h}: {_describe(got, want)}")
    assert not bad, f"{len(bad)} mismatches, e.g.\n" + "\n".join(bad[:10])


@pytest.mark.bcftools
@requires_tools
def test_ragged_unphased_as_phased_matches_bcftools_first_second_allele(tmp_path):
    chrom, tss = _chr20_genes()
    tss = tss[::3]  # 12 genes
    everyone = _vcf_samples(CHR20_UNPHASED_VCF)
    samples = everyone[::20] + everyone[-1:]  # the last sample holds the unphased hets
    starts, ends = tss - HALF, tss + HALF
    assert _unphased_hets(CHR20_UNPHASED_VCF, "20", starts, ends, samples) > 50
    builder = HaplotypeBuilder(CHR20_FA, CHR20_UNPHASED_VCF, samples=samples, unphased="as-phased")
    rag = builder.ragged(chrom, starts, ends)

    text = faidx(CHR20_FA, "20", starts, ends)
    bcf = gt_only_bcf(CHR20_UNPHASED_VCF, tmp_path / "gt.bcf", samples)
    oracle = _bcftools_all(text, bcf, samples, phasing="")  # -H 1 / -H 2: GT order, any phasing
    _assert_ragged_matches(rag, oracle, [f"20:{t + 1}" for t in tss], samples)


def test_ragged_unphased_real_vcf_raises_by_default():
    chrom, tss = _chr20_genes()
    builder = HaplotypeBuilder(CHR20_FA, CHR20_UNPHASED_VCF)
    with pytest.raises(UnphasedGenotypeError, match=r"sample \S+ at 20:\d+"):
        builder.ragged(chrom, tss - HALF, tss + HALF)
