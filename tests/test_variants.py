import numpy as np
import pytest

from prep.variants import UnphasedGenotypeError, VariantReader, VcfError, parse_genotypes
from tests.conftest import CHR20_UNPHASED, CHR20_VCF, CHR22_VCF


def test_parse_genotypes_literal():
    cols = ["0|1:0.5\t1/0\t.|.\t2", "1|1\t./1:x\t0\t0|0"]
    buf = np.frombuffer("\t".join(cols).encode(), np.uint8)
    offsets = np.array([0, len(cols[0]) + 1, len(cols[0]) + 1 + len(cols[1]) + 1])
    gt = np.empty((2, 4, 2), np.int16)
    ph = np.empty((2, 4), bool)
    assert parse_genotypes(buf, offsets, gt, ph) == -1
    assert gt[0].tolist() == [[0, 1], [1, 0], [-1, -1], [2, 0]]
    assert ph[0].tolist() == [True, False, True, True]
    assert gt[1].tolist() == [[1, 1], [-1, 1], [0, 0], [0, 0]]


def test_parse_genotypes_reports_short_record():
    buf = np.frombuffer(b"0|1", np.uint8)
    gt = np.empty((1, 2, 2), np.int16)
    assert parse_genotypes(buf, np.array([0, 4]), gt, np.empty((1, 2), bool)) == 0


@pytest.mark.parametrize("path, chrom, start, end", [
    (CHR20_VCF, "20", 1_000_000, 2_000_000),
    (CHR20_UNPHASED, "chr20", 1_000_000, 2_000_000),
    (CHR22_VCF, "22", 20_000_000, 20_100_000),
])
def test_text_fast_path_equals_cyvcf2(path, chrom, start, end):
    full = VariantReader(path, unphased="as-phased")
    for reader in (full, VariantReader(path, full.samples[::-7], unphased="as-phased")):
        fast = reader.read(chrom, start, end)
        reader._tabix = None  # force the cyvcf2 path
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
