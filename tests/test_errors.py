"""Bad and hostile inputs built from the bundled real data: one clear line, nothing half-written.

The corpus (module fixture ``corpus``) is made from the real chr22 demo VCF with pysam: cut in
half, two records swapped (with the sorted file's index), no index, an index older than its data,
a REF flipped, a GT allele out of range, a record missing sample columns, a corrupt bgzip block;
and a FASTA with a corrupt block. Each kind runs ``prep.shard``'s command line, which must exit 2
with one ``error:`` line naming the file, and leave no table (manifest, splits, config,
build.json, ...) and no temp file behind.

Tests run as root, for whom a read-only folder is writable: a workdir that cannot be written is
simulated by a path through a regular file (``shards`` is a file), and a full disk by
``RLIMIT_FSIZE`` in a child process (the kernel then fails writes with EFBIG, as a full disk fails
them with ENOSPC).
"""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

from prep.shard_finalize import STUDY_TABLES
from tests.conftest import CHR22_REF, CHR22_VCF, ROOT

CONFIG = ROOT / "configs" / "demo.toml"


def _bgzip(lines: list[str], out: Path, index: bool = True) -> Path:
    text = out.with_suffix("")  # x.vcf.gz -> x.vcf
    text.write_text("".join(lines))
    pysam.tabix_compress(str(text), str(out), force=True)
    text.unlink()
    if index:
        pysam.tabix_index(str(out), preset="vcf", force=True)
    return out


def _with_field(line: str, col: int, value: str) -> str:
    fields = line.rstrip("\n").split("\t")
    fields[col] = value
    return "\t".join(fields) + "\n"


