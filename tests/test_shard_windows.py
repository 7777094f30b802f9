"""Windows read from format-3 shards equal HaplotypeBuilder.fixed for the same settings.

Real chr20 data (300 phased 1000 Genomes samples with indels; every TSS whose window fits in the
bundled 1 Mb), a seeded expression matrix (chr20 has none; values only fill the targets): fixed
windows with indels, with ``reverse_minus`` and with ``snps_only``, every (gene, individual) of
the study, at the built length and cropped to a shorter one; and a build at Borzoi's 524,288 bp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hapflow.config import StudyConfig
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.builder import HaplotypeBuilder
from prep.regions import read_tss_table
from prep.shard_reader import gene_records, gene_windows, iter_study
from prep.shard_tar import read_tar_members
from prep.sharding import run_shard
from prep.verification import verify_shards
from tests.conftest import CHR20_REF, CHR20_TSS, CHR20_VCF

LENGTH = 8_192
SPAN = (1_000_000, 2_000_000)


def _chr20_study(workdir: Path, length: int = LENGTH, genes: int | None = None,
                 **haplotypes) -> Path:
    from prep.variants import VariantReader

    tss = read_tss_table(CHR20_TSS)
    margin = length // 2 + 64
    tss = tss.filter((pl.col("tss") - margin > SPAN[0]) & (pl.col("tss") + margin < SPAN[1]))
    tss = tss.head(genes) if genes else tss
    samples = VariantReader(CHR20_VCF).samples
    rng = np.random.default_rng(0)
    workdir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"gene": tss["name"]}).with_columns(
        [pl.Series(s, rng.normal(size=tss.height)) for s in samples]
    ).write_parquet(workdir / "expression.parquet")
    tss.select("name", "chrom", "tss", "strand").rename(
        {"name": "gene_id", "tss": "tss_0based"}).write_csv(workdir / "tss.tsv", separator="\t")
    h = HaplotypesConfig(reference=str(CHR20_REF), vcf=str(CHR20_VCF),
                         tss=str(workdir / "tss.tsv"), length=length, **haplotypes)
    s = ShardConfig(expression=str(workdir / "expression.parquet"), shard_samples=3000)
    summary = run_shard(StudyConfig(haplotypes=h, shard=s), workdir)
    assert summary.get("finalized")
    return workdir / "shards"


@pytest.mark.parametrize("settings", [{}, {"reverse_minus": True}, {"snps_only": True}],
                         ids=["indels", "reverse_minus", "snps_only"])
def test_every_window_equals_fixed(tmp_path, settings):
    shards = _chr20_study(tmp_path, **settings)
    assert verify_shards(shards, windows=20).ok
    manifest = pl.read_parquet(shards / "manifest.parquet")
    individuals = sorted(manifest["individual"].unique())
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF, individuals,
                               snps_only=settings.get("snps_only", False))
    column = {ind: i for i, ind in enumerate(individuals)}
    for length in (LENGTH, 1_000):
        want, n = {}, 0
        for sample in iter_study(shards, length=length):
            gene = sample["gene"]
            if gene not in want:
                minus = settings.get("reverse_minus", False) and sample["strand"] == "-"
                want = {gene: builder.fixed("20", np.array([sample["tss"]]), length,
                                            np.array([minus])).seqs[0]}
            assert np.array_equal(sample["seq"], want[gene][column[sample["individual"]]]), (
                gene, sample["individual"], length)
            assert sample["tss_index"] == (length - 1 - length // 2
                                           if sample["reverse_complemented"] else length // 2)
            n += 1
        assert n == manifest.height
    indels = 0
    for shard in sorted(manifest["shard"].unique()):
        for rec in gene_records(read_tar_members(shards / shard)):
            e = rec.edits
            indels += int(((e.ends - e.starts) != np.diff(e.alt_offsets)).sum())
    assert (indels == 0) == settings.get("snps_only", False)  # indels met, unless SNPs only


def test_a_borzoi_length_build_of_524288_bases(tmp_path):
    """[haplotypes] length = 524,288 (Borzoi; the engine's longest): a record's windows equal
    HaplotypeBuilder.fixed at that length and at Enformer's 196,608 cropped from it."""
    length = 524_288
    shards = _chr20_study(tmp_path, length=length, genes=2)
    assert verify_shards(shards, windows=2).ok
    rec = next(gene_records(read_tar_members(shards / "shard-000000.tar")))
    assert rec.meta["width"] == length + 16 and rec.ref.shape[0] >= length + 16
    individuals = rec.meta["individuals"][:6]
    builder = HaplotypeBuilder(CHR20_REF, CHR20_VCF, individuals)
    for n in (length, 196_608):
        seqs, _ = gene_windows(rec, n, np.arange(6))
        want = builder.fixed("20", np.array([rec.meta["tss"]]), n).seqs[0]
        assert np.array_equal(seqs, want), n


def test_writing_never_holds_a_gene_s_windows(tmp_path):
    """Memory is bounded by the genes in flight x individuals, never by windows: writing every
    chr20 gene at 196,608 bp for 300 individuals stays far below what ONE gene's windows would
    take (2 x 300 x 196,624 bytes = 118 MB; format 2 held a batch of them, 256 MB)."""
    import tracemalloc

    _chr20_study(tmp_path / "warm", length=196_608, genes=1)  # numba's code, caches
    tracemalloc.start()
    try:
        shards = _chr20_study(tmp_path / "study", length=196_608)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    n = pl.read_parquet(shards / "manifest.parquet").height
    assert n >= 30 * 300
    assert peak < 2 * 300 * 196_624 / 2, f"{peak / 2**20:.0f} MiB traced while writing"
