"""prep.shard on the real chr22 demo: format 3, determinism, resume, parts, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hapflow.config import StudyConfig, load_config
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.builder import HaplotypeBuilder
from prep.expression_files import read_expression, write_expression
from prep.expression_processing import log1p_expression
from prep.gene_record import GENE_EXTS, decode_gene
from prep.shard_plan import MANIFEST_COLUMNS, ShardError, plan_study
from prep.shard_reader import iter_shard, unpack_genes
from prep.shard_tar import read_tar_members
from prep.sharding import parse_part, run_shard
from tests.conftest import CHR22_REF, CHR22_VCF, ROOT

CONFIG = ROOT / "configs" / "demo.toml"


def _configs(**shard):
    h = load_config(HaplotypesConfig, CONFIG, "haplotypes")
    s = load_config(ShardConfig, CONFIG, "shard", {"shard_samples": 700, **shard})
    return h, s


def _study(h: HaplotypesConfig, s: ShardConfig) -> StudyConfig:
    return StudyConfig(haplotypes=h, shard=s)


def _prepare(workdir: Path) -> None:
    from hapflow.sections import ExpressionConfig

    e = load_config(ExpressionConfig, CONFIG, "expression")
    matrix = log1p_expression(read_expression(e.input))
    write_expression(matrix, workdir / "expression" / "expression.parquet")


def _digests(workdir: Path) -> dict[str, str]:
    root = workdir / "shards"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "config.toml"
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    _prepare(workdir)
    h, s = _configs()
    summary = run_shard(_study(h, s), workdir)
    assert summary.get("finalized")
    return workdir


def test_parse_part():
    assert parse_part(None) == (1, 1)
    assert parse_part("2/8") == (2, 8)
    with pytest.raises(ShardError, match="K/N"):
        parse_part("2-8")
    with pytest.raises(ShardError, match="between 1 and N"):
        parse_part("9/8")


def test_layout_and_counts_match_manifest(study):
    root = study / "shards"
    manifest = pl.read_parquet(root / "manifest.parquet")
    meta = json.loads((root / "meta.json").read_text())
    assert meta["format"] == 3
    assert manifest.columns == [*MANIFEST_COLUMNS, "build", "targets_build"]
    assert manifest.schema["row"] == pl.Int32
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert meta["counts"]["samples"] == manifest.height
    assert sorted(p.name for p in root.glob("**/*.tar")) == sorted(meta["shards"])  # top level
    for shard, info in meta["shards"].items():
        assert (root / shard).exists()
        assert info["samples"] == manifest.filter(pl.col("shard") == shard).height
        assert info["sha256"] == hashlib.sha256((root / shard).read_bytes()).hexdigest()
    assert not any("." in k for k in manifest["key"])
    quality = json.loads((root / "quality.json").read_text())
    assert quality["splits"]["train"]["samples"] == manifest.filter(
        pl.col("split") == "train").height
    assert "individual has expression but is not in the VCF" in quality["dropped"]


def test_manifest_order_rows_and_shard_assignment(study):
    """The contract with the loader: rows by split, then gene in build order, then individual;
    a gene's samples of every split in one shard; shards filled in build order up to
    shard_samples (700 here), over by at most one gene; row = the individual's row in its
    gene's record."""
    m = pl.read_parquet(study / "shards" / "manifest.parquet")
    genes = m.unique("gene", maintain_order=True).sort("tss")["gene"].to_list()
    rank = {g: i for i, g in enumerate(genes)}
    order = m.with_columns(pl.col("split").replace_strict({"train": 0, "val": 1, "test": 2},
                                                          return_dtype=pl.Int64).alias("_s"),
                           pl.col("gene").replace_strict(rank, return_dtype=pl.Int64).alias("_g"))
    assert order.sort(["_s", "_g", "individual"])["key"].equals(m["key"])
    assert (m.group_by("gene").agg(pl.col("shard").n_unique())["shard"] == 1).all()
    per_gene = m.group_by("gene").agg(pl.len(), pl.col("shard").first()).with_columns(
        pl.col("gene").replace_strict(rank, return_dtype=pl.Int64).alias("_g")).sort("_g")
    shard, size = per_gene["shard"][0], 0
    for s, n in zip(per_gene["shard"], per_gene["len"], strict=True):
        if s != shard:
            assert size + n > 700 and int(s[6:12]) == int(shard[6:12]) + 1
            shard, size = s, 0
        size += n
    for gene, rows in m.partition_by("gene", as_dict=True).items():
        individuals = sorted(rows["individual"])
        assert [individuals[r] for r in rows["row"]] == rows["individual"].to_list(), gene


