"""MPRA variant-effect tables (Siraj et al.; Tewhey lab MPRAmodel output) -> one table of
oligo pairs with split and per-cell-type effects.

Input: one table per cell type (``[mpra] tables`` / ``cell_types``; Siraj et al.: K562, HepG2,
GM12878, SK-N-SH, A549), CSV or TSV (the separator is read from the header line), plain or
gzip. One row per oligo pair; the columns read (names are settings of ``[mpra]``):

===============  =====================  =================================================
setting          default                content
===============  =====================  =================================================
id_column        ``ID``                 the oligo pair (ref and alt oligo of one window);
                                        joins the tables; unique within a table
variant_column   ``SNP``                the variant (several windows may test one); the
                                        split keeps a variant's pairs together; optional
                                        (a table without it: id_column)
ref_column       ``ref_seq``            reference-allele oligo (A, C, G, T, N; any case;
                                        200 bp in Siraj et al.)
alt_column       ``alt_seq``            alternate-allele oligo
effect_column    ``Log2Skew``           the allelic effect; empty, ``NA`` or ``NaN``: not
                                        measured (masked)
===============  =====================  =================================================

Optional columns carried into the manifest when a table has them: ``chr``, ``pos``,
``ref_allele``, ``alt_allele``.

Sign convention: every stored effect is **alt - ref**: MPRAmodel's ``Log2Skew`` is the log2
of the alternate allele's activity (RNA/DNA) over the reference allele's, i.e.
``B_log2FC - A_log2FC`` with A = ref, B = alt; a positive effect means the alt allele drives
more expression. Tables that measure ref - alt set ``effect_direction = "ref_minus_alt"`` and
are negated on reading. A model's predicted effect must be taken the same way: prediction on
the alt oligo minus prediction on the ref oligo.

Normalisation (``normalise``), per cell type, with mean and sd (ddof 1) over the measured
effects of the train variants (``normalise_over = "train"``, no leak) or of all variants:
zscore ``(x - mean) / sd``; scale ``x / sd`` (keeps 0 = no effect and the sign); none.

Split (``val_fraction``, ``test_fraction``, ``seed``): variants are ordered by
sha256(``"{seed}:{variant}"``); the first round(n x test_fraction) are test, the next
round(n x val_fraction) val, the rest train. A variant's split depends on the seed and on the
variants present only through the cut points, not on row order.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.names import SPLITS
from hapflow.sections import MpraConfig, mpra_cell_types

__all__ = ["MpraError", "MpraVariants", "read_mpra_table", "load_mpra", "OPTIONAL_COLUMNS"]

OPTIONAL_COLUMNS = {"chr": "chrom", "pos": "pos", "ref_allele": "ref_allele",
                    "alt_allele": "alt_allele"}
"""Table column -> manifest column, carried when present."""

NULLS = ["", "NA", "NaN", "nan", "NAN", "N/A", "null", "None"]


class MpraError(ValueError):
    """An MPRA table is missing, malformed or inconsistent; the message names the file, row
    and column."""


@dataclass
class MpraVariants:
    """Oligo pairs of every table, joined, split and normalised.

    Attributes
    ----------
    table : pl.DataFrame
        One row per oligo pair, ordered by split (train, val, test), variant, id: split, id,
        variant, ref, alt (upper-case oligos), chrom, pos, ref_allele, alt_allele (null when no
        table has them), ``raw:{cell}`` (alt - ref as read) and ``effect:{cell}`` (normalised),
        Float64, null where the cell type has no value.
    cell_types : list of str
    stats : dict
        cell type -> {"mean", "sd", "n"} of the normalisation (mean 0 and sd 1 with
        ``normalise = "none"``; mean 0 with ``"scale"``).
    quality : dict
        Per cell type: rows, measured, not measured; dropped pairs and why.
    """

    table: pl.DataFrame
    cell_types: list
    stats: dict
    quality: dict


def _read_text(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MpraError(f"MPRA table {path} does not exist") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise MpraError(f"MPRA table {path}: corrupt or truncated gzip ({err})") from None
    return raw


def _column(frame: pl.DataFrame, name: str, setting: str, path: Path) -> str:
    if name in frame.columns:
        return name
    close = difflib.get_close_matches(name, frame.columns, n=1)
    hint = f" (did you mean {close[0]!r}? set [mpra] {setting})" if close else \
        f"; set [mpra] {setting}"
    raise MpraError(f"MPRA table {path} has no column {name!r}{hint}; its columns: "
                    f"{', '.join(frame.columns[:20])}")


def read_mpra_table(path: str | os.PathLike, cfg: MpraConfig) -> pl.DataFrame:
    """One cell type's table: id, variant, ref, alt (Utf8), effect (Float64, alt - ref, null
    where not measured), line (1-based line in the file) and the optional columns present.

    Raises
    ------
    MpraError
        A missing file or column, an effect that is not a number, an oligo with other letters
        than A, C, G, T, N, an empty oligo, an id twice; naming the file, line and column.
    """
    path = Path(path)
    raw = _read_text(path)
    header = raw.split(b"\n", 1)[0]
    sep = "\t" if b"\t" in header else ","
    try:
        frame = pl.read_csv(io.BytesIO(raw), separator=sep, infer_schema=False,
                            null_values=NULLS, quote_char='"')
    except pl.exceptions.PolarsError as err:
        raise MpraError(f"MPRA table {path} cannot be read as CSV/TSV: {err}") from None
    cols = {"id": _column(frame, cfg.id_column, "id_column", path),
            "ref": _column(frame, cfg.ref_column, "ref_column", path),
            "alt": _column(frame, cfg.alt_column, "alt_column", path),
            "effect_text": _column(frame, cfg.effect_column, "effect_column", path)}
    variant = cfg.variant_column if cfg.variant_column in frame.columns else cols["id"]
    optional = {new: pl.col(old) for old, new in OPTIONAL_COLUMNS.items() if old in frame.columns}
    out = frame.with_row_index("line", 2).select(
        pl.col(cols["id"]).alias("id"), pl.col(variant).alias("variant"),
        pl.col(cols["ref"]).str.to_uppercase().alias("ref"),
        pl.col(cols["alt"]).str.to_uppercase().alias("alt"),
        pl.col(cols["effect_text"]).alias("effect_text"), "line", **optional)
    return _check_table(out, path, cfg)


def _first_bad(frame: pl.DataFrame, condition: pl.Expr) -> dict | None:
    bad = frame.filter(condition)
    return bad.row(0, named=True) if bad.height else None


def _check_table(t: pl.DataFrame, path: Path, cfg: MpraConfig) -> pl.DataFrame:
    where = f"MPRA table {path}"
    row = _first_bad(t, pl.col("id").is_null())
    if row:
        raise MpraError(f"{where}, line {row['line']}: empty {cfg.id_column}")
    for col, setting in (("ref", cfg.ref_column), ("alt", cfg.alt_column)):
        row = _first_bad(t, pl.col(col).is_null() | ~pl.col(col).str.contains(r"^[ACGTN]+$"))
        if row:
            raise MpraError(f"{where}, line {row['line']} ({row['id']}): column {setting} "
                            f"holds {str(row[col])[:40]!r}, not an oligo of A, C, G, T, N")
    t = t.with_columns(pl.col("effect_text").cast(pl.Float64, strict=False).alias("effect"))
    row = _first_bad(t, pl.col("effect").is_null() & pl.col("effect_text").is_not_null())
    if row:
        raise MpraError(f"{where}, line {row['line']} ({row['id']}): column {cfg.effect_column} "
                        f"holds {row['effect_text']!r}, not a number")
    row = _first_bad(t, pl.col("effect").is_infinite())
    if row:
        raise MpraError(f"{where}, line {row['line']} ({row['id']}): column {cfg.effect_column} "
                        "is infinite")
    dup = _first_bad(t, pl.col("id").is_duplicated())
    if dup:
        raise MpraError(f"{where}: {cfg.id_column} {dup['id']!r} appears twice (line "
                        f"{dup['line']} and another); one row per oligo pair")
    t = t.with_columns(pl.col("effect").fill_nan(None))
    if cfg.effect_direction == "ref_minus_alt":
        t = t.with_columns(-pl.col("effect"))
    return t.drop("effect_text")


def _join(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per id: variant, ref, alt, optional columns, ``raw:{cell}`` per cell type.

    Raises
    ------
    MpraError
        An id whose variant or oligos differ between tables.
    """
    long = pl.concat([t.with_columns(pl.lit(cell).alias("cell")) for cell, t in tables.items()],
                     how="diagonal_relaxed")
    for col in ("variant", "ref", "alt"):
        bad = long.group_by("id").agg(pl.col(col).n_unique().alias("n"), pl.col("cell")) \
            .filter(pl.col("n") > 1).sort("id")
        if bad.height:
            r = bad.row(0, named=True)
            raise MpraError(f"oligo pair {r['id']!r}: its {col} differs between the tables of "
                            f"{', '.join(r['cell'])} ({bad.height} pair(s) so): the tables "
                            "describe different oligos under one id")
    optional = [c for c in OPTIONAL_COLUMNS.values() if c in long.columns]
    first = long.group_by("id", maintain_order=True).agg(
        pl.col("variant", "ref", "alt").first(),
        *[pl.col(c).drop_nulls().first().cast(pl.Utf8) for c in optional])
    effects = long.pivot(on="cell", index="id", values="effect")
    joined = first.join(effects, on="id", how="left")
    for c in OPTIONAL_COLUMNS.values():
        if c not in joined.columns:
            joined = joined.with_columns(pl.lit(None, pl.Utf8).alias(c))
    for cell in tables:
        if cell not in joined.columns:
            joined = joined.with_columns(pl.lit(None, pl.Float64).alias(cell))
    return joined.rename({cell: f"raw:{cell}" for cell in tables}).with_columns(
        pl.col("pos").cast(pl.Int64, strict=False))


