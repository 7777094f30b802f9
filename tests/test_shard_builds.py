"""Build fingerprints: a re-run resumes only its own build, never mixes two (real chr22 demo)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from hapflow.config import StudyConfig
from prep.expression_files import read_expression, write_expression
from prep.fingerprint import describe_changes, file_sha256
from prep.shard_finalize import finalize
from prep.shard_plan import ShardError, plan_study
from prep.shard_resume import remove_stale_temps
from prep.shard_tar import ShardWriter
from prep.sharding import run_shard
from tests.conftest import ROOT, assert_one_error_line
from tests.test_shard import CONFIG, _configs, _digests, _prepare


def _shift_expression(workdir: Path, delta: float = 1.0) -> None:
    """Re-target the study: every expression value moves by ``delta`` (as another
    prep.expression setting would)."""
    path = workdir / "expression" / "expression.parquet"
    m = read_expression(path)
    write_expression(m.with_columns(pl.exclude("gene") + delta), path)


@pytest.fixture()
def built(tmp_path) -> Path:
    _prepare(tmp_path)
    h, s = _configs()
    run_shard(StudyConfig(haplotypes=h, shard=s), tmp_path)
    return tmp_path


def test_every_gene_record_and_the_manifest_carry_the_build(built):
    root = built / "shards"
    manifest = pl.read_parquet(root / "manifest.parquet")
    build = json.loads((root / "meta.json").read_text())["build"]
    assert manifest["build"].unique().to_list() == [build]
    record = json.loads((root / "build.json").read_text())
    assert record["build"] == build
    assert record["components"]["format"] == 3  # another shard format is another build
    from prep.shard_tar import read_tar_members

    for shard in manifest["shard"].unique():
        metas = [json.loads(m["json"]) for m in read_tar_members(root / shard) if "json" in m]
        assert metas and {m["build"] for m in metas} == {build}


def test_rerun_with_new_expression_values_retargets_without_touching_shards(built, caplog):
    before = _digests(built)
    old = pl.read_parquet(built / "shards" / "manifest.parquet")
    _shift_expression(built)
    h, s = _configs()
    with caplog.at_level("INFO", logger="prep"):
        summary = run_shard(StudyConfig(haplotypes=h, shard=s), built)
    assert summary["retargeted"] and summary["built"] == 0
    assert "only the targets changed" in caplog.text
    after = _digests(built)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"manifest.parquet", "targets.json"}  # shards, meta, build untouched
    new = pl.read_parquet(built / "shards" / "manifest.parquet")
    assert new.select(old.columns[:11]).equals(old.select(old.columns[:11]))  # split..strand
    assert abs((new["Y"] - old["Y"] - 1.0).abs().max()) < 1e-9
    assert (new["Z"] - old["Z"]).abs().max() < 1e-9  # a shift moves Y, not the z-scores
    assert new["targets_build"][0] != old["targets_build"][0]


def test_rerun_with_other_length_names_the_setting(built):
    h, s = _configs()
    with pytest.raises(ShardError, match=r"\[haplotypes\] length: 49152 -> 4096"):
        run_shard(StudyConfig(haplotypes=dataclasses.replace(h, length=4096), shard=s), built)
    with pytest.raises(ShardError, match=r"\[haplotypes\] snps_only: False -> True"):
        run_shard(StudyConfig(haplotypes=dataclasses.replace(h, snps_only=True), shard=s), built)


def test_rerun_with_another_seed_says_what_changed_and_names_overwrite(built):
    """Issue 15, 9a: the command's one error line lists the changed seed, what it changes (the
    split) and how many samples moved, and names --overwrite (it used to stop at the colon)."""
    cmd = [sys.executable, "-m", "prep.shard", "--config", str(CONFIG), "--workdir", str(built),
           "--set", "shard.shard_samples=700", "--set", "shard.seed=1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert_one_error_line(out, "[shard] seed: 0 -> 1 (the split of individuals)",
                          "samples are in another split", "--overwrite")
    error = next(ln for ln in out.stderr.splitlines() if ln.startswith("error: "))
    assert error.rstrip().endswith("use another --workdir to keep both"), error


def test_rerun_with_another_shard_size_names_the_layout_change(built):
    h, s = _configs()
    with pytest.raises(ShardError) as err:
        run_shard(StudyConfig(haplotypes=h, shard=dataclasses.replace(s, shard_samples=300)),
                  built)
    message = str(err.value)
    assert "\n" not in message
    assert "[shard] shard_samples: 700 -> 300 (how genes fill shards)" in message
    assert re.search(r"the sample layout changed: the samples differ in [a-z, ]*shard", message)
    assert "--overwrite" in message


def test_rerun_with_other_individuals_refuses_as_another_layout(built):
    path = built / "expression" / "expression.parquet"
    m = read_expression(path)
    write_expression(m.drop(m.columns[1:4]), path)  # three individuals fewer: other samples
    h, s = _configs()
    with pytest.raises(ShardError, match=r"individuals 162 -> 159 \(3 left out, e\.g\. ") as err:
        run_shard(StudyConfig(haplotypes=h, shard=s), built)
    assert "the expression matrix's genes or individuals" in str(err.value)


def test_overwrite_rebuilds_and_loader_targets_match_manifest(built):
    from loader import make_loader

    h, s = _configs()
    h = dataclasses.replace(h, snps_only=True)
    with pytest.raises(ShardError, match="snps_only"):
        run_shard(StudyConfig(haplotypes=h, shard=s), built)
    _shift_expression(built, 5.0)
    summary = run_shard(StudyConfig(haplotypes=h, shard=s), built, overwrite=True)
    assert summary["built"] == summary["shards"] and summary["finalized"]
    manifest = pl.read_parquet(built / "shards" / "manifest.parquet")
    loader = make_loader(built / "shards", split="val", mode="eval", batch_size=8, num_workers=0)
    for batch in loader:
        valid = batch["valid"].numpy()
        rows = batch["index"].numpy()[valid]
        expected = manifest["Y"].to_numpy()[rows]
        assert abs(batch["Y"].numpy()[valid] - expected).max() < 1e-5


def test_rerun_with_nothing_to_do_says_so(built, caplog):
    before = _digests(built)
    h, s = _configs()
    with caplog.at_level("INFO", logger="prep"):
        summary = run_shard(StudyConfig(haplotypes=h, shard=s), built)
    assert summary["nothing_to_do"] and summary["built"] == 0
    assert "Nothing to do" in caplog.text and "Wrote" not in caplog.text
    assert _digests(built) == before


def test_loader_refuses_a_shard_of_another_build(built, tmp_path_factory):
    from loader import make_loader
    from loader.sources import StaleShardError

    other = tmp_path_factory.mktemp("other")
    _prepare(other)
    h, s = _configs()
    # same layout, other sequences
    run_shard(StudyConfig(haplotypes=dataclasses.replace(h, snps_only=True), shard=s), other)
    shard = "shard-000000.tar"
    shutil.copyfile(other / "shards" / shard, built / "shards" / shard)
    loader = make_loader(built / "shards", split="train", mode="train", batch_size=8,
                         num_workers=0, on_error="skip")  # skip covers damage, not other builds
    with pytest.raises(StaleShardError, match="shard-000000.tar was written by build"):
        for _ in loader:
            pass
    with pytest.raises(ShardError, match="shard-000000.tar"):  # and prep.shard sees it too
        run_shard(StudyConfig(haplotypes=h, shard=s), built)


def test_parts_of_different_builds_refuse_to_finalise(built):
    h, s = _configs()
    _shift_expression(built)
    plan = plan_study(h, s, built)  # the other build's plan; the shards on disk are the first's
    with pytest.raises(ShardError, match="--part jobs ran with different settings"):
        finalize(plan, StudyConfig(haplotypes=h, shard=s), built, "0" * 20, {"inputs": {}})


def test_temp_names_are_unique_and_only_dead_writers_are_cleaned(tmp_path):
    shard = tmp_path / "train" / "shard-000000.tar"
    a, b = ShardWriter(shard), ShardWriter(shard)
    assert a._tmp != b._tmp and socket.gethostname().split(".")[0] in a._tmp.name
    b.abort()
    live_here = a._tmp  # this process: aborted writers of ours are stale
    host = socket.gethostname().replace(".", "-")
    parent_alive = shard.parent / f".{shard.name}.{host}.{os.getppid()}.00ff00ff.tmp"
    dead_here = shard.parent / f".{shard.name}.{host}.999999999.00ff00ff.tmp"
    other_fresh = shard.parent / f".{shard.name}.node-7.123.abcdabcd.tmp"
    other_old = shard.parent / f".{shard.name}.node-8.123.abcdabcd.tmp"
    for p in (parent_alive, dead_here, other_fresh, other_old):
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(other_old, (old, old))
    remove_stale_temps(shard)
    assert parent_alive.exists() and other_fresh.exists()
    assert not dead_here.exists() and not other_old.exists() and not live_here.exists()
    a._fh.close()


def test_input_checksums_are_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("abc")
    cache = tmp_path / "cache"
    first = file_sha256(f, cache)
    assert first == file_sha256(f, cache)
    f.write_text("abd")
    os.utime(f, ns=(time.time_ns() + 10**9,) * 2)
    assert file_sha256(f, cache) != first


def test_describe_changes_lists_each_difference():
    old = {"format": 1, "code": 1, "settings": {"shard": {"flank": 8}},
           "inputs": {"vcf": "a" * 64}}
    new = {"format": 1, "code": 1, "settings": {"shard": {"flank": 16}},
           "inputs": {"vcf": "b" * 64, "samples_file": "c" * 64}}
    lines = describe_changes(old, new)
    assert "[shard] flank: 8 -> 16 (the bases stored beside each window)" in lines
    assert any(line.startswith("input vcf: content changed") for line in lines)
    assert "input samples_file: added" in lines
    assert describe_changes(None, new)[0].startswith("the existing shards carry no build")
    seed = describe_changes({**old, "samples": "a"}, {**old, "samples": "b", "settings": {
        "shard": {"flank": 8, "seed": 1}}}, ["3 of 9 (gene, individual) samples are in another "
                                             "split"])
    assert seed == ["[shard] seed: '(unset)' -> 1 (the split of individuals)",
                    "the sample layout changed: 3 of 9 (gene, individual) samples are in another "
                    "split (as [shard] seed decides)"]


def test_a_chrom_pattern_names_the_same_build(built, tmp_path):
    """[haplotypes] vcf as a 1000 Genomes-style {chrom} pattern finds the same file: same build,
    nothing to do."""
    h, s = _configs()
    for ext in ("", ".tbi"):
        (tmp_path / f"ALL.chr22.phase3.genotypes.vcf.gz{ext}").symlink_to(f"{h.vcf}{ext}")
    pattern = str(tmp_path / "ALL.chr{chrom}.phase3.genotypes.vcf.gz")
    summary = run_shard(StudyConfig(haplotypes=dataclasses.replace(h, vcf=pattern), shard=s),
                        built)
    assert summary.get("nothing_to_do") and summary["built"] == 0
