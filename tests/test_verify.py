"""Every member verifiable: flipped bytes, changed digits and old formats on real demo shards
(format 2: prep.verification; the loader reads format 3 and has its own tests of damaged
members, tests/test_loader_stages.py and test_loader_dataloader.py)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from loader import make_loader
from prep.shard_format import ShardFormatError, check_meta, decode_meta, encode_meta
from prep.shard_tar import iter_shard, read_tar_members
from prep.verification import VerifyError, verify_shards
from prep.verify import main
from tests.loader_demo import demo_shards

SHARD = "val/shard-000000.tar"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp())


def _copy(shards: Path, dst: Path) -> Path:
    out = dst / "shards"
    shutil.copytree(shards, out)
    return out


def _first_member(path: Path, ext: str) -> tarfile.TarInfo:
    with tarfile.open(path) as tar:
        return next(m for m in tar.getmembers() if m.name.endswith("." + ext))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def test_demo_shards_verify(shards, capsys):
    report = verify_shards(shards)
    assert report.ok, report.summary()
    assert report.shards == 6 and report.groups > 0
    import polars as pl

    assert report.samples == pl.read_parquet(shards / "manifest.parquet").height
    assert main([str(shards)]) == 0
    assert capsys.readouterr().out.startswith("OK: 6 shard(s)")
    assert main(["--workdir", str(shards.parent), "--split", "val", "--quick"]) == 0


@pytest.mark.parametrize("ext", ["ref.2bit", "hap.zst", "json"])
def test_flipped_byte_in_each_member_kind_is_an_error_naming_shard_and_member(
        shards, tmp_path, ext):
    copy = _copy(shards, tmp_path)
    member = _first_member(copy / SHARD, ext)
    # the middle of the member's data: reference bases, compressed haplotypes, JSON text
    _flip(copy / SHARD, member.offset_data + member.size // 2)
    where = f"{SHARD}: member {member.name}" if ext != "ref.2bit" else "member "
    with pytest.raises(ShardFormatError) as err:
        list(iter_shard(copy / SHARD))
    assert "shard-000000.tar" in str(err.value) and member.name in str(err.value)
    assert where in str(err.value)
    report = verify_shards(copy)
    assert not report.ok
    assert any("sha256 differs from meta.json" in p for p in report.problems)
    assert any(member.name in p for p in report.problems)


def test_changed_tss_index_digit_is_an_error(shards, tmp_path):
    copy = _copy(shards, tmp_path)
    data = (copy / SHARD).read_bytes()
    meta = json.loads(next(s["json"] for s in read_tar_members(copy / SHARD) if "json" in s))
    old = f'"tss_index":{meta["tss_index"]}'.encode()
    new = f'"tss_index":{meta["tss_index"] + 1}'.encode()
    assert len(old) == len(new) and data.count(old) >= 1
    (copy / SHARD).write_bytes(data.replace(old, new, 1))  # same length: the tar stays valid
    with pytest.raises(ShardFormatError, match=r"json: the JSON's bytes do not match its sha256"):
        list(iter_shard(copy / SHARD))
    # a JSON re-encoded with a valid checksum still fails the bounds check
    bad = {k: v for k, v in meta.items() if k != "sha256"}
    bad["tss_index"] += 1
    with pytest.raises(ShardFormatError, match=r"tss_index = \d+ is not where a window"):
        check_meta(decode_meta(encode_meta(bad), "m.json"), "m.json")


@pytest.mark.parametrize("field,value,message", [
    ("individuals", ["A", "A"], "lists an individual twice"),
    ("window", 10, "is not length \\+ 2 \\* flank"),
    ("populations", ["EUR"], "is not a list of"),
    ("split", "training", "is not one of"),
    ("applied", [[0, -1]], "is not 1 pairs of variant counts"),
    ("applied", [[0], [1, 2]], "pairs of variant counts"),
])
def test_check_meta_bounds(shards, field, value, message):
    meta = decode_meta(next(s["json"] for s in read_tar_members(shards / SHARD) if "json" in s))
    meta = {k: v for k, v in meta.items() if k != "sha256"} | {field: value}
    if field == "applied" and len(value) == 1:
        meta |= {"individuals": ["A"], "populations": ["EUR"]}
    with pytest.raises(ShardFormatError, match=f"g.json: field {field} = .*{message}"):
        check_meta(meta, "g.json")


def test_format_1_groups_are_refused_with_a_rebuild_message():
    v1 = json.dumps({"format": 1, "gene": "G", "Y": [1.0], "individuals": ["A"]}).encode()
    with pytest.raises(ShardFormatError, match="shard format 1.*rebuild the shards"):
        decode_meta(v1, "shard s.tar: member G__train0000.json")


def test_verify_cli_and_loader_on_request_report_a_damaged_study(shards, tmp_path, capsys):
    copy = _copy(shards, tmp_path)
    member = _first_member(copy / SHARD, "json")
    _flip(copy / SHARD, member.offset_data + 5)
    assert main([str(copy), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "shard-000000.tar" in err and member.name in err and "Rebuild" in err
    assert main([str(copy), "--quick", "--quiet"]) == 1  # the file's sha256 alone shows it
    assert main([str(copy), "--split", "train", "--quiet"]) == 0  # other splits are intact
    with pytest.raises(ShardFormatError, match=member.name):
        make_loader(copy, split="val", mode="eval", num_workers=0, verify=True)
    # the intact split verifies; the loader then refuses these format-2 shards (it reads format 3)
    with pytest.raises(ShardFormatError, match="format 2"):
        make_loader(copy, split="train", mode="eval", num_workers=0, verify=True)
    with pytest.raises(VerifyError):
        verify_shards(copy, raise_on_problems=True)


def test_verify_sees_a_manifest_that_does_not_match_the_shards(shards, tmp_path):
    import polars as pl

    copy = _copy(shards, tmp_path)
    m = pl.read_parquet(copy / "manifest.parquet")
    m.with_columns(pl.when(pl.col("index") == 0).then(pl.lit("NA12878")).otherwise(
        pl.col("individual")).alias("individual")).write_parquet(copy / "manifest.parquet")
    problems = verify_shards(copy).problems
    assert any("not those the shards were built for" in p for p in problems)
    assert any("individuals differ from the manifest's" in p for p in problems)
