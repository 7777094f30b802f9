"""MPRA variant effects as hapflow shards, for joint training: :func:`run_mpra`
(``python -m prep.mpra``).

Reads the ``[mpra]`` tables (:mod:`prep.mpra_data`: columns, sign convention alt - ref,
normalisation, split) and writes, under ``DIR/mpra``::

    {split}/shard-NNNNNN.tar   WebDataset shards of oligo-pair groups (prep.mpra_format)
    manifest.parquet           one row per oligo pair: split, shard, group, index, key, id,
                               variant, chrom, pos, ref_allele, alt_allele, ref_length,
                               alt_length, n_measured, raw:{cell} (alt - ref as read),
                               effect:{cell} (normalised; null where not measured), build
    quality.json               per cell type: rows, measured; pairs dropped and why; per split
    config.toml                the resolved [mpra] settings
    build.json                 the build fingerprint and what it is made of
    README.txt                 what each file holds
    meta.json                  written last: cell types, sign convention, normalisation (mean,
                               sd per cell type), inputs' sha256, counts, every shard's sha256

The whole folder is rebuilt when the settings or tables change (seconds: the tables hold
~10^5 pairs) and left alone when they do not; the same tables give byte-identical outputs.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os

import numpy as np
import polars as pl

from hapflow.config import StudyConfig, config_to_dict, save_config
from hapflow.io import atomic_write_json, atomic_write_parquet, atomic_write_text
from hapflow.layout import Workdir
from hapflow.names import SPLITS
from hapflow.sections import MpraConfig
from prep.encoding import encode
from prep.fingerprint import build_components, file_sha256, fingerprint
from prep.mpra_data import MpraError, MpraVariants, load_mpra
from prep.mpra_format import EFFECT, KIND, MEMBERS, encode_group, group_key, pair_key
from prep.shard_format import FORMAT_VERSION
from prep.shard_resume import remove_stale_temps
from prep.shard_tar import ShardWriter

__all__ = ["run_mpra", "CONVENTIONS"]

log = logging.getLogger(__name__)

TABLES = ("manifest.parquet", "quality.json", "config.toml", "build.json", "README.txt")

CONVENTIONS = {
    "effect": "alt - ref: MPRAmodel's Log2Skew, log2 of the alternate allele's activity over "
              "the reference allele's (positive: alt drives more expression); predict it as "
              "the prediction on the alt oligo minus the prediction on the ref oligo",
    "normalisation": "effect:{cell} = (raw - mean) / sd (zscore), raw / sd (scale) or raw "
                     "(none), mean and sd per cell type in meta.json 'normalisation'",
    "mask": "a cell type without a value for a pair: mask 0, effect 0.0 in the shards, null in "
            "the manifest",
    "sequence": "oligos as uint8 codes A, C, G, T, N = 0..4, as given in the tables",
}


def _assign(table: pl.DataFrame, cfg: MpraConfig) -> pl.DataFrame:
    """Add shard, group and index: groups of group_size pairs of one split, shards of about
    shard_samples pairs (a group is never split)."""
    shards, groups, index = [], [], []
    for split in SPLITS:
        n = table.filter(pl.col("split") == split).height
        shard = in_shard = 0
        for g, lo in enumerate(range(0, n, cfg.group_size)):
            size = min(cfg.group_size, n - lo)
            if in_shard and in_shard + size > cfg.shard_samples:
                shard, in_shard = shard + 1, 0
            in_shard += size
            shards += [f"{split}/shard-{shard:06d}.tar"] * size
            groups += [group_key(split, g)] * size
            index += list(range(size))
    keys = [pair_key(i) for i in table["id"]]
    return table.with_columns(pl.Series("shard", shards), pl.Series("group", groups),
                              pl.Series("index", index, dtype=pl.Int32),
                              pl.Series("key", keys))


def _manifest(table: pl.DataFrame, cells: list[str], build: str) -> pl.DataFrame:
    effects = [f"effect:{c}" for c in cells]
    return table.select(
        "split", "shard", "group", "index", "key", "id", "variant", "chrom", "pos",
        "ref_allele", "alt_allele", pl.col("ref").str.len_bytes().cast(pl.Int32)
        .alias("ref_length"), pl.col("alt").str.len_bytes().cast(pl.Int32).alias("alt_length"),
        pl.sum_horizontal(pl.col(effects).is_not_null()).cast(pl.Int32).alias("n_measured"),
        *[f"raw:{c}" for c in cells], *effects, pl.lit(build).alias("build"))


def _write_shards(table: pl.DataFrame, data: MpraVariants, cfg: MpraConfig, out,
                  build: str) -> dict:
    """Write every shard; returns {shard: {"sha256", "bytes", "pairs"}}."""
    effects = [f"effect:{c}" for c in data.cell_types]
    info = {}
    for (shard,), rows in table.group_by("shard", maintain_order=True):
        remove_stale_temps(out / shard)
        writer = ShardWriter(out / shard)
        try:
            for (group,), g in rows.group_by("group", maintain_order=True):
                values = g.select(effects).to_numpy().astype(np.float64)
                meta = {"split": g["split"][0], "cell_types": data.cell_types,
                        "normalise": cfg.normalise, "ids": g["id"].to_list(),
                        "variants": g["variant"].to_list(), "build": build}
                for name, blob in encode_group(group, [encode(s) for s in g["ref"]],
                                               [encode(s) for s in g["alt"]], values,
                                               ~np.isnan(values), meta):
                    writer.add(name, blob)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        info[shard] = {"sha256": file_sha256(out / shard), "bytes": (out / shard).stat().st_size,
                       "pairs": rows.height}
    return info


def _quality(data: MpraVariants, manifest: pl.DataFrame) -> dict:
    per_split = {}
    for split in SPLITS:
        m = manifest.filter(pl.col("split") == split)
        per_split[split] = {"pairs": m.height, "variants": m["variant"].n_unique(),
                            "measured": {c: int(m[f"effect:{c}"].is_not_null().sum())
                                         for c in data.cell_types}}
    lengths = pl.concat([manifest["ref_length"], manifest["alt_length"]])
    return {**data.quality, "splits": per_split,
            "oligo_lengths": {"min": int(lengths.min()), "max": int(lengths.max()),
                              "most_common": int(lengths.mode().sort()[0])}}


def _meta(data: MpraVariants, cfg: MpraConfig, build: str, components: dict, shards: dict,
          manifest: pl.DataFrame) -> dict:
    versions = {}
    for pkg in ("hapflow", "numpy", "polars", "zstandard"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    total = sum(s["bytes"] for s in shards.values())
    return {
        "format": FORMAT_VERSION, "kind": KIND, "build": build, "effect": EFFECT,
        "cell_types": data.cell_types, "normalise": cfg.normalise,
        "normalise_over": cfg.normalise_over, "normalisation": data.stats,
        "members": list(MEMBERS), "config": {"mpra": config_to_dict(cfg)},
        "versions": versions,
        "inputs": {c: {"path": os.path.basename(p), "sha256": components["inputs"][c]}
                   for c, p in zip(data.cell_types, cfg.tables, strict=True)},
        "counts": {"pairs": manifest.height, "variants": manifest["variant"].n_unique(),
                   "shards": len(shards), "bytes": total},
        "splits": {s: manifest.filter(pl.col("split") == s).height for s in SPLITS},
        "shards": shards, "conventions": CONVENTIONS,
    }


def _readme(cells: list[str]) -> str:
    lines = [
        "MPRA variant effects as hapflow shards (written by `python -m prep.mpra`; members: "
        "prep.mpra_format)", "",
        "Files",
        "  {split}/shard-NNNNNN.tar  WebDataset shards; per group of oligo pairs KEY: KEY.json "
        "(checksummed JSON: ids, variants, lengths, cell types), KEY.ref.2bit, KEY.alt.2bit "
        "(oligos), KEY.effect.f32 ((n, C) float32), KEY.mask.u8 ((n, C) uint8)",
        "  manifest.parquet  one row per oligo pair: split, shard, group, index, key, id, "
        "variant, chrom, pos, ref_allele, alt_allele, ref_length, alt_length, n_measured, "
        "raw:CELL, effect:CELL, build",
        "  quality.json      rows and measured values per cell type, dropped pairs, per split",
        "  config.toml, build.json, meta.json (written last: normalisation, every shard's "
        "sha256)", "",
        f"Cell types (the C columns, in order): {', '.join(cells)}", "",
        "Conventions", *[f"  {k}: {v}" for k, v in CONVENTIONS.items()], ""]
    return "\n".join(lines)


def run_mpra(study: StudyConfig, workdir: str | os.PathLike | Workdir) -> dict:
    """Build ``DIR/mpra`` from the ``[mpra]`` tables (see the module docstring).

    Returns
    -------
    dict
        pairs, variants, shards, build, splits (pairs per split); nothing_to_do when the folder
        already holds this build.

    Raises
    ------
    MpraError
        A bad table or setting (before anything is written; see :func:`prep.mpra_data.load_mpra`).
    """
    cfg, wd = study.mpra, Workdir(workdir)
    out = wd.mpra
    data = load_mpra(cfg)
    inputs = dict(zip(data.cell_types, cfg.tables, strict=True))
    components = build_components({"mpra": cfg}, inputs, FORMAT_VERSION, cache_dir=wd.cache)
    build = fingerprint(components)
    table = _assign(data.table, cfg)
    summary = {"pairs": table.height, "variants": table["variant"].n_unique(),
               "shards": table["shard"].n_unique(), "build": build,
               "splits": {s: table.filter(pl.col("split") == s).height for s in SPLITS}}
    if _meta_build(out) == build and all((out / s).exists() for s in table["shard"].unique()):
        log.info("Nothing to do: %s already holds this build (%s)", out, build)
        return {**summary, "nothing_to_do": True}
    for name in ("meta.json", *TABLES):  # never a table describing other shards
        (out / name).unlink(missing_ok=True)
    for old in out.glob("*/shard-*.tar"):
        old.unlink()
    try:
        shards = _write_shards(table, data, cfg, out, build)
    except OSError as err:
        raise MpraError(f"cannot write {out}: {err}") from None
    manifest = _manifest(table, data.cell_types, build)
    atomic_write_parquet(manifest, out / "manifest.parquet")
    atomic_write_json(out / "quality.json", _quality(data, manifest))
    save_config({"mpra": cfg}, out / "config.toml")
    atomic_write_json(out / "build.json", {"build": build, "components": components})
    atomic_write_text(out / "README.txt", _readme(data.cell_types))
    atomic_write_json(out / "meta.json", _meta(data, cfg, build, components, shards, manifest))
    log.info("Wrote %d oligo pairs of %d variants (%s) in %d shard(s) to %s", table.height,
             summary["variants"], ", ".join(f"{s} {n}" for s, n in summary["splits"].items()),
             len(shards), out)
    return summary


def _meta_build(out) -> str | None:
    try:
        return json.loads((out / "meta.json").read_text()).get("build")
    except (OSError, ValueError):
        return None
