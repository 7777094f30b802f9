"""prep.mpra on small tables in the MPRAmodel layout (real chr22 oligos, synthetic effects):
join across cell types, masking, z-normalisation over train, the split, the sign convention,
shards, determinism and errors."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hapflow.config import load_study
from prep.mpra_build import run_mpra
from prep.mpra_data import MpraError, load_mpra
from prep.mpra_format import decode_group, unpack_mpra_groups
from prep.shard_format import ShardFormatError
from prep.shard_tar import read_tar_members
from tests import tfrecord_writer as tw
from tests.conftest import CHR22_REF, ROOT, assert_one_error_line

N_SNPS, OLIGO = 400, 200
CELLS = ("K562", "HepG2", "GM12878")
COLUMNS = ["ID", "SNP", "chr", "pos", "ref_allele", "alt_allele", "window", "A_log2FC",
           "B_log2FC", "Log2Skew", "LogSkew_SE", "ref_seq", "alt_seq"]


def _pairs() -> list[dict]:
    """N_SNPS variants in the real 22:20.1-20.9 Mb; every 10th also tested in a left window."""
    rng = np.random.default_rng(7)
    region = tw.fasta_slice(CHR22_REF, "22", 20_100_000, 20_900_000)
    out = []
    for k in range(N_SNPS):
        pos0 = 1_000 + 1_900 * k  # 0-based offset in region
        ref_base = int(region[pos0])
        if ref_base == 4:
            continue
        alt_base = (ref_base + 1 + int(rng.integers(0, 3))) % 4
        snp = f"rs{9_000_000 + k}"
        for window, shift in (("C", 0), ("L", 60)) if k % 10 == 0 else (("C", 0),):
            lo = pos0 - OLIGO // 2 + shift
            ref = region[lo:lo + OLIGO].copy()
            alt = ref.copy()
            alt[pos0 - lo] = alt_base
            pos = 20_100_000 + pos0 + 1
            out.append({"ID": f"22:{pos}:{'ACGT'[ref_base]}:{'ACGT'[alt_base]}:w{window}",
                        "SNP": snp, "chr": "chr22", "pos": str(pos),
                        "ref_allele": "ACGT"[ref_base], "alt_allele": "ACGT"[alt_base],
                        "window": window, "ref_seq": tw.dna(ref), "alt_seq": tw.dna(alt)})
    return out


def _table(pairs, cell_index, rng) -> list[dict]:
    rows = []
    for i, p in enumerate(pairs):
        if (i + cell_index) % 17 == 0:
            continue  # not in this cell type's table
        a = rng.normal(1.0, 0.5)
        skew = rng.normal(0.2 * cell_index, 0.3 + 0.2 * cell_index)
        value = "NA" if (i + cell_index) % 13 == 0 else f"{skew:.6f}"
        rows.append({**p, "A_log2FC": f"{a:.5f}", "B_log2FC": f"{a + skew:.5f}",
                     "Log2Skew": value, "LogSkew_SE": "0.1",
                     "ref_seq": p["ref_seq"].lower() if i % 5 == 0 else p["ref_seq"]})
    return rows


def _write(path: Path, rows: list[dict], sep: str) -> Path:
    text = sep.join(COLUMNS) + "\n" + "".join(
        sep.join(r[c] for c in COLUMNS) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mpra")
    pairs = _pairs()
    rng = np.random.default_rng(3)
    rows = {cell: _table(pairs, i, rng) for i, cell in enumerate(CELLS)}
    paths = [_write(root / "K562_emVAR.tsv.gz", rows["K562"], "\t"),
             _write(root / "HepG2_emVAR.csv", rows["HepG2"], ","),
             _write(root / "GM12878_emVAR.tsv", rows["GM12878"], "\t")]
    config = root / "study.toml"
    config.write_text("[mpra]\n" f"tables = {json.dumps([p.name for p in paths])}\n"
                      f"cell_types = {json.dumps(list(CELLS))}\n"
                      "group_size = 32\nshard_samples = 200\n")
    return {"root": root, "config": config, "pairs": pairs, "rows": rows, "paths": paths}


def _study(config, **overrides):
    return load_study(config, {"mpra": overrides} if overrides else None, need=("mpra",))


@pytest.fixture(scope="module")
def built(tables, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("work")
    summary = run_mpra(_study(tables["config"]), workdir)
    assert summary["shards"] > 1
    return workdir


def _manifest(workdir: Path) -> pl.DataFrame:
    return pl.read_parquet(workdir / "mpra" / "manifest.parquet")


def test_join_masks_and_keeps_every_measured_pair(built, tables):
    m = _manifest(built)
    measured = {r["ID"] for rows in tables["rows"].values() for r in rows
                if r["Log2Skew"] != "NA"}
    assert set(m["id"]) == measured
    assert [c for c in m.columns if c.startswith("effect:")] == [f"effect:{c}" for c in CELLS]
    for cell, rows in tables["rows"].items():
        raw = dict(zip(m["id"], m[f"raw:{cell}"], strict=True))
        given = {r["ID"]: r["Log2Skew"] for r in rows}
        for pair, value in raw.items():
            if given.get(pair, "NA") == "NA":
                assert value is None, (cell, pair)
            else:
                assert value == pytest.approx(float(given[pair]))
    counted = m.select(pl.sum_horizontal(pl.col([f"effect:{c}" for c in CELLS]).is_not_null()))
    assert (m["n_measured"] == counted.to_series()).all()


def test_z_normalisation_uses_train_variants(built):
    m = _manifest(built)
    meta = json.loads((built / "mpra" / "meta.json").read_text())
    train = m.filter(pl.col("split") == "train")
    for cell in CELLS:
        values = train[f"raw:{cell}"].drop_nulls().to_numpy()
        stats = meta["normalisation"][cell]
        assert stats["n"] == values.size
        assert stats["mean"] == pytest.approx(values.mean())
        assert stats["sd"] == pytest.approx(values.std(ddof=1))
        z = train[f"effect:{cell}"].drop_nulls().to_numpy()
        assert z.mean() == pytest.approx(0, abs=1e-9) and z.std(ddof=1) == pytest.approx(1)
        both = m.select(f"raw:{cell}", f"effect:{cell}").drop_nulls()
        np.testing.assert_allclose(both[f"effect:{cell}"],
                                   (both[f"raw:{cell}"] - stats["mean"]) / stats["sd"])


def test_split_fractions_keep_a_variants_windows_together(built):
    m = _manifest(built)
    variants = m.group_by("variant").agg(pl.col("split").n_unique().alias("n"),
                                         pl.col("split").first())
    assert (variants["n"] == 1).all()
    counts = variants["split"].value_counts()
    n = variants.height
    got = dict(zip(counts["split"], counts["count"], strict=True))
    assert got["test"] == round(0.05 * n) and got["val"] == round(0.05 * n)
    assert m["split"].to_list() == sorted(m["split"].to_list(),
                                          key=("train", "val", "test").index)


def test_split_depends_on_seed_not_on_row_order(tables, tmp_path):
    base = load_mpra(_study(tables["config"]).mpra).table
    shuffled = tmp_path / "K562_shuffled.tsv"
    rows = list(tables["rows"]["K562"])
    np.random.default_rng(0).shuffle(rows)
    _write(shuffled, rows, "\t")
    paths = [str(shuffled), *map(str, tables["paths"][1:])]
    again = load_mpra(_study(tables["config"], tables=",".join(paths)).mpra).table
    assert again.select("id", "split").equals(base.select("id", "split"))
    other = load_mpra(_study(tables["config"], seed="1").mpra).table
    assert not other.select("id", "split").equals(base.select("id", "split"))


def test_shards_hold_oligos_effects_and_masks(built, tables):
    m = _manifest(built)
    by_id = {r["id"]: r for r in m.iter_rows(named=True)}
    oligos = {p["ID"]: p for p in tables["pairs"]}
    seen = 0
    for shard in sorted((built / "mpra").glob("*/shard-*.tar")):
        for pair in unpack_mpra_groups(read_tar_members(shard)):
            row = by_id[pair["id"]]
            assert pair["split"] == row["split"] and pair["variant"] == row["variant"]
            assert tw.dna(pair["ref"]) == oligos[pair["id"]]["ref_seq"]
            assert tw.dna(pair["alt"]) == oligos[pair["id"]]["alt_seq"]
            assert pair["effect"].dtype == np.float32 and pair["mask"].dtype == bool
            for c, cell in enumerate(CELLS):
                value = row[f"effect:{cell}"]
                assert pair["mask"][c] == (value is not None)
                assert pair["effect"][c] == (np.float32(value) if value is not None else 0.0)
            seen += 1
    assert seen == m.height
    meta = json.loads((built / "mpra" / "meta.json").read_text())
    assert meta["effect"] == "alt_minus_ref" and meta["cell_types"] == list(CELLS)
    for shard, info in meta["shards"].items():
        assert hashlib.sha256((built / "mpra" / shard).read_bytes()).hexdigest() == \
            info["sha256"]


def test_rerun_is_byte_identical_and_has_nothing_to_do(built, tables, tmp_path):
    assert run_mpra(_study(tables["config"]), built)["nothing_to_do"]
    run_mpra(_study(tables["config"]), tmp_path)

    def digests(d):
        return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((d / "mpra").rglob("*")) if p.is_file()}

    assert digests(tmp_path) == digests(built)


def test_sign_convention_and_scale_normalisation(tables):
    base = load_mpra(_study(tables["config"]).mpra)
    flipped = load_mpra(_study(tables["config"], effect_direction="ref_minus_alt").mpra)
    a = base.table.select("id", "raw:K562").drop_nulls()
    b = flipped.table.select("id", "raw:K562").drop_nulls()
    assert a["id"].equals(b["id"])
    np.testing.assert_allclose(b["raw:K562"], -a["raw:K562"])
    scaled = load_mpra(_study(tables["config"], normalise="scale").mpra)
    t = scaled.table.select("raw:HepG2", "effect:HepG2").drop_nulls()
    assert scaled.stats["HepG2"]["mean"] == 0.0
    assert (np.sign(t["raw:HepG2"]) == np.sign(t["effect:HepG2"])).all()


def test_a_corrupt_member_is_named(built):
    shard = sorted((built / "mpra").glob("train/shard-*.tar"))[0]
    sample = dict(next(iter(read_tar_members(shard))))
    blob = bytearray(sample["effect.f32"])
    blob[0] ^= 1
    sample["effect.f32"] = bytes(blob)
    with pytest.raises(ShardFormatError, match=r"mpra_train_00000\.effect\.f32"):
        decode_group(sample)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "prep.mpra", *args, "--quiet"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)




def _broken(tables, tmp_path, change) -> Path:
    rows = [dict(r) for r in tables["rows"]["HepG2"]]
    change(rows)
    path = _write(tmp_path / "HepG2_broken.csv", rows, ",")
    config = tmp_path / "study.toml"
    paths = [str(tables["paths"][0]), str(path), str(tables["paths"][2])]
    config.write_text(f"[mpra]\ntables = {json.dumps(paths)}\n"
                      f"cell_types = {json.dumps(list(CELLS))}\n")
    return config


def test_errors_are_one_line_naming_file_line_and_column(tables, tmp_path):
    def letters(rows):
        rows[3]["alt_seq"] = "ACGTX" + rows[3]["alt_seq"][5:]

    out = _cli("--config", str(_broken(tables, tmp_path, letters)), "--workdir",
               str(tmp_path / "w"))
    assert_one_error_line(out, "HepG2_broken.csv, line 5", "alt_seq", "not an oligo")

    def number(rows):
        rows[0]["Log2Skew"] = "high"

    out = _cli("--config", str(_broken(tables, tmp_path, number)), "--workdir",
               str(tmp_path / "w"))
    assert_one_error_line(out, "line 2", "Log2Skew", "'high'")

    def oligo(rows):
        rows[1]["ref_seq"] = rows[1]["alt_seq"]

    out = _cli("--config", str(_broken(tables, tmp_path, oligo)), "--workdir",
               str(tmp_path / "w"))
    assert_one_error_line(out, tables["rows"]["HepG2"][1]["ID"], "ref differs between the tables")

    def duplicate(rows):
        rows.append(dict(rows[0]))

    out = _cli("--config", str(_broken(tables, tmp_path, duplicate)), "--workdir",
               str(tmp_path / "w"))
    assert_one_error_line(out, "appears twice")
    out = _cli("--config", str(tables["config"]), "--workdir", str(tmp_path / "w"),
               "--set", "mpra.effect_column=log2skew")
    assert_one_error_line(out, "no column 'log2skew'", "did you mean 'Log2Skew'")
    assert not (tmp_path / "w" / "mpra").exists()


def test_empty_tables_setting_is_an_error():
    with pytest.raises(MpraError, match="tables is empty"):
        load_mpra(load_study(None, need=("mpra",)).mpra)


def test_shards_read_through_webdataset(built):
    import webdataset as wds

    shard = sorted((built / "mpra").glob("val/shard-*.tar"))[0]
    pairs = list(unpack_mpra_groups(wds.WebDataset(str(shard), shardshuffle=False)))
    m = _manifest(built).filter(pl.col("shard") == "val/shard-000000.tar")
    assert [p["__key__"] for p in pairs] == m["key"].to_list()
