"""prep.shard on the real chr22 demo: format, determinism, resume, parts, errors."""

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
from prep.shard_format import unpack_groups
from prep.shard_plan import ShardError, plan_study
from prep.shard_tar import iter_shard, read_tar_members
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
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert meta["counts"]["samples"] == manifest.height
    for shard, info in meta["shards"].items():
        assert (root / shard).exists()
        assert info["samples"] == manifest.filter(pl.col("shard") == shard).height
        assert info["sha256"] == hashlib.sha256((root / shard).read_bytes()).hexdigest()
    assert not any("." in k for k in manifest["key"])
    quality = json.loads((root / "quality.json").read_text())
    assert quality["splits"]["train"]["samples"] == manifest.filter(
        pl.col("split") == "train").height
    assert "individual has expression but is not in the VCF" in quality["dropped"]


def test_shards_readable_by_tar_and_webdataset(study):
    import webdataset as wds

    shard = sorted((study / "shards" / "train").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        names = tar.getnames()
    assert names[0].endswith("__reference.ref.2bit")
    assert {n.split(".", 1)[1] for n in names} == {"ref.2bit", "hap.zst", "json"}
    raw = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert len(raw) == len({n.split(".", 1)[0] for n in names})
    unpacked = list(unpack_groups(raw))
    assert [s["__key__"] for s in unpacked] == [s["__key__"] for s in iter_shard(shard)]


def test_decoded_haplotypes_equal_engine_output(study):
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
        if list(shards.glob("*/shard-*.tar")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    h, s = _configs()
    run_shard(_study(h, s), tmp_path)
    assert _digests(tmp_path) == _digests(study)  # no stale temp file either


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
    shard = sorted((study / "shards" / "train").glob("*.tar"))[0]
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
               "--snps-only", "--shard-samples", "5000", "--set", "shard.group_size=0",
               "--quiet"])
    assert rc == 0
    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta["config"]["haplotypes"]["length"] == 4096
    assert meta["config"]["haplotypes"]["snps_only"] is True
    assert meta["config"]["shard"]["group_size"] == 0
    assert meta["counts"]["shards"] == 3  # one shard per split
    sample = next(iter_shard(tmp_path / "shards" / "test" / "shard-000000.tar"))
    assert sample["seq"].shape == (2, 4096 + 2 * 8)


def test_cli_reports_bad_override(tmp_path, capsys):
    from prep.shard import main

    assert main(["--config", str(CONFIG), "--workdir", str(tmp_path), "--set", "shrd.x=1"]) == 2
    err = capsys.readouterr().err
    assert "shrd" in err and "shard" in err and "Traceback" not in err


def test_reverse_minus_stores_reverse_complemented_windows(tmp_path):
    from prep.encoding import reverse_complement

    _prepare(tmp_path)
    h, s = _configs(group_size=0)
    h = dataclasses.replace(h, reverse_minus=True, length=1024)
    run_shard(_study(h, s), tmp_path)
    samples = list(iter_shard(tmp_path / "shards" / "test" / "shard-000000.tar"))
    minus = next(x for x in samples if x["strand"] == "-" and x["applied"] != [0, 0])
    plus = next(x for x in samples if x["strand"] == "+")
    w = 1024 + 2 * 8
    assert minus["tss_index"] == w - 1 - w // 2 and plus["tss_index"] == w // 2
    builder = HaplotypeBuilder(CHR22_REF, CHR22_VCF, [minus["individual"]])
    forward = builder.fixed("22", np.array([minus["tss"]]), w).seqs[0, 0]
    assert np.array_equal(minus["seq"], reverse_complement(forward))