def test_shards_readable_by_tar_and_webdataset(study):
    import webdataset as wds

    shard = study / "shards" / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        names = tar.getnames()
    keys = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
    assert names == [f"{k}.{ext}" for k in keys for ext in GENE_EXTS]  # one record per gene
    raw = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert [r["__key__"] for r in raw] == keys
    unpacked = [(s["__key__"], s["seq"].tobytes()) for s in unpack_genes(raw)]
    assert unpacked == [(s["__key__"], s["seq"].tobytes()) for s in iter_shard(shard)]
    manifest = pl.read_parquet(study / "shards" / "manifest.parquet")
    assert sorted(k for k, _ in unpacked) == sorted(
        manifest.filter(pl.col("shard") == "shard-000000.tar")["key"])


def test_records_hold_the_gene_individuals_and_only_their_edits(study):
    """A record's individuals are the gene's of every split; its edit table holds no edit that
    none of them carries; the reference span is stored once per gene in the whole study."""
    root = study / "shards"
    manifest = pl.read_parquet(root / "manifest.parquet")
    seen = []
    for shard in sorted(manifest["shard"].unique()):
        for sample in read_tar_members(root / shard):
            rec = decode_gene(sample, shard)
            seen.append(rec.meta["gene"])
            want = sorted(manifest.filter(pl.col("gene") == rec.meta["gene"])["individual"])
            assert rec.meta["individuals"] == want
            carried = np.unpackbits(rec.edits.bits, axis=1, count=rec.edits.n_edits)
            assert carried.any(axis=0).all()
            assert rec.meta["width"] == 49_152 + 2 * 8 and rec.meta["length"] == 49_152
    assert sorted(seen) == sorted(manifest["gene"].unique())  # each gene exactly once


def test_decoded_windows_equal_engine_output(study):
    manifest = pl.read_parquet(study / "shards" / "manifest.parquet")
    samples = {}
    for shard in manifest["shard"].unique():
        for s in iter_shard(study / "shards" / shard):
            samples[(s["gene"], s["individual"])] = s
    assert len(samples) == manifest.height
    # genes with variants in their window: compare every individual against the engine
    genes = [g for g, s in {k[0]: v for k, v in samples.items()}.items()
             if s["applied"] != [0, 0]]
    individuals = sorted({k[1] for k in samples})
    builder = HaplotypeBuilder(CHR22_REF, CHR22_VCF, individuals)
    for gene in genes[:3]:
        first = next(v for k, v in samples.items() if k[0] == gene)
        w = first["seq"].shape[1]
        assert w == 49_152
        res = builder.fixed("22", np.array([first["tss"]]), w)
        for i, ind in enumerate(individuals):
            if (gene, ind) in samples:
                assert np.array_equal(samples[(gene, ind)]["seq"], res.seqs[0, i])
                assert samples[(gene, ind)]["tss_index"] == w // 2


def test_rerun_is_byte_identical_and_skips_finished(study, tmp_path):
    _prepare(tmp_path)
    h, s = _configs()
    run_shard(_study(h, s), tmp_path)
    assert _digests(tmp_path) == _digests(study)
    summary = run_shard(_study(h, s), tmp_path)
    assert summary["built"] == 0


