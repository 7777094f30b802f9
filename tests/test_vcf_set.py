"""Genotypes split over files: a list of VCFs, a {chrom} pattern, shared samples (real data).

The bundled chr20 (300 samples) and chr22 (191 samples) VCFs share 169 individuals; each is
restricted to those (real records, real genotypes) so that the two make one study, named like
the 1000 Genomes per-chromosome files, with a FASTA holding both contigs.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
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
    ROOT,
    assert_one_error_line,
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


def test_files_with_different_samples_keep_those_in_every_file():
    """Issue 15, 8: the real chr20 (300) and chr22 (191) files share 169 samples: the set's
    samples are those, in the first file's order; the others are named with their files."""
    vcfs = VcfSet([CHR20_VCF, CHR22_VCF])
    s20, s22 = VcfSet(CHR20_VCF).samples, VcfSet(CHR22_VCF).samples
    assert vcfs.samples == [s for s in s20 if s in set(s22)] and len(vcfs.samples) == 169
    assert len(vcfs.partial) == 131 + 22
    only20 = next(s for s in s20 if s not in set(s22))
    only22 = next(s for s in s22 if s not in set(s20))
    assert vcfs.partial[only20] == [CHR22_VCF] and vcfs.partial[only22] == [CHR20_VCF]
    text = vcfs.describe_partial()
    assert text.startswith("153 of the 322 samples of 2 VCFs")
    assert f"131 from {CHR22_VCF.name} (e.g. {only20}" in text
    assert "The 169 samples in every file are used" in text


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


