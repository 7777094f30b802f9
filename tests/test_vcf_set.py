"""Genotypes split over files: a list of VCFs, a {chrom} pattern, shared samples (real data).

The bundled chr20 (300 samples) and chr22 (191 samples) VCFs share 169 individuals; each is
restricted to those (real records, real genotypes) so that the two make one study, named like
the 1000 Genomes per-chromosome files, with a FASTA holding both contigs.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pysam
import pytest

from prep.builder import HaplotypeBuilder
from prep.contigs import ContigError
from prep.variants import VariantReader
from prep.vcf_files import VcfError, VcfSet
from tests.conftest import (
    CHR20_REF,
    CHR20_TSS,
    CHR20_UNPHASED,
    CHR20_VCF,
    CHR22_REF,
    CHR22_TSS,
    CHR22_VCF,
)

KG = "ALL.chr{chrom}.phase3_shapeit2_mvncall_integrated_v5b.20130502.genotypes.vcf.gz"
CHR20_SPAN = (1_000_000, 2_000_000)
CHR22_SPAN = (20_000_000, 20_100_000)


def _subset_vcf(src, dst, samples: list[str]) -> None:
    """Write ``src`` restricted to ``samples`` (kept in ``src``'s column order), bgzip + tabix."""
    plain = str(dst)[: -len(".gz")]
    with gzip.open(src, "rt") as fh, open(plain, "w") as out:
        keep = None
        for line in fh:
            if line.startswith("##"):
                out.write(line)
                continue
            f = line.rstrip("\n").split("\t")
            if keep is None:
                keep = list(range(9)) + [i for i in range(9, len(f)) if f[i] in set(samples)]
            out.write("\t".join(f[i] for i in keep) + "\n")
    pysam.tabix_index(plain, preset="vcf", force=True)


def _combined_fasta(path) -> None:
    """Contigs 20 and 22 of the two bundled FASTAs in one plain FASTA (true GRCh37 lengths)."""
    with open(path, "w") as out:
        for fa in (CHR20_REF, CHR22_REF):
            with pysam.FastaFile(str(fa)) as f:
                for contig in f.references:
                    seq = f.fetch(contig)
                    out.write(f">{contig}\n")
                    for i in range(0, len(seq), 1 << 20):
                        out.write(seq[i : i + (1 << 20)] + "\n")
    pysam.faidx(str(path))


def _tss(path, span: tuple[int, int], n: int) -> np.ndarray:
    """The first ``n`` 0-based TSSs of a real table inside ``span`` (where the variants are)."""
    from prep.regions import read_tss_table

    tss = np.sort(read_tss_table(path)["tss"].to_numpy())
    return tss[(tss >= span[0]) & (tss < span[1])][:n]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(dir, common samples, combined FASTA, chr20 file, chr22 file) of the two-chromosome set."""
    root = tmp_path_factory.mktemp("vcfset")
    from cyvcf2 import VCF

    s20, s22 = VCF(str(CHR20_VCF)).samples, VCF(str(CHR22_VCF)).samples
    common = [s for s in s20 if s in set(s22)]
    assert len(common) == 169
    sub = root / "subset"
    sub.mkdir()
    f20, f22 = sub / "chr20.vcf.gz", sub / "chr22.vcf.gz"
    _subset_vcf(CHR20_VCF, f20, common)
    _subset_vcf(CHR22_VCF, f22, common)
    kg = root / "1kg"
    kg.mkdir()
    for chrom, f in (("20", f20), ("22", f22)):  # symlinks named like the 1000 Genomes files
        for ext in ("", ".tbi"):
            os.symlink(f"{f}{ext}", kg / (KG.format(chrom=chrom) + ext))
    fasta = root / "GRCh37_20_22.fa"
    _combined_fasta(fasta)
    return root, common, fasta, f20, f22


# ------------------------------------------------------------------ the resolver
def test_list_maps_contigs_through_index_and_aliases(study):
    root, common, _, f20, f22 = study
    vcfs = VcfSet([f22, f20])
    assert vcfs.locate("chr20") == (f20, "20")
    assert vcfs.locate("22") == (f22, "22")
    assert vcfs.samples == VcfSet(f22).samples  # the first file's order
    with pytest.raises(ContigError, match="chr7"):
        vcfs.locate("chr7")


def test_pattern_substitutes_aliases(study):
    root = study[0]
    vcfs = VcfSet(str(root / "1kg" / KG))
    assert [p.name for p in vcfs.files] == [KG.format(chrom="20"), KG.format(chrom="22")]
    path, contig = vcfs.locate("chr22")  # the TSS table's name; the file is ALL.chr22..., "22"
    assert path.name == KG.format(chrom="22") and contig == "22"
    with pytest.raises(ContigError, match=r"tried ALL\.chrX\..*ALL\.chrchrX\."):
        vcfs.locate("X")
    assert "2 file(s)" in vcfs.describe()


def test_pattern_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(VcfError, match="no VCF matches the pattern"):
        VcfSet(str(tmp_path / KG))


def test_files_with_different_samples_are_named(study):
    with pytest.raises(VcfError) as err:
        VcfSet([CHR20_VCF, CHR22_VCF])
    msg = str(err.value)
    assert str(CHR22_VCF) in msg and "131 missing" in msg and "22 not in" in msg


def test_contig_in_two_files_is_an_error(study, tmp_path):
    f20 = study[3]
    for ext in ("", ".tbi"):
        os.symlink(f"{f20}{ext}", tmp_path / f"copy.vcf.gz{ext}")
    with pytest.raises(VcfError, match="contig 20 has records in both"):
        VcfSet([f20, tmp_path / "copy.vcf.gz"])


# ------------------------------------------------------------------ haplotypes from a set
@pytest.fixture(scope="module")
def single_file_haplotypes(study):
    """Fixed windows and ragged intervals built from each chromosome's own FASTA and VCF."""
    _, common, _, f20, f22 = study
    samples = common[::-5]  # a subset, in an order that is neither file's
    out = {}
    for chrom, ref, f, tss in (("chr20", CHR20_REF, f20, _tss(CHR20_TSS, CHR20_SPAN, 6)),
                               ("chr22", CHR22_REF, f22, _tss(CHR22_TSS, (19_990_000, 20_110_000), 6))):
        b = HaplotypeBuilder(ref, f, samples, unphased="as-phased")
        out[chrom] = (tss, b.fixed(chrom, tss, 4096).seqs,
                      b.ragged(chrom, tss - 3000, tss + 3000).data)
        b.close()
    return samples, out


@pytest.mark.parametrize("spec", ["list", "pattern"])
def test_set_builds_the_same_haplotypes_as_single_files(study, single_file_haplotypes, spec):
    root, _, fasta, f20, f22 = study
    samples, want = single_file_haplotypes
    vcf = [str(f20), str(f22)] if spec == "list" else str(root / "1kg" / KG)
    b = HaplotypeBuilder(fasta, vcf, samples, unphased="as-phased")
    for chrom in ("chr22", "chr20"):
        tss, fixed, ragged = want[chrom]
        assert len(tss) >= 2
        assert np.array_equal(b.fixed(chrom, tss, 4096).seqs, fixed), chrom
        assert np.array_equal(b.ragged(chrom, tss - 3000, tss + 3000).data, ragged), chrom
    b.preload("chr20", *CHR20_SPAN)  # a preload of one file, then a read of the other
    assert np.array_equal(b.fixed("chr22", want["chr22"][0], 4096).seqs, want["chr22"][1])
    b.close()


# ------------------------------------------------------------------ subset parsing
@pytest.mark.parametrize("path, chrom, span", [(CHR20_VCF, "20", CHR20_SPAN),
                                               (CHR20_UNPHASED, "20", CHR20_SPAN),
                                               (CHR22_VCF, "22", CHR22_SPAN)])
def test_subset_parse_equals_full_parse(path, chrom, span, monkeypatch):
    """Selected columns only, in any order, in one or many chunks: the full parse's rows.

    The unphased file exercises the seeded coin flip, keyed on the sample, not its column.
    """
    full = VariantReader(path, unphased="random", seed=3).read(chrom, *span)
    names = VariantReader(path).samples
    pick = [names[i] for i in (7, len(names) - 1, 0, 150, 3, 42)]  # last: the unphased one
    rows = np.array([[2 * names.index(s), 2 * names.index(s) + 1] for s in pick]).ravel()
    import prep.vcf_records

    for chunk in (prep.vcf_records.TEXT_CHUNK_BYTES, 20_000):  # one chunk; many small chunks
        monkeypatch.setattr(prep.vcf_records, "TEXT_CHUNK_BYTES", chunk)
        sub = VariantReader(path, pick, unphased="random", seed=3).read(chrom, *span)
        assert sub.n_records == full.n_records > 1000
        assert np.array_equal(sub.hap_allele, full.hap_allele[rows]), chunk
        assert np.array_equal(sub.pos, full.pos)
        if path == CHR20_UNPHASED:
            assert sub.n_unphased == full.n_unphased == 137


def test_subset_peak_memory_scales_with_selected_samples(monkeypatch):
    """Peak traced memory of reading all of chr20 for 10 vs 300 samples (text path)."""
    import tracemalloc

    import prep.vcf_records

    monkeypatch.setattr(prep.vcf_records, "TEXT_CHUNK_BYTES", 256 << 10)
    names = VariantReader(CHR20_VCF).samples
    peaks = {}
    for n in (10, 300):
        reader = VariantReader(CHR20_VCF, names[:n])
        reader.read("20", *CHR20_SPAN)  # warm up (numba compile, pysam buffers)
        tracemalloc.start()
        block = reader.read("20", *CHR20_SPAN)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert block.hap_allele.shape == (2 * n, 7568)
        reader.close()
    # 300 samples: genotypes alone are 7,568 x 600 x 2 bytes = 9 MB, several copies transiently;
    # 10 samples must not pay for the other 290
    assert peaks[10] < peaks[300] / 4, peaks
