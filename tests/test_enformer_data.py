"""prep.enformer_data on small Basenji2 folders of real chr22 sequence: layout, records and
targets exactly as written, the sequence check, N beyond contig ends, determinism, resume,
--part, and errors (one line, exit 2, naming file and record)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hapflow.config import load_study
from prep.enformer_build import run_enformer_data
from prep.enformer_format import decode_enformer_sample
from prep.enformer_plan import EnformerDataError
from prep.shard_format import ShardFormatError
from prep.shard_tar import read_tar_members
from tests import tfrecord_writer as tw
from tests.conftest import CHR22_REF, ROOT, assert_one_error_line

SEQ, BINS, EXT, PER_FILE = 2048, 8, 1024, 3
HUMAN = {  # 7 train records (3 files), 2 valid, 3 test, all in the real 22:20-21 Mb
    "train": [("chr22", 20_100_000 + 5_000 * k) for k in range(7)],
    "valid": [("chr22", 20_300_000 + 7_000 * k) for k in range(2)],
    "test": [("chr22", 20_400_000 + 9_000 * k) for k in range(3)],
}
MOUSE_LEN = 12_000
MOUSE = {"train": [("chrM1", 0), ("chrM1", 5_000), ("chrM1", MOUSE_LEN - SEQ)],
         "valid": [("chrM1", 3_000)]}


def _edit(codes):
    codes[[10, 500, 501, 1500, 2047]] = (codes[[10, 500, 501, 1500, 2047]] + 1) % 4
    codes[100:110] = 4  # N in the record where the FASTA has bases
    return codes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("basenji")
    human = tw.basenji_folder(root / "human", CHR22_REF, HUMAN, seq_length=SEQ,
                              target_length=BINS, num_targets=6, records_per_file=PER_FILE,
                              edits={("train", 4): _edit})
    mouse_fa = tw.write_small_fasta(root / "mouse.fa", "chrM1",
                                    tw.fasta_slice(CHR22_REF, "22", 20_200_000,
                                                   20_200_000 + MOUSE_LEN))
    mouse = tw.basenji_folder(root / "mouse", mouse_fa, MOUSE, seq_length=SEQ,
                              target_length=BINS, num_targets=4, records_per_file=PER_FILE,
                              seed=1)
    config = root / "study.toml"
    config.write_text(f"""