def _split_of(variants: list[str], cfg: MpraConfig) -> dict[str, str]:
    order = sorted(set(variants),
                   key=lambda v: hashlib.sha256(f"{cfg.seed}:{v}".encode()).hexdigest())
    n = len(order)
    n_test, n_val = round(n * cfg.test_fraction), round(n * cfg.val_fraction)
    return {v: "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for i, v in enumerate(order)}


def _normalise(table: pl.DataFrame, cells: list[str], cfg: MpraConfig
               ) -> tuple[pl.DataFrame, dict]:
    stats = {}
    pool = table if cfg.normalise_over == "all" else table.filter(pl.col("split") == "train")
    for cell in cells:
        values = pool[f"raw:{cell}"].drop_nulls().to_numpy()
        if cfg.normalise == "none":
            mean, sd = 0.0, 1.0
        else:
            if values.size < 2 or not np.std(values) > 0:
                raise MpraError(f"cell type {cell}: {values.size} measured effect(s) among the "
                                f"{cfg.normalise_over} variants, too few (or all equal) to "
                                f"normalise ([mpra] normalise = {cfg.normalise!r})")
            mean = float(np.mean(values)) if cfg.normalise == "zscore" else 0.0
            sd = float(np.std(values, ddof=1))
        stats[cell] = {"mean": mean, "sd": sd, "n": int(values.size)}
        table = table.with_columns(((pl.col(f"raw:{cell}") - mean) / sd).alias(f"effect:{cell}"))
    return table, stats


def load_mpra(cfg: MpraConfig) -> MpraVariants:
    """Read, check and join every table; split the variants; normalise the effects.

    Raises
    ------
    MpraError
        No tables, a bad table (see :func:`read_mpra_table`), oligos that differ between
        tables, nothing left to train on, a cell type too small to normalise.
    """
    if not cfg.tables:
        raise MpraError("[mpra] tables is empty: give one variant-effect table per cell type")
    cells = mpra_cell_types(cfg)
    tables = {cell: read_mpra_table(p, cfg) for cell, p in zip(cells, cfg.tables, strict=True)}
    quality: dict = {"cell_types": {}, "dropped": {}}
    for cell, t in tables.items():
        measured = int(t["effect"].is_not_null().sum())
        quality["cell_types"][cell] = {"rows": t.height, "measured": measured,
                                       "not_measured": t.height - measured}
    joined = _join(tables)
    raw = [f"raw:{c}" for c in cells]
    none = joined.filter(pl.all_horizontal(pl.col(raw).is_null()))
    same = joined.filter(pl.col("ref") == pl.col("alt"))
    for reason, df in (("no cell type measured it", none), ("ref and alt oligos are equal", same)):
        if df.height:
            quality["dropped"][reason] = {"count": df.height,
                                          "examples": sorted(df["id"].to_list())[:5]}
    joined = joined.filter(~pl.all_horizontal(pl.col(raw).is_null())
                           & (pl.col("ref") != pl.col("alt")))
    if joined.height == 0:
        raise MpraError("no oligo pair with a measured effect and different ref and alt oligos "
                        f"in {', '.join(map(str, cfg.tables))}")
    split = _split_of(joined["variant"].to_list(), cfg)
    rank = {s: i for i, s in enumerate(SPLITS)}
    joined = joined.with_columns(pl.col("variant").replace_strict(split).alias("split")) \
        .with_columns(pl.col("split").replace_strict(rank, return_dtype=pl.Int32).alias("_r")) \
        .sort(["_r", "variant", "id"]).drop("_r")
    table, stats = _normalise(joined, cells, cfg)
    order = ["split", "id", "variant", "ref", "alt", *OPTIONAL_COLUMNS.values(), *raw,
             *[f"effect:{c}" for c in cells]]
    return MpraVariants(table.select(order), cells, stats, quality)