def test_threads_and_batches_change_no_byte(study, tmp_path):
    """One thread and one gene per VCF batch ([shard] batch_mb = 1) write the same shards and
    manifest as all cores and one batch."""
    _prepare(tmp_path)
    h, s = _configs(workers=1, batch_mb=1)
    run_shard(_study(h, s), tmp_path)
    mine, theirs = _digests(tmp_path), _digests(study)
    assert [k for k in mine if k.endswith(".tar")] == [k for k in theirs if k.endswith(".tar")]
    for name in [k for k in theirs if k.endswith(".tar")] + ["manifest.parquet"]:
        assert mine[name] == theirs[name], name


def test_parts_union_equals_single_run(study, tmp_path):
    _prepare(tmp_path)
    h, s = _configs()
    first = run_shard(_study(h, s), tmp_path, part=(1, 2))
    assert first["built"] < first["shards"] and not first.get("finalized")
    assert not (tmp_path / "shards" / "meta.json").exists()
    second = run_shard(_study(h, s), tmp_path, part=(2, 2))
    assert second.get("finalized")
    assert _digests(tmp_path) == _digests(study)


def test_resume_after_kill(study, tmp_path):
    """kill -9 mid-build: the finished shards are kept (not rewritten), dead writers' temp files
    are removed, and the result equals an uninterrupted run byte for byte."""
    import socket

    _prepare(tmp_path)
    code = (
        "import logging, sys; from tests.test_shard import _configs, _study; "
        "from prep.sharding import run_shard; h, s = _configs(); "
        "run_shard(_study(h, s), sys.argv[1])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT)
    deadline = time.time() + 120
    shards = tmp_path / "shards"
    while time.time() < deadline and proc.poll() is None:
        if list(shards.glob("shard-*.tar")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.stat().st_ino for p in shards.glob("shard-*.tar")}
    host = socket.gethostname().replace(".", "-")
    dead = shards / f".shard-000006.tar.{host}.{proc.pid}.0badc0de.tmp"  # as a killed writer's
    dead.write_bytes(b"partial")
    h, s = _configs()
    summary = run_shard(_study(h, s), tmp_path)
    assert summary["built"] == summary["shards"] - len(kept)
    assert {p.name: p.stat().st_ino for p in shards.glob("shard-*.tar")
            if p.name in kept} == kept  # the finished shards were not rewritten
    assert _digests(tmp_path) == _digests(study)  # no stale temp file either
    assert not list(shards.glob(".*.tmp"))


def test_overwrite_rebuilds(study, tmp_path):
    _prepare(tmp_path)
    h, s = _configs()
    run_shard(_study(h, s), tmp_path)
    summary = run_shard(_study(h, s), tmp_path, overwrite=True)
    assert summary["built"] == summary["shards"]
    assert _digests(tmp_path) == _digests(study)


def test_split_file_with_symbols(tmp_path):
    _prepare(tmp_path)
    split = tmp_path / "split.csv"
    split.write_text("gene,individual,split\narvcf,HG00096,train\narvcf,HG00097,train\n"
                     "ARVCF,HG00099,test\ntango2,HG00096,test\nTANGO2,HG00097,train\n"
                     "tango2,HG00099,train\nnot_a_gene,HG00096,train\n")
    h, s = _configs(splits="file", splits_file=str(split))
    plan = plan_study(h, s, tmp_path)
    assert sorted(plan.manifest["gene"].unique()) == ["ENSG00000099889.9", "ENSG00000183597.11"]
    assert plan.drops["split names a gene without TSS or expression"]["count"] == 1


def test_plan_raises_on_unknown_sample(tmp_path):
    _prepare(tmp_path)
    h, s = _configs()
    h = dataclasses.replace(h, samples=["HG00096", "NOT_A_SAMPLE"])
    with pytest.raises(ShardError, match="NOT_A_SAMPLE"):
        plan_study(h, s, tmp_path)
    assert not (tmp_path / "shards").exists()


def test_plan_raises_on_missing_contig(tmp_path):
    _prepare(tmp_path)
    tss = tmp_path / "tss.tsv"
    tss.write_text("gene_id\tchrom\ttss_1based\tstrand\nENSG00000099889\tchr7\t100\t-\n")
    h, s = _configs()
    h = dataclasses.replace(h, tss=str(tss))
    with pytest.raises(ShardError, match="chr7"):
        plan_study(h, s, tmp_path)


def test_plan_raises_without_expression(tmp_path):
    h, s = _configs()
    with pytest.raises(ShardError, match="prep.expression"):
        plan_study(h, s, tmp_path)


def test_read_tar_members_names_truncated_shard(study, tmp_path):
    shard = study / "shards" / "shard-000000.tar"
    bad = tmp_path / "bad.tar"
    bad.write_bytes(shard.read_bytes()[: 5000])
    with pytest.raises(Exception, match="bad.tar"):
        list(iter_shard(bad))
    assert list(read_tar_members(shard))


@pytest.mark.parametrize("window, n_runs", [
    ("ACGTNNACGTA", 1), ("NNNN", 1), ("ACGT", 0), ("A", 0), ("NACGNNTTN", 3),
])
def test_reference_window_round_trip(window, n_runs):
    from prep.encoding import decode, encode
    from prep.shard_format import decode_reference, encode_reference

    blob = encode_reference(encode(window))
    assert decode(decode_reference(blob)) == window
    assert len(blob) == 12 + 8 * n_runs + (len(window) + 3) // 4


def test_decode_reference_raises_on_truncation():
    from prep.encoding import encode
    from prep.shard_format import ShardFormatError, decode_reference, encode_reference

    with pytest.raises(ShardFormatError, match="truncated"):
        decode_reference(encode_reference(encode("ACGTACGT"))[:-1])
    with pytest.raises(ShardFormatError, match="magic"):
        decode_reference(b"nonsense-bytes")


def test_cli_flags_override_config(tmp_path):
    from prep.shard import main

    _prepare(tmp_path)
    # 4,096 bp: the demo's [loader] length (the study is checked as a whole)
    rc = main(["--config", str(CONFIG), "--workdir", str(tmp_path), "--length", "4096",
               "--snps-only", "--shard-samples", "5000", "--quiet"])
    assert rc == 0
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta["config"]["haplotypes"]["length"] == 4096
    assert meta["config"]["haplotypes"]["snps_only"] is True
    assert meta["config"]["shard"]["shard_samples"] == 5000
    assert meta["counts"]["shards"] == 1  # every gene's samples fit in one shard
    sample = next(iter_shard(tmp_path / "shards" / "shard-000000.tar"))
    assert sample["seq"].shape == (2, 4096)
    assert next(iter_shard(tmp_path / "shards" / "shard-000000.tar", length=4096 + 16)
                )["seq"].shape == (2, 4096 + 16)  # up to the stored width W = L + 2 x flank
    with pytest.raises(ValueError, match="1 to 4112 bases"):
        next(iter_shard(tmp_path / "shards" / "shard-000000.tar", length=4096 + 17))


def test_cli_reports_bad_override(tmp_path, capsys):
    from prep.shard import main

    assert main(["--config", str(CONFIG), "--workdir", str(tmp_path), "--set", "shrd.x=1"]) == 2
    err = capsys.readouterr().err
    assert "shrd" in err and "shard" in err and "Traceback" not in err


def test_reverse_minus_windows_are_reverse_complemented(tmp_path):
    from prep.encoding import reverse_complement

    _prepare(tmp_path)
    h, s = _configs()
    h = dataclasses.replace(h, reverse_minus=True, length=1024)
    run_shard(_study(h, s), tmp_path)
    samples = list(iter_shard(tmp_path / "shards" / "shard-000000.tar"))
    minus = next(x for x in samples if x["strand"] == "-" and x["applied"] != [0, 0])
    plus = next(x for x in samples if x["strand"] == "+")
    assert minus["reverse_complemented"] and not plus["reverse_complemented"]
    assert minus["tss_index"] == 1023 - 512 and plus["tss_index"] == 512
    builder = HaplotypeBuilder(CHR22_REF, CHR22_VCF, [minus["individual"]])
    forward = builder.fixed("22", np.array([minus["tss"]]), 1024).seqs[0, 0]
    assert np.array_equal(minus["seq"], reverse_complement(forward))


def _fake_v2_folder(workdir: Path) -> Path:
    """A study folder as format 2 left it: shards in split folders, meta.json format 2."""
    shards = workdir / "shards"
    (shards / "train").mkdir(parents=True)
    (shards / "train" / "shard-000000.tar").write_bytes(b"\0" * 1024)
    (shards / "meta.json").write_text(json.dumps({"format": 2, "build": "0" * 20}))
    (shards / "manifest.parquet").write_bytes(b"PAR1")
    (shards / "build.json").write_text(json.dumps({"build": "0" * 20}))
    return shards


def test_a_format_2_folder_is_refused_everywhere_with_the_rebuild_command(study, tmp_path,
                                                                          capsys):
    from prep.retarget import main as retarget_main
    from prep.shard import main as shard_main
    from prep.verification import verify_shards
    from prep.verify import main as verify_main

    _prepare(tmp_path)
    shards = _fake_v2_folder(tmp_path)
    h, s = _configs()
    rebuild = "rebuild them with `python -m prep.shard ... --overwrite`"
    with pytest.raises(ShardError, match=f"{shards} holds shards of format 2.*{rebuild}"):
        run_shard(_study(h, s), tmp_path)
    assert (shards / "train" / "shard-000000.tar").exists()  # nothing touched
    for main in (shard_main, retarget_main):
        assert main(["--config", str(CONFIG), "--workdir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert str(shards) in err and "--overwrite" in err and "Traceback" not in err
    problems = verify_shards(shards).problems
    assert len(problems) == 1 and "format 2" in problems[0] and rebuild in problems[0]
    assert verify_main([str(shards), "--quiet"]) == 1
    from prep.shard_reader import iter_study

    with pytest.raises(Exception, match="format 2"):
        next(iter_study(shards))
    # --overwrite removes the old format's shards and folders and writes format 3
    summary = run_shard(_study(h, s), tmp_path, overwrite=True)
    assert summary.get("finalized") and not (shards / "train").exists()
    assert _digests(tmp_path) == _digests(study) and verify_shards(shards).ok


def test_gene_batches_keep_genes_in_order_within_the_memory_budget():
    from prep.shard_build import RECORDS_PER_BASE, gene_batches

    genes = pl.DataFrame({"gene": list("abcdefg"), "chrom": ["1"] * 4 + ["2"] * 3,
                          "tss": [0, 10_000, 400_000, 410_000, 5, 6, 7]})
    width = 50_000
    # 256 MiB for 300 individuals at 1/16 records per base: TSSs within ~3.5 Mb
    batches = gene_batches(genes, width, 300, 256)
    assert [b["gene"].to_list() for b in batches] == [list("abcd"), list("efg")]
    budget = int((1 << 20) / (4 * 300 * RECORDS_PER_BASE))  # 1 MiB: 13,981 bases of span
    batches = gene_batches(genes, 0, 300, 1)
    assert [b["gene"].to_list() for b in batches] == [["a", "b"], ["c", "d"], list("efg")]
    assert budget < 400_000
    assert [b.height for b in gene_batches(genes, 10**9, 300, 1)] == [1, 1, 1, 1, 1, 1, 1]