[enformer_data]
human = "human"
human_reference = "{CHR22_REF}"
mouse = "mouse"
mouse_reference = "mouse.fa"
extend = {EXT}
records_per_file = {PER_FILE}
samples_per_shard = 2
workers = 2
""")
    return {"root": root, "config": config, "human": human, "mouse": mouse,
            "mouse_fa": mouse_fa}


def _study(config: Path, **overrides):
    return load_study(config, {"enformer_data": overrides} if overrides else None,
                      need=("enformer_data", "haplotypes"))


def _digests(workdir: Path) -> dict[str, str]:
    out = workdir / "enformer_data"
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("work")
    summary = run_enformer_data(_study(inputs["config"]), workdir)
    assert summary["finalized"] and summary["built"] == summary["shards"]
    return workdir


def _samples(workdir: Path) -> dict[str, dict]:
    out = {}
    for shard in sorted((workdir / "enformer_data").glob("*/*/shard-*.tar")):
        for raw in read_tar_members(shard):
            sample = decode_enformer_sample(raw)
            out[sample["__key__"]] = sample
    return out


def test_layout_manifest_and_origins(built):
    out = built / "enformer_data"
    m = pl.read_parquet(out / "manifest.parquet")
    assert m.height == 7 + 2 + 3 + 3 + 1
    assert m.columns == ["organism", "split", "shard", "index", "key", "record", "source",
                         "source_record", "chrom", "centre_start", "centre_end", "start", "end",
                         "beyond_contig", "mismatches", "n_differences", "build"]
    train = m.filter((pl.col("organism") == "human") & (pl.col("split") == "train"))
    assert train["source"].to_list() == ["tfrecords/train-0.tfr"] * 3 + \
        ["tfrecords/train-1.tfr"] * 3 + ["tfrecords/train-2.tfr"]
    assert train["source_record"].to_list() == [0, 1, 2, 0, 1, 2, 0]
    assert train["shard"].to_list()[:4] == ["human/train/shard-00000-000.tar"] * 2 + \
        ["human/train/shard-00000-001.tar", "human/train/shard-00001-000.tar"]
    assert train["key"][5] == "human_train_000005"
    assert train["centre_start"].to_list() == [s for _, s in HUMAN["train"]]
    assert (m["end"] - m["start"]).unique().to_list() == [SEQ + 2 * EXT]
    assert set(m.filter(pl.col("organism") == "mouse")["split"]) == {"train", "val"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["organisms"]["human"]["target_shape"] == [BINS, 6]
    assert meta["organisms"]["mouse"]["window"] == SEQ + 2 * EXT
    for shard, info in meta["shards"].items():
        assert hashlib.sha256((out / shard).read_bytes()).hexdigest() == info["sha256"]
    assert sum(i["samples"] for i in meta["shards"].values()) == m.height
    for name in ("quality.json", "config.toml", "build.json", "README.txt"):
        assert (out / name).exists()


def test_samples_hold_the_records_targets_and_fasta_flanks(built, inputs):
    samples = _samples(built)
    m = pl.read_parquet(built / "enformer_data" / "manifest.parquet")
    for row in m.iter_rows(named=True):
        s = samples[row["key"]]
        label = {"val": "valid"}.get(row["split"], row["split"])
        codes, target = inputs[row["organism"]][(label, row["record"])]
        assert s["seq"].shape == (SEQ + 2 * EXT,) and s["seq"].dtype == np.uint8
        np.testing.assert_array_equal(s["seq"][EXT:EXT + SEQ], codes)
        assert s["target"].dtype == np.float16 and s["target"].tobytes() == target.tobytes()
        fasta = CHR22_REF if row["organism"] == "human" else inputs["mouse_fa"]
        chrom = "22" if row["organism"] == "human" else "chrM1"
        flanks = tw.fasta_slice(fasta, chrom, row["start"], row["end"])
        np.testing.assert_array_equal(s["seq"][:EXT], flanks[:EXT])
        np.testing.assert_array_equal(s["seq"][-EXT:], flanks[-EXT:])
        assert s["meta"]["source"] == row["source"] and s["organism"] == row["organism"]


def test_mismatches_against_the_fasta_are_counted(built):
    m = pl.read_parquet(built / "enformer_data" / "manifest.parquet")
    edited = m.filter(pl.col("key") == "human_train_000004").row(0, named=True)
    assert edited["mismatches"] == 5 and edited["n_differences"] == 10
    assert m.filter(pl.col("key") != "human_train_000004")["mismatches"].sum() == 0
    q = json.loads((built / "enformer_data" / "quality.json").read_text())
    train = q["human"]["train"]
    assert train["records"] == 7 and train["mismatched_bases"] == 5
    assert train["records_with_mismatches"] == 1
    assert train["first_record_with_mismatches"]["source"] == "tfrecords/train-1.tfr"
    assert train["first_record_with_mismatches"]["source_record"] == 1
    assert q["human"]["test"]["mismatched_bases"] == 0


def test_windows_beyond_contig_ends_are_n(built):
    samples = _samples(built)
    first, last = samples["mouse_train_000000"], samples["mouse_train_000002"]
    assert (first["seq"][:EXT] == 4).all() and (first["seq"][EXT:EXT + 10] < 4).any()
    assert (last["seq"][-EXT:] == 4).all()
    assert first["meta"]["start"] == -EXT
    m = pl.read_parquet(built / "enformer_data" / "manifest.parquet")
    assert dict(zip(m["key"], m["beyond_contig"], strict=True))["mouse_train_000002"] == EXT
    assert dict(zip(m["key"], m["beyond_contig"], strict=True))["mouse_train_000001"] == 0


def test_rerun_is_byte_identical_and_has_nothing_to_do(built, inputs, tmp_path):
    again = run_enformer_data(_study(inputs["config"]), built)
    assert again["nothing_to_do"]
    other = tmp_path / "w"
    run_enformer_data(_study(inputs["config"], workers=1), other)  # threads: same bytes
    a, b = _digests(other), _digests(built)
    for name in ("config.toml", "meta.json"):  # these record workers = 1
        del a[name], b[name]
    assert a == b


def test_resume_keeps_finished_shards_and_removes_dead_temps(built, inputs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(built, work)
    out = work / "enformer_data"
    kept = out / "human/train/shard-00000-000.tar"
    before = kept.stat().st_mtime_ns
    for s in ("human/train/shard-00000-001.tar", "mouse/val/shard-00000-000.tar"):
        (out / s).unlink()
    (out / "meta.json").unlink()
    host = socket.gethostname().replace(".", "-")
    dead = out / "human/train" / f".shard-00000-001.tar.{host}.999999999.abcd.tmp"
    dead.write_bytes(b"partial")
    summary = run_enformer_data(_study(inputs["config"]), work)
    assert summary["built"] == 2 and summary["finalized"]
    assert not dead.exists() and kept.stat().st_mtime_ns == before
    assert _digests(work) == _digests(built)


def test_parts_union_equals_a_single_run(built, inputs, tmp_path):
    work = tmp_path / "w"
    for k in (1, 2, 3):
        summary = run_enformer_data(_study(inputs["config"]), work, part=(k, 3))
        assert summary.get("finalized", False) == (k == 3)
    assert _digests(work) == _digests(built)


def _cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "prep.enformer_data", *args, "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)




def test_resume_after_kill(built, inputs, tmp_path):
    work = tmp_path / "w"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prep.enformer_data", "--config", str(inputs["config"]),
         "--workdir", str(work), "--workers", "1", "--quiet"], cwd=ROOT, env=env,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if any((work / "enformer_data").glob("*/*/shard-*.tar")):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = _cli("--config", str(inputs["config"]), "--workdir", str(work))
    assert out.returncode == 0, out.stderr
    assert not list((work / "enformer_data").rglob(".*.tmp"))
    assert _digests(work) == _digests(built)


def _copy_inputs(inputs, tmp_path) -> Path:
    root = tmp_path / "in"
    shutil.copytree(inputs["root"], root)
    return root


def test_bad_crc_is_one_error_line_naming_file_and_record(inputs, tmp_path):
    root = _copy_inputs(inputs, tmp_path)
    path = root / "human" / "tfrecords" / "test-0.tfr"
    raw = bytearray(zlib.decompress(path.read_bytes()))
    first = 12 + int.from_bytes(raw[:8], "little") + 4
    raw[first + 12 + 1000] ^= 0x04  # a byte of record 1's data
    path.write_bytes(zlib.compress(bytes(raw)))
    out = _cli("--config", str(root / "study.toml"), "--workdir", str(tmp_path / "w"))
    assert_one_error_line(out, "test-0.tfr", "record 1", "bad CRC")


def test_truncated_file_is_one_error_line(inputs, tmp_path):
    root = _copy_inputs(inputs, tmp_path)
    path = root / "mouse" / "tfrecords" / "train-0.tfr"
    path.write_bytes(path.read_bytes()[:-300])
    out = _cli("--config", str(root / "study.toml"), "--workdir", str(tmp_path / "w"))
    assert_one_error_line(out, "train-0.tfr", "record 2", "truncated")
    assert not list((tmp_path / "w" / "enformer_data").rglob(".*.tmp"))


def test_wrong_genome_build_names_the_first_bad_record(inputs, tmp_path):
    wrong = tw.write_small_fasta(tmp_path / "wrong.fa", "chr22",
                                 np.roll(tw.fasta_slice(CHR22_REF, "22", 0, 20_500_000), 977))
    out = _cli("--config", str(inputs["config"]), "--workdir", str(tmp_path / "w"),
               "--set", f"enformer_data.human_reference={wrong}", "--set",
               "enformer_data.splits=test", "--workers", "1")
    assert_one_error_line(out, "test-0.tfr: record 0", "differ from", "genome build")


def test_folder_errors_before_anything_is_written(inputs, tmp_path):
    out = _cli("--config", str(inputs["config"]), "--workdir", str(tmp_path / "w"),
               "--set", "enformer_data.records_per_file=2")
    assert_one_error_line(out, "records_per_file", "train-N.tfr")
    out = _cli("--config", str(inputs["config"]), "--workdir", str(tmp_path / "w"),
               "--human", str(tmp_path / "nowhere"))
    assert_one_error_line(out, "nowhere")
    assert not (tmp_path / "w" / "enformer_data").exists()
    study = _study(inputs["config"], mouse_reference=str(CHR22_REF))
    with pytest.raises(EnformerDataError, match="chrM1"):
        run_enformer_data(study, tmp_path / "w")


def test_other_settings_are_refused_then_overwritten(built, inputs, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(built, work)
    with pytest.raises(EnformerDataError, match=r"\[enformer_data\] extend: 1024 -> 512"):
        run_enformer_data(_study(inputs["config"], extend=512), work)
    summary = run_enformer_data(_study(inputs["config"], extend=512), work, overwrite=True)
    assert summary["finalized"]
    m = pl.read_parquet(work / "enformer_data" / "manifest.parquet")
    assert (m["end"] - m["start"]).unique().to_list() == [SEQ + 1024]


def test_a_corrupt_member_is_named(built, tmp_path):
    shard = built / "enformer_data" / "human" / "test" / "shard-00000-000.tar"
    raw = list(read_tar_members(shard))
    sample = dict(raw[0])
    blob = bytearray(sample["target.f16.zst"])
    blob[-6] ^= 0xFF
    sample["target.f16.zst"] = bytes(blob)
    with pytest.raises(ShardFormatError, match=r"human_test_000000\.target\.f16\.zst"):
        decode_enformer_sample(sample)


def test_shards_read_through_webdataset(built):
    import webdataset as wds

    shard = built / "enformer_data" / "human" / "train" / "shard-00000-000.tar"
    raw = list(wds.WebDataset(str(shard), shardshuffle=False))
    assert [s["__key__"] for s in raw] == ["human_train_000000", "human_train_000001"]
    sample = decode_enformer_sample(raw[0])
    assert sample["seq"].shape == (SEQ + 2 * EXT,) and sample["target"].shape == (BINS, 6)
