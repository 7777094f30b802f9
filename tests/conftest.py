"""Shared fixtures: paths of the real data bundled in data/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

CHR22_REF = DATA / "chr22_demo" / "GRCh37_22_padded_realonly_20000001-21000000.fa.gz"
CHR22_VCF = DATA / "chr22_demo" / "beagle_test.chr22_20.0-20.1Mb.phased.vcf.gz"
CHR22_TSS = DATA / "chr22_demo" / "tss_chr22_20-21Mb_GRCh37.tsv"
CHR20_REF = DATA / "chr20_extra" / "GRCh37_20_padded_realonly_1000001-2000000.fa.gz"
CHR20_VCF = DATA / "chr20_extra" / "shapeit4_reference.chr20_1-2Mb.phased300.vcf.gz"
CHR20_UNPHASED = DATA / "chr20_extra" / "shapeit4_unphased.chr20_1-2Mb.203.vcf.gz"
CHR20_TSS = DATA / "chr20_extra" / "tss_chr20_1-2Mb_GRCh37_from_EnformerAssessment.tsv"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def assert_one_error_line(out, *needles):
    """A command's bad-input exit: status 2, no traceback, one ``error:`` line holding every
    needle."""
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