def _flip_block(path: Path, start: int) -> None:
    """Overwrite 64 bytes in the middle of the bgzip block that begins at byte ``start``."""
    data = bytearray(path.read_bytes())
    bsize = struct.unpack_from("<H", data, start + 16)[0] + 1
    mid = start + bsize // 2
    data[mid: mid + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    with gzip.open(CHR22_VCF, "rt") as fh:
        lines = fh.readlines()
    head = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    out = {}
    raw = CHR22_VCF.read_bytes()
    out["truncated"] = d / "truncated.vcf.gz"
    out["truncated"].write_bytes(raw[: len(raw) // 2])
    shutil.copy(str(CHR22_VCF) + ".tbi", str(out["truncated"]) + ".tbi")
    sorted_ = _bgzip(head + body, d / "sorted.vcf.gz")
    swapped = body[:-2] + [body[-1], body[-2]]  # both in the last block: the index still fits
    out["unsorted"] = _bgzip(head + swapped, d / "unsorted.vcf.gz", index=False)
    shutil.copy(str(sorted_) + ".tbi", str(out["unsorted"]) + ".tbi")
    out["unindexed"] = _bgzip(head + body, d / "unindexed.vcf.gz", index=False)
    out["stale_index"] = _bgzip(head + body[:200] + body[900:], d / "stale.vcf.gz", index=False)
    shutil.copy(str(sorted_) + ".tbi", str(out["stale_index"]) + ".tbi")
    os.utime(str(out["stale_index"]) + ".tbi", (1e9, 1e9))  # indexed long before the rewrite
    ref = body[50].split("\t")[3]
    flipped = {"A": "C", "C": "G", "G": "T", "T": "A"}[ref]
    out["ref_mismatch"] = _bgzip(head + body[:50] + [_with_field(body[50], 3, flipped)]
                                 + body[51:], d / "ref_mismatch.vcf.gz")
    gt = body[60].split("\t")[9]
    out["gt_range"] = _bgzip(head + body[:60] + [_with_field(body[60], 9, "5|0" + gt[3:])]
                             + body[61:], d / "gt_range.vcf.gz")
    short = "\t".join(body[70].rstrip("\n").split("\t")[:-3]) + "\n"
    out["short_record"] = _bgzip(head + body[:70] + [short] + body[71:], d / "short.vcf.gz")
    out["corrupt_block"] = _bgzip(head + body, d / "corrupt.vcf.gz")
    with pysam.TabixFile(str(out["corrupt_block"])) as tbx:  # a block holding ARVCF's records
        first = next(tbx.fetch("22", 20_004_000, 20_004_100))
    offset = _block_of(out["corrupt_block"], head, body, first)
    _flip_block(out["corrupt_block"], offset)
    return out


def _block_of(path: Path, head: list[str], body: list[str], line: str) -> int:
    """Byte offset of the bgzip block holding the uncompressed offset of ``line``."""
    text = "".join(head + body).encode()
    target = text.index(line.encode())
    data = path.read_bytes()
    pos = upos = 0
    while pos < len(data):
        bsize = struct.unpack_from("<H", data, pos + 16)[0] + 1
        isize = struct.unpack_from("<I", data, pos + bsize - 4)[0]
        if upos + isize > target:
            return pos
        pos, upos = pos + bsize, upos + isize
    raise AssertionError("line not found")


@pytest.fixture(scope="module")
def expression(tmp_path_factory) -> Path:
    from hapflow.config import load_config
    from hapflow.sections import ExpressionConfig
    from prep.expression_files import read_expression, write_expression
    from prep.expression_processing import log1p_expression

    e = load_config(ExpressionConfig, CONFIG, "expression")
    path = tmp_path_factory.mktemp("expr") / "expression.parquet"
    write_expression(log1p_expression(read_expression(e.input)), path)
    return path


def _shard_cli(workdir: Path, expression: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIG), "--workdir", str(workdir), "--expression", str(expression),
            "--quiet", *extra]


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


def _assert_nothing_half_written(workdir: Path) -> None:
    shards = workdir / "shards"
    left = [p.name for p in shards.rglob("*")] if shards.is_dir() else []
    assert not [n for n in left if n in STUDY_TABLES or n == "meta.json"], left
    assert not [n for n in left if n.endswith(".tmp")], left


KINDS = {  # kind -> words the message must hold besides the file name
    "truncated": "truncated",
    "unsorted": "not sorted",
    "unindexed": "no index",
    "stale_index": "older than its VCF",
    "ref_mismatch": "REF at 22:",
    "gt_range": "GT allele 5",
    "short_record": "fewer sample",
    "corrupt_block": "corrupt",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_vcf_stops_with_one_line_and_leaves_no_tables(kind, corpus, expression, tmp_path,
                                                          capsys):
    from prep.shard import main

    rc = main(_shard_cli(tmp_path, expression, "--vcf", str(corpus[kind])))
    err = capsys.readouterr().err
    assert rc == 2
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert corpus[kind].name in lines[0] and KINDS[kind] in lines[0], lines[0]
    _assert_nothing_half_written(tmp_path)


def test_inputs_are_checked_before_anything_is_written(corpus, expression, tmp_path):
    from prep.shard import main

    for kind in ("truncated", "unindexed", "stale_index"):
        assert main(_shard_cli(tmp_path, expression, "--vcf", str(corpus[kind]))) == 2
        assert not (tmp_path / "shards").exists(), kind


def test_a_failed_build_resumes_cleanly_once_the_input_is_fixed(corpus, expression, tmp_path):
    """After a REF-mismatch stop, the fixed input builds a complete study (no debris in it)."""
    from prep.shard import main

    assert main(_shard_cli(tmp_path, expression, "--vcf", str(corpus["ref_mismatch"]))) == 2
    assert main(_shard_cli(tmp_path, expression)) == 0
    names = {p.name for p in (tmp_path / "shards").iterdir()}
    assert {"meta.json", *STUDY_TABLES} <= names
    assert not list((tmp_path / "shards").rglob("*.tmp"))


def test_unwritable_workdir_is_one_line_naming_the_path(expression, tmp_path, capsys):
    from prep.shard import main

    (tmp_path / "shards").write_text("a file where the shards folder should be\n")
    assert main(_shard_cli(tmp_path, expression)) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(tmp_path / "shards") in lines[0], lines


def _small_disk(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_is_one_line_and_every_temp_file_is_removed(expression, tmp_path):
    cmd = [sys.executable, "-m", "prep.shard", *_shard_cli(tmp_path, expression)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=_small_disk(60_000))
    assert proc.returncode == 2, proc.stderr
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "shard-000000.tar" in lines[0] and "File too large" in lines[0], lines[0]
    _assert_nothing_half_written(tmp_path)


def _corrupt_fasta(d: Path) -> Path:
    """A copy of the chr22 FASTA (+ .fai, .gzi) with a block inside ARVCF's window zeroed."""
    fasta = d / CHR22_REF.name
    for ext in ("", ".fai", ".gzi"):
        shutil.copy(str(CHR22_REF) + ext, str(fasta) + ext)
    fai = (d / (fasta.name + ".fai")).read_text().split("\t")
    offset, per_line, line_bytes = int(fai[2]), int(fai[3]), int(fai[4])
    target = offset + (20_004_000 // per_line) * line_bytes  # uncompressed byte of 22:20,004,001
    gzi = (d / (fasta.name + ".gzi")).read_bytes()
    n = struct.unpack_from("<Q", gzi)[0]
    pairs = [struct.unpack_from("<QQ", gzi, 8 + 16 * i) for i in range(n)]
    block = max(c for c, u in [(0, 0), *pairs] if u <= target)
    _flip_block(fasta, block)
    return fasta


def test_corrupt_fasta_names_the_file(tmp_path, capsys):
    from prep.haplotypes import main

    fasta = _corrupt_fasta(tmp_path)
    rc = main(["--config", str(CONFIG), "--reference", str(fasta), "--samples", "HG00096",
               "--output", str(tmp_path / "out.fa.gz"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = _error_lines(err)
    assert len(lines) == 1 and str(fasta) in lines[0] and "corrupt" in lines[0], err
    assert not list(tmp_path.glob(".out.fa.gz.*")) and not (tmp_path / "out.fa.gz").exists()


def test_header_only_tss_table_is_an_error(tmp_path, capsys):
    from prep.haplotypes import main

    tss = tmp_path / "header_only.tsv"
    tss.write_text(open(ROOT / "data" / "chr22_demo" / "tss_chr22_20-21Mb_GRCh37.tsv")
                   .readline())
    rc = main(["--config", str(CONFIG), "--regions", str(tss), "--samples", "HG00096",
               "--output", str(tmp_path / "out.fa.gz"), "--quiet"])
    lines = _error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1 and "no gene rows" in lines[0] and tss.name in lines[0]
    assert not (tmp_path / "out.fa.gz").exists()


def test_haplotype_fasta_gets_the_users_umask(tmp_path):
    from prep.haplotypes import main

    old = os.umask(0o027)
    try:
        assert main(["--config", str(CONFIG), "--samples", "HG00096", "--length", "1024",
                     "--output", str(tmp_path / "h.fa"), "--quiet"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "h.fa").stat().st_mode) == 0o640


def test_unwritable_fasta_output_is_one_line(tmp_path, capsys):
    from prep.haplotypes import main

    (tmp_path / "file").write_text("x\n")
    out = tmp_path / "file" / "h.fa"
    assert main(["--config", str(CONFIG), "--samples", "HG00096", "--length", "1024",
                 "--output", str(out), "--quiet"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(out) in lines[0], lines
