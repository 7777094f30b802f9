"""python -m prep.haplotypes: FASTA records named NAME|SAMPLE|HAP, equal to the engine."""

import gzip

import numpy as np
import pytest

from hapflow.sections import ConfigError, HaplotypesConfig
from prep.builder import HaplotypeBuilder
from prep.encoding import decode
from prep.export import fasta_records
from prep.haplotypes import main
from tests.conftest import CHR22_REF, CHR22_TSS, CHR22_VCF, ROOT


def read_fasta(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    records, name = {}, None
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                name = line[1:]
                records[name] = []
            else:
                records[name].append(line)
    return {k: "".join(v) for k, v in records.items()}


def test_fasta_records_wraps_at_60():
    rec = fasta_records("x", np.zeros(61, np.uint8))
    assert rec == b">x\n" + b"A" * 60 + b"\nA\n"
    assert fasta_records("y", np.zeros(60, np.uint8)) == b">y\n" + b"A" * 60 + b"\n"


def test_validate_length():
    assert HaplotypesConfig(length=49_152).length == 49_152
    assert HaplotypesConfig(length=524_288).length == 524_288  # Borzoi's length
    for bad in (0, 100, 524_288 + 128):
        with pytest.raises(ConfigError, match="multiple of 128"):
            HaplotypesConfig(length=bad)


def test_cli_bed_matches_engine(tmp_path):
    bed = tmp_path / "iv.bed"
    bed.write_text("22\t20030000\t20031000\tA\n22\t20067000\t20068200\tB\n")
    out = tmp_path / "out.fa"
    rc = main(["--reference", str(CHR22_REF), "--vcf", str(CHR22_VCF), "--bed", str(bed),
               "--samples", "HG00096,HG00428", "--output", str(out), "--quiet"])
    assert rc == 0
    recs = read_fasta(out)
    assert list(recs)[:2] == ["A|HG00096|1", "A|HG00096|2"] and len(recs) == 8
    b = HaplotypeBuilder(CHR22_REF, CHR22_VCF, ["HG00096", "HG00428"])
    rag = b.ragged("22", np.array([20030000, 20067000]), np.array([20031000, 20068200]))
    assert recs["B|HG00428|2"] == decode(rag.get(1, 1, 1))


def test_cli_config_fixed_windows_gz(tmp_path):
    out = tmp_path / "out.fa.gz"
    rc = main(["--config", str(ROOT / "configs" / "demo.toml"), "--samples", "HG00097",
               "--length", "1024", "--output", str(out), "--quiet"])
    assert rc == 0
    recs = read_fasta(out)
    assert len(recs) == 2 * sum(1 for line in open(CHR22_TSS) if not line.startswith("#"))
    assert {len(s) for s in recs.values()} == {1024}


def test_cli_reports_bad_input(tmp_path, capsys):
    bed = tmp_path / "iv.bed"
    bed.write_text("chr7\t100\t200\tX\n")
    rc = main(["--reference", str(CHR22_REF), "--vcf", str(CHR22_VCF), "--bed", str(bed),
               "--output", str(tmp_path / "o.fa")])
    assert rc == 2
    assert "chr7" in capsys.readouterr().err
    assert not (tmp_path / "o.fa").exists()


def test_cli_vcf_pattern_named_like_1000_genomes(tmp_path, capsys):
    import os

    from tests.conftest import CHR20_REF, CHR20_VCF

    name = "ALL.chr{chrom}.phase3_shapeit2_mvncall_integrated_v5b.20130502.genotypes.vcf.gz"
    for ext in ("", ".tbi"):
        os.symlink(f"{CHR20_VCF}{ext}", tmp_path / (name.format(chrom="20") + ext))
    bed = tmp_path / "iv.bed"
    bed.write_text("chr20\t1093000\t1094500\tA\n")  # the table says chr20, the file 20
    out = tmp_path / "out.fa"
    rc = main(["--reference", str(CHR20_REF), "--vcf", str(tmp_path / name), "--bed", str(bed),
               "--samples", "HG00096,HG00097", "--output", str(out), "--quiet"])
    assert rc == 0
    b = HaplotypeBuilder(CHR20_REF, CHR20_VCF, ["HG00096", "HG00097"])
    rag = b.ragged("20", np.array([1093000]), np.array([1094500]))
    assert read_fasta(out)["A|HG00097|1"] == decode(rag.get(0, 1, 0))
    other = tmp_path / "other"  # a pattern whose folder lacks chromosome 20's file
    other.mkdir()
    for ext in ("", ".tbi"):
        os.symlink(f"{CHR20_VCF}{ext}", other / (name.format(chrom="21") + ext))
    rc = main(["--reference", str(CHR20_REF), "--vcf", str(other / name), "--bed", str(bed),
               "--output", str(tmp_path / "o2.fa"), "--quiet"])
    assert rc == 2 and not (tmp_path / "o2.fa").exists()
    assert "ALL.chr20.phase3" in capsys.readouterr().err


def test_config_vcf_list_and_single(tmp_path):
    from hapflow.config import load_config
    from hapflow.sections import HaplotypesConfig

    toml = tmp_path / "study.toml"
    toml.write_text('[haplotypes]\nvcf = ["g/chr20.vcf.gz", "g/chr22.vcf.gz"]\n')
    cfg = load_config(HaplotypesConfig, toml, "haplotypes")
    assert cfg.vcf == [str(tmp_path / "g" / "chr20.vcf.gz"), str(tmp_path / "g" / "chr22.vcf.gz")]
    toml.write_text('[haplotypes]\nvcf = "g/ALL.chr{chrom}.vcf.gz"\n')
    assert load_config(HaplotypesConfig, toml, "haplotypes").vcf == \
        str(tmp_path / "g" / "ALL.chr{chrom}.vcf.gz")  # one file stays a string
