import numpy as np
import pytest

from prep.variants import UnphasedGenotypeError, VariantReader
from prep.vcf_files import VcfError
from prep.vcf_records import parse_genotypes
from tests.conftest import CHR20_UNPHASED, CHR20_VCF, CHR22_VCF


def test_parse_genotypes_literal():
    cols = ["0|1:0.5\t1/0\t.|.\t2", "1|1\t./1:x\t0\t0|0"]
    buf = np.frombuffer("\t".join(cols).encode(), np.uint8)
    offsets = np.array([0, len(cols[0]) + 1, len(cols[0]) + 1 + len(cols[1]) + 1])
    gt = np.empty((2, 4, 2), np.int16)
    ph = np.empty((2, 4), bool)
    assert parse_genotypes(buf, offsets, np.arange(4), gt, ph) == -1
    assert gt[0].tolist() == [[0, 1], [1, 0], [-1, -1], [2, 0]]
    assert ph[0].tolist() == [True, False, True, True]
    assert gt[1].tolist() == [[1, 1], [-1, 1], [0, 0], [0, 0]]


def test_parse_genotypes_reports_short_record():
    buf = np.frombuffer(b"0|1", np.uint8)
    gt = np.empty((1, 2, 2), np.int16)
    assert parse_genotypes(buf, np.array([0, 4]), np.arange(2), gt, np.empty((1, 2), bool)) == 0


@pytest.mark.parametrize("path, chrom, start, end", [
    (CHR20_VCF, "20", 1_000_000, 2_000_000),
    (CHR20_UNPHASED, "chr20", 1_000_000, 2_000_000),
    (CHR22_VCF, "22", 20_000_000, 20_100_000),
])
def test_text_fast_path_equals_cyvcf2(path, chrom, start, end):
    full = VariantReader(path, unphased="as-phased")
    for reader in (full, VariantReader(path, full.samples[::-7], unphased="as-phased")):
        fast = reader.read(chrom, start, end)
        reader._open(reader.path).tabix = None  # force the cyvcf2 path
        slow = reader.read(chrom, start, end)
        for name in ("pos", "ref_len", "first_allele", "allele_offsets", "allele_codes",
                     "allele_flags", "hap_allele"):
            assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
        assert fast.n_unphased == slow.n_unphased


def test_reader_raises_on_unknown_sample():
    with pytest.raises(VcfError, match="NOPE"):
        VariantReader(CHR22_VCF, ["HG00096", "NOPE"])


def test_unphased_error_names_sample_and_site():
    reader = VariantReader(CHR20_UNPHASED)
    with pytest.raises(UnphasedGenotypeError, match=r"sample \S+ at 20:\d+"):
        reader.read("20", 1_000_000, 2_000_000)


def _write_vcf(path, body_lines, samples=("S1", "S2")):
    import pysam

    header = [
        "##fileformat=VCFv4.2", "##contig=<ID=22,length=51304566>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples),
    ]
    plain = path.with_suffix("")
    plain.write_text("\n".join(header + body_lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return path


def test_reader_names_record_with_missing_sample_columns(tmp_path):
    vcf = _write_vcf(tmp_path / "short.vcf.gz", ["22\t20000100\t.\tA\tG\t.\t.\t.\tGT\t0|1"])
    with pytest.raises(VcfError, match="22:20000100 has fewer sample columns"):
        VariantReader(vcf).read("22", 20_000_000, 20_001_000)


def test_reader_names_genotype_beyond_alt_alleles(tmp_path):
    vcf = _write_vcf(tmp_path / "gt.vcf.gz", ["22\t20000100\t.\tA\tG\t.\t.\t.\tGT\t0|2\t0|0"])
    with pytest.raises(VcfError, match=r"22:20000100 sample S1 has GT allele 2 .* 1 ALT"):
        VariantReader(vcf).read("22", 20_000_000, 20_001_000)


@pytest.mark.bcftools
def test_bcf_input_reads_like_vcf(tmp_path):
    import shutil
    import subprocess

    if shutil.which("bcftools") is None:
        pytest.skip("bcftools is not installed")
    bcf = tmp_path / "demo.bcf"
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(CHR22_VCF)], check=True,
                   capture_output=True)
    subprocess.run(["bcftools", "index", str(bcf)], check=True)
    a = VariantReader(CHR22_VCF).read("22", 20_000_000, 20_100_000)
    b = VariantReader(bcf).read("22", 20_000_000, 20_100_000)
    assert b.n_records == a.n_records > 1000
    assert np.array_equal(a.hap_allele, b.hap_allele)
    assert np.array_equal(a.allele_codes, b.allele_codes)


def test_ref_check_in_chunks_names_the_site(tmp_path, monkeypatch):
    """Real chr22 records with one REF altered (record 701), REFs checked 100 records a time."""
    import gzip

    import pysam

    import prep.variants
    from prep.reference import Reference
    from tests.conftest import CHR22_REF

    plain = tmp_path / "altered.vcf"
    with gzip.open(CHR22_VCF, "rt") as fh, open(plain, "w") as out:
        n = 0
        for line in fh:
            if not line.startswith("#"):
                n += 1
                if n == 701:  # 159 carriers
                    f = line.split("\t", 5)
                    site = f"{f[0]}:{f[1]}"
                    assert len(f[3]) == 1 and f[3] != "T"
                    fasta_base, f[3] = f[3], "T"
                    line = "\t".join(f)
            out.write(line)
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    monkeypatch.setattr(prep.variants, "_REF_CHECK_RECORDS", 100)
    ref = Reference(CHR22_REF)
    span = ("22", 20_000_000, 20_100_000)
    original = VariantReader(CHR22_VCF).read(*span, reference=ref)
    assert original.ref_mismatch.sum() == 0
    altered = VariantReader(str(plain) + ".gz")
    with pytest.raises(VcfError, match=rf"REF at {site} is T but .* has {fasta_base} there "
                                       r"\(1 mismatching"):
        altered.read(*span, reference=ref)
    block = altered.read(*span, reference=ref, ref_mismatch="skip")
    assert np.nonzero(block.ref_mismatch)[0].tolist() == [700]
    assert original.hap_allele[:, 700].any() and not block.hap_allele[:, 700].any()
    keep = np.arange(block.n_records) != 700
    assert np.array_equal(block.hap_allele[:, keep], original.hap_allele[:, keep])
