"""Every member verifiable: flipped bytes, changed digits, a manifest that does not match, old
formats, windows rebuilt; on the real demo shards (shard format 3)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import polars as pl
import pytest

from prep.gene_record import check_gene_meta
from prep.shard_format import ShardFormatError, decode_meta, encode_meta
from prep.shard_reader import iter_shard
from prep.shard_tar import ShardWriter, read_tar_members
from prep.verification import VerifyError, verify_shards
from prep.verify import main
from tests.loader_demo import demo_shards

SHARD = "shard-000000.tar"


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


def _first_meta(path: Path) -> dict:
    return decode_meta(next(s["json"] for s in read_tar_members(path) if "json" in s))


def test_demo_shards_verify(shards, capsys):
    report = verify_shards(shards, windows=30)
    assert report.ok, report.summary()
    assert (report.shards, report.genes, report.windows) == (5, 26, 30)
    assert report.samples == pl.read_parquet(shards / "manifest.parquet").height
    assert main([str(shards)]) == 0
    assert capsys.readouterr().out.startswith("OK: 5 shard(s), 26 gene record(s), 4212 sample")
    assert main(["--workdir", str(shards.parent), "--split", "val", "--quick"]) == 0
    assert main([str(shards), "--windows", "5", "--split", "test"]) == 0
    assert "5 window(s)" in capsys.readouterr().out


@pytest.mark.parametrize("ext", ["ref.2bit", "var.zst", "json"])
def test_flipped_byte_in_each_member_kind_is_an_error_naming_shard_and_member(
        shards, tmp_path, ext):
    copy = _copy(shards, tmp_path)
    member = _first_member(copy / SHARD, ext)
    # the middle of the member's data: reference bases, compressed edits, JSON text
    _flip(copy / SHARD, member.offset_data + member.size // 2)
    with pytest.raises(ShardFormatError) as err:
        list(iter_shard(copy / SHARD))
    assert SHARD in str(err.value) and member.name in str(err.value)
    report = verify_shards(copy)
    assert not report.ok
    assert any("sha256 differs from meta.json" in p for p in report.problems)
    assert any(member.name in p and SHARD in p for p in report.problems)
    assert report.genes == 25  # the other genes still decode and verify


def test_changed_digit_is_an_error_and_a_resealed_json_fails_its_bounds(shards, tmp_path):
    copy = _copy(shards, tmp_path)
    data = (copy / SHARD).read_bytes()
    meta = _first_meta(copy / SHARD)
    old = f'"tss_rel":{meta["tss_rel"]}'.encode()
    new = f'"tss_rel":{meta["tss_rel"] + 1}'.encode()
    assert len(old) == len(new) and data.count(old) >= 1
    (copy / SHARD).write_bytes(data.replace(old, new, 1))  # same length: the tar stays valid
    with pytest.raises(ShardFormatError, match=r"json: the JSON's bytes do not match its sha256"):
        list(iter_shard(copy / SHARD))
    # a JSON re-encoded with a valid checksum still fails the bounds check
    bad = {k: v for k, v in meta.items() if k != "sha256"} | {"tss_rel": meta["n_ref"]}
    with pytest.raises(ShardFormatError, match=r"tss_rel = \d+ does not place the TSS"):
        check_gene_meta(decode_meta(encode_meta(bad), "m.json"), "m.json")


@pytest.mark.parametrize("field,value,message", [
    ("individuals", ["A", "A"], "is not a list of distinct individual ids"),
    ("width", 10, "is not length \\+ 2 x flank"),
    ("strand", "*", "is not \\+ or -"),
    ("applied", [[0, 1]], "is not .* pairs of variant counts"),
    ("reverse_complemented", 1, "is not true or false"),
])
def test_check_gene_meta_bounds(shards, field, value, message):
    meta = {k: v for k, v in _first_meta(shards / SHARD).items() if k != "sha256"}
    with pytest.raises(ShardFormatError, match=f"g.json: field {field} = .*{message}"):
        check_gene_meta(meta | {field: value}, "g.json")


def test_format_1_groups_are_refused_with_a_rebuild_message():
    v1 = json.dumps({"format": 1, "gene": "G", "Y": [1.0], "individuals": ["A"]}).encode()
    with pytest.raises(ShardFormatError, match="shard format 1.*rebuild the shards"):
        decode_meta(v1, "shard s.tar: member G__train0000.json")


def test_verify_cli_reports_a_damaged_study(shards, tmp_path, capsys):
    copy = _copy(shards, tmp_path)
    member = _first_member(copy / SHARD, "json")
    _flip(copy / SHARD, member.offset_data + 5)
    assert main([str(copy), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert SHARD in err and member.name in err and "Rebuild" in err
    assert main([str(copy), "--quick", "--quiet"]) == 1  # the file's sha256 alone shows it
    with pytest.raises(VerifyError):
        verify_shards(copy, raise_on_problems=True)


def test_verify_sees_a_manifest_that_does_not_match_the_shards(shards, tmp_path):
    copy = _copy(shards, tmp_path)
    m = pl.read_parquet(copy / "manifest.parquet")
    m.with_columns(pl.when(pl.col("row") == 0).then(pl.lit("NA12878")).otherwise(
        pl.col("individual")).alias("individual")).write_parquet(copy / "manifest.parquet")
    problems = verify_shards(copy).problems
    assert any("not those the shards were built for" in p for p in problems)
    assert any("lacks individual(s) NA12878 of the manifest" in p for p in problems)


def test_verify_sees_rows_that_point_at_other_individuals(shards, tmp_path):
    copy = _copy(shards, tmp_path)
    m = pl.read_parquet(copy / "manifest.parquet")
    first = m["gene"][0]
    m.with_columns(pl.when(pl.col("gene") == first).then(pl.col("row").reverse().over("gene"))
                   .otherwise(pl.col("row")).alias("row")).write_parquet(
        copy / "manifest.parquet")
    problems = verify_shards(copy).problems
    assert any(f"gene {first}: the manifest's rows do not point at its individuals" in p
               for p in problems)


def test_verify_sees_a_gene_missing_from_its_shard(shards, tmp_path):
    """A shard rewritten without its first gene (meta.json updated to match): the files check
    out, the manifest's gene is reported missing."""
    copy = _copy(shards, tmp_path)
    samples = list(read_tar_members(copy / SHARD))
    gone = _first_meta(copy / SHARD)["gene"]
    writer = ShardWriter(copy / SHARD)
    for sample in samples[1:]:
        writer.add_gene(sample["__key__"], [(e, sample[e]) for e in ("json", "ref.2bit",
                                                                     "var.zst")])
    writer.close()
    meta = json.loads((copy / "meta.json").read_text())
    data = (copy / SHARD).read_bytes()
    meta["shards"][SHARD] |= {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (copy / "meta.json").write_text(json.dumps(meta))
    problems = verify_shards(copy).problems
    assert problems == [f"shard {copy / SHARD}: gene {gone} of the manifest is missing"]


def test_windows_that_differ_from_their_plain_rebuild_are_reported(shards, monkeypatch):
    import prep.verification as verification

    real = verification.gene_windows

    def off_by_one(record, length, rows):
        seqs, tss_index = real(record, length, rows)
        seqs[:, 1, length // 2] = (seqs[:, 1, length // 2] + 1) % 4
        return seqs, tss_index

    monkeypatch.setattr(verification, "gene_windows", off_by_one)
    report = verify_shards(shards, windows=3)
    assert report.windows == 3 and len(report.problems) == 3
    assert all("haplotype 2: the window built from the record differs" in p
               for p in report.problems)


def test_leftover_shards_are_reported(shards, tmp_path):
    copy = _copy(shards, tmp_path)
    shutil.copyfile(copy / SHARD, copy / "shard-000099.tar")
    problems = verify_shards(copy, deep=False).problems
    assert problems == [f"shard {copy / 'shard-000099.tar'} is not listed in meta.json (left "
                        "over from another build?)"]


def test_a_format_2_shard_file_is_an_error_naming_it_and_the_rebuild(tmp_path):
    """What a format-2 shard held (a reference member, then groups of haplotypes)."""
    path = tmp_path / "shard-000000.tar"
    writer = ShardWriter(path)
    writer.add("G_1__reference.ref.2bit", b"HFR1")
    writer.add("G_1__train0000.hap.zst", b"\0")
    writer.add("G_1__train0000.json", b"{}")
    writer.close()
    with pytest.raises(ShardFormatError, match=r"shard-000000.tar: member G_1__reference was "
                       r"written in shard format 2.*python -m prep.shard \.\.\. --overwrite"):
        list(iter_shard(path))
