"""prep.dosages: window dosages equal a direct cyvcf2 reading of the real chr22 / chr20 VCFs."""

from __future__ import annotations

import numpy as np
import pysam
import pytest
from cyvcf2 import VCF

from prep.dosages import DosageReader, window_bounds
from prep.regions import read_tss_table
from prep.vcf_files import VcfError
from tests.conftest import CHR20_TSS, CHR20_VCF, CHR22_TSS, CHR22_VCF

L = 49_152


def cyvcf2_dosages(vcf, chrom, start, end, samples=None):
    """Reference reading: ALT counts from cyvcf2's genotype arrays, POS in [start, end)."""
    v = VCF(str(vcf), samples=samples)
    order = [v.samples.index(s) for s in samples] if samples else slice(None)
    cols, ids = [], []
    for rec in v(f"{chrom}:{start + 1}-{end}"):
        if not start <= rec.POS - 1 < end:
            continue
        g = rec.genotype.array()[order, :2]  # (n, 2) allele indexes, -1 missing
        for k, alt in enumerate(rec.ALT, start=1):
            if alt.startswith("<") or alt == "*":
                continue
            cols.append((g == k).sum(axis=1))
            ids.append((rec.POS, rec.REF, alt))
    v.close()
    return np.array(cols, dtype=np.float32).T, ids


@pytest.fixture(scope="module")
def chr22():
    genes = read_tss_table(CHR22_TSS)
    with DosageReader(CHR22_VCF, length=L) as r:
        return genes, r.samples, {g.gene: g for g in r.genes(genes)}


@pytest.fixture(scope="module")
def chr20():
    genes = read_tss_table(CHR20_TSS)
    with DosageReader(CHR20_VCF, length=L) as r:
        return genes, r.samples, {g.gene: g for g in r.genes(genes)}


def test_window_bounds():
    assert window_bounds(100, 10) == (95, 105)
    with pytest.raises(ValueError, match="even"):
        window_bounds(100, 11)


@pytest.mark.parametrize("data", ["chr22", "chr20"])
def test_dosages_equal_cyvcf2(data, request):
    genes, samples, out = request.getfixturevalue(data)
    vcf = CHR22_VCF if data == "chr22" else CHR20_VCF
    with_variants = [g for g in out.values() if g.n_variants]
    assert len(with_variants) >= 8
    for g in with_variants[:: max(1, len(with_variants) // 4)]:
        want, ids = cyvcf2_dosages(vcf, g.chrom, g.start, g.end)
        assert g.dosages.dtype == np.float32 and g.dosages.shape == (len(samples), len(ids))
        np.testing.assert_array_equal(g.dosages, want)
        assert list(zip(g.pos.tolist(), g.ref, g.alt, strict=True)) == ids
        assert g.start == g.tss - L // 2 and g.end == g.tss + L // 2


def test_chr22_symbolic_alleles_have_no_column(chr22):
    _, _, out = chr22
    alts = {a for g in out.values() for a in g.alt}
    assert not any(a.startswith("<") for a in alts)


def test_maf_on_a_subset_and_filters(chr20):
    genes, samples, full = chr20
    rows = np.arange(0, len(samples), 3)  # every third individual
    gene = genes["name"][0]
    with DosageReader(CHR20_VCF, length=L, min_maf=0.05) as r:
        sub = next(r.genes(genes.head(1), {gene: rows}))
    ref = full[gene]
    af = ref.dosages[rows].astype(np.float64).mean(axis=0) / 2
    maf = np.minimum(af, 1 - af)
    keep = maf >= 0.05
    assert 0 < keep.sum() < ref.n_variants
    np.testing.assert_allclose(sub.maf, maf[keep], rtol=1e-12)
    np.testing.assert_array_equal(sub.pos, ref.pos[keep])
    np.testing.assert_array_equal(sub.dosages, ref.dosages[:, keep])
    with DosageReader(CHR20_VCF, length=L, snps_only=True) as r:
        snps = next(r.genes(genes.head(1)))
    is_snp = np.array([len(a) == 1 and len(b) == 1 for a, b in zip(ref.ref, ref.alt, strict=True)])
    assert 0 < (~is_snp).sum()
    np.testing.assert_array_equal(snps.pos, ref.pos[is_snp])


def test_samples_subset_and_order(chr20):
    genes, samples, full = chr20
    pick = [samples[7], samples[2], samples[150]]
    with DosageReader(CHR20_VCF, pick, length=L) as r:
        g = next(r.genes(genes.head(1)))
    np.testing.assert_array_equal(g.dosages, full[g.gene].dosages[[7, 2, 150]])


@pytest.fixture(scope="module")
def edge_vcf(tmp_path_factory):
    """Synthetic: a multi-allelic record, missing and haploid genotypes (the real data has none)."""
    d = tmp_path_factory.mktemp("dos")
    text = (
        "##fileformat=VCFv4.2\n##contig=<ID=1,length=1000>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC\tD\n"
        "1\t100\t.\tA\tC,G\t.\t.\t.\tGT\t0|1\t2|2\t1|2\t0|0\n"
        "1\t200\t.\tT\tA\t.\t.\t.\tGT\t./.\t1|1\t0|1\t0|0\n"
        "1\t300\t.\tG\tGA\t.\t.\t.\tGT\t1\t0|1\t1/0\t0|0\n"
        "1\t600\t.\tC\tT\t.\t.\t.\tGT\t1|1\t1|1\t1|1\t1|1\n"
    )
    plain = d / "edge.vcf"
    plain.write_text(text)
    gz = str(plain) + ".gz"
    pysam.tabix_compress(str(plain), gz, force=True)
    pysam.tabix_index(gz, preset="vcf", force=True)
    return gz


def test_multiallelic_missing_haploid(edge_vcf):
    import polars as pl

    genes = pl.DataFrame({"gene": ["g"], "chrom": ["1"], "tss": [250]})
    with DosageReader(edge_vcf, length=200) as r:  # window [150, 350): records at 100, 600 out
        g = next(r.genes(genes))
        assert g.pos.tolist() == [200, 300]
    with DosageReader(edge_vcf, length=600) as r:  # [-50, 550)
        g = next(r.genes(genes, np.array([False, True, True, True])))
    assert g.pos.tolist() == [100, 100, 200, 300]
    assert g.alt == ["C", "G", "A", "GA"]
    np.testing.assert_array_equal(g.dosages[:, [0, 1, 3]],
                                  [[1, 0, 1], [0, 2, 1], [1, 1, 1], [0, 0, 0]])
    # A's ./. at 200 is imputed with 2 x AF of B, C, D (3 ALT of 6 alleles)
    np.testing.assert_allclose(g.dosages[:, 2], [1.0, 2, 1, 0])
    assert g.n_missing.tolist() == [0, 0, 1, 0]
    np.testing.assert_allclose(g.maf, [1 / 6, 1 / 2, 1 / 2, 1 / 3])


def test_unknown_sample_is_named():
    with pytest.raises(VcfError, match="NOBODY"):
        DosageReader(CHR20_VCF, ["NOBODY"])


def test_bad_min_maf():
    with pytest.raises(ValueError, match="min_maf"):
        DosageReader(CHR20_VCF, length=L, min_maf=0.7)