# ------------------------------------------------------------------ files of different samples
def _bcftools(*args) -> None:
    subprocess.run(["bcftools", *map(str, args)], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Files of one study with different samples, made from the real VCFs with bcftools:
    ``chr22`` (the chr22 VCF without 40 of the samples it shares with chr20, its contig renamed
    ``chr22``) and ``disjoint`` (the 22 chr22 samples that chr20 lacks). Returns (dir, chr22,
    disjoint, the samples of chr20 and chr22 both, the 40 left out)."""
    if shutil.which("bcftools") is None:
        pytest.skip("bcftools must be on PATH")
    root = tmp_path_factory.mktemp("uneven")
    s20, s22 = VcfSet(CHR20_VCF).samples, VcfSet(CHR22_VCF).samples
    shared = [s for s in s20 if s in set(s22)]
    gone = shared[:40]
    (root / "keep.txt").write_text("".join(f"{s}\n" for s in s22 if s not in set(gone)))
    (root / "only22.txt").write_text("".join(f"{s}\n" for s in s22 if s not in set(s20)))
    (root / "rename.txt").write_text("22\tchr22\n")
    chr22, disjoint = root / "chr22_subset.vcf.gz", root / "chr22_only.vcf.gz"
    _bcftools("view", "-S", root / "keep.txt", "-Ou", "-o", root / "keep.bcf", CHR22_VCF)
    _bcftools("annotate", "--rename-chrs", root / "rename.txt", "-Oz", "-o", chr22,
              root / "keep.bcf")
    _bcftools("view", "-S", root / "only22.txt", "-Oz", "-o", disjoint, CHR22_VCF)
    for f in (chr22, disjoint):
        _bcftools("index", "-t", f)
    both = [s for s in shared if s not in set(gone)]
    return root, chr22, disjoint, both, gone


@pytest.fixture()
def fresh_warnings():
    """Forget which sets were warned about (the warning is once per process and set)."""
    import prep.vcf_files

    prep.vcf_files._WARNED.clear()
    yield
    prep.vcf_files._WARNED.clear()


def _partial_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and "not in every file" in r.getMessage()]


def test_bcftools_subset_with_another_contig_name_reads_the_shared_samples(
        study, uneven, caplog, fresh_warnings):
    """A set of the full chr20 file and a bcftools subset of chr22 (contig ``chr22``): the
    builder reads the 129 samples in both, the same windows as each file alone, and says once
    which samples it left out."""
    _, chr22, _, both, gone = uneven
    fasta = study[2]
    with caplog.at_level("WARNING", logger="prep"):
        b = HaplotypeBuilder(fasta, [CHR20_VCF, chr22], unphased="as-phased")
        again = HaplotypeBuilder(fasta, [CHR20_VCF, chr22], unphased="as-phased")
    assert list(b.samples) == both and len(both) == 129
    warnings = _partial_warnings(caplog)
    assert len(warnings) == 1 and f"171 from {chr22.name} (e.g. {gone[0]}" in warnings[0]
    for chrom, ref, f, tss in (("20", CHR20_REF, CHR20_VCF, _tss(CHR20_TSS, CHR20_SPAN, 3)),
                               ("22", CHR22_REF, CHR22_VCF,
                                _tss(CHR22_TSS, (19_990_000, 20_110_000), 3))):
        alone = HaplotypeBuilder(ref, f, both, unphased="as-phased")
        assert np.array_equal(b.fixed(chrom, tss, 4096).seqs, alone.fixed(chrom, tss, 4096).seqs)
        alone.close()
    b.close()
    again.close()


def test_a_sample_missing_from_one_file_cannot_be_requested(uneven):
    _, chr22, _, _, gone = uneven
    with pytest.raises(VcfError, match=rf"not in every file .* e\.g\. {gone[0]} \(missing from "
                                       rf"{chr22.name}\)"):
        VariantReader([CHR20_VCF, chr22], [gone[0]])


def test_files_without_a_shared_sample_are_an_error(uneven):
    disjoint = uneven[2]
    with pytest.raises(VcfError, match="no sample is in every file of 2 VCFs"):
        VcfSet([CHR20_VCF, disjoint])


def test_prep_haplotypes_from_files_of_different_samples(study, uneven, tmp_path):
    """The command writes the shared samples' haplotypes, warns once; no shared sample is one
    error line."""
    _, chr22, disjoint, both, _ = uneven
    tss = tmp_path / "tss.tsv"
    tss.write_text("chrom\ttss\tgene\n20\t1100000\tA\n")  # 0-based, inside the real sequence
    out = tmp_path / "h.fa"
    cmd = [sys.executable, "-m", "prep.haplotypes", "--reference", str(study[2]), "--vcf",
           f"{CHR20_VCF},{chr22}", "--regions", str(tss), "--length", "1024", "--tss-one-based",
           "false", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = [ln[1:].split("|")[1] for ln in out.read_text().splitlines() if ln.startswith(">")]
    assert names[::2] == both
    assert sum("not in every file" in ln for ln in proc.stderr.splitlines()) == 1, proc.stderr
    cmd[cmd.index("--vcf") + 1] = f"{CHR20_VCF},{disjoint}"
    assert_one_error_line(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                         timeout=300), "no sample is in every file")


def test_prediction_from_files_of_different_samples(uneven, tmp_path):
    """train.prediction.predict_vcf predicts the samples in every file; none shared: an error."""
    import torch

    from hapflow.sections import LoaderConfig, ModelConfig
    from train.distributed import Dist
    from train.model import build_model
    from train.prediction import Predictor, predict_vcf

    _, chr22, disjoint, both, _ = uneven
    cfg = ModelConfig(source="random", dim=48, depth=1, heads=1, attn_dim_key=16,
                      dim_divisible_by=8, output_heads_human=8, n_bins=4)
    model = build_model(cfg, 1024).eval()
    p = Predictor(model, "tiny", 1024, {"unphased": "as-phased"}, LoaderConfig(), "fp32")
    tss = tmp_path / "tss.tsv"
    tss.write_text("chrom\ttss\tgene\n20\t1100000\tA\n20\t1200000\tB\n")
    d = Dist(0, 1, 0, torch.device("cpu"))
    table, _ = predict_vcf(p, str(CHR20_REF), [str(CHR20_VCF), str(chr22)], str(tss), d)
    assert sorted(set(table["individual"])) == sorted(both) and table.height == 2 * len(both)
    with pytest.raises(VcfError, match="no sample is in every file"):
        predict_vcf(p, str(CHR20_REF), [str(CHR20_VCF), str(disjoint)], str(tss), d)


def test_shards_of_files_with_different_samples(study, uneven, tmp_path, caplog,
                                                fresh_warnings):
    """prep.shard on expression simulated for chr20's 300 people and the set (chr20, a chr22
    subset): the study's individuals are the 129 in both files; the 171 others are listed in
    quality.json with the file they are missing from, and named in one warning."""
    from hapflow.config import StudyConfig
    from hapflow.sections import HaplotypesConfig, ShardConfig, SimulateConfig
    from prep.shard_plan import PARTIAL_REASON
    from prep.sharding import run_shard
    from prep.simulation import run_simulate

    _, chr22, _, both, gone = uneven
    h = HaplotypesConfig(reference=str(study[2]), vcf=str(CHR20_VCF), tss=str(CHR20_TSS),
                         length=4096)
    run_simulate(StudyConfig(haplotypes=h, simulate=SimulateConfig()), tmp_path)
    h = dataclasses.replace(h, vcf=[str(CHR20_VCF), str(chr22)])
    s = ShardConfig(shard_samples=4096)
    with caplog.at_level("WARNING"):
        run_shard(StudyConfig(haplotypes=h, shard=s), tmp_path)
    manifest = pl.read_parquet(tmp_path / "shards" / "manifest.parquet")
    assert sorted(manifest["individual"].unique()) == sorted(both)
    dropped = json.loads((tmp_path / "shards" / "quality.json").read_text())["dropped"]
    partial = dropped[PARTIAL_REASON]
    assert partial["count"] == 300 - 129 + 22 and partial["with_expression"] == 300 - 129
    assert partial["missing_from"][gone[0]] == [str(chr22)]
    assert all(p == [str(CHR20_VCF)] for s, p in partial["missing_from"].items()
               if s not in VcfSet(CHR20_VCF).samples)
    warnings = _partial_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "171 of them have expression" in warnings[0] and "quality.json" in warnings[0]


def test_attribution_names_an_individual_missing_from_one_file(uneven):
    from analysis.personal_variants import AttributionError, check_individuals

    _, chr22, _, both, gone = uneven
    check_individuals([str(CHR20_VCF), str(chr22)], both[:2])
    with pytest.raises(AttributionError, match=rf"{gone[0]} is missing from {chr22.name}"):
        check_individuals([str(CHR20_VCF), str(chr22)], [both[0], gone[0]])
