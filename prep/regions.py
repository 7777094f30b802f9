"""Regions: gene TSS tables and BED intervals, read into tidy polars tables.

TSS tables come in many layouts; :func:`read_tss_table` detects the common ones and says what it
chose (``logging``). Output columns, for every layout:

``name`` (str, the gene id), ``symbol`` (str or null), ``chrom`` (str, as written in the file),
``tss`` (int64, **0-based** reference position of the TSS base), ``strand`` (``+``/``-``).

Detected layouts
----------------
* a header naming a TSS column: ``tss_1based`` (1-based), ``tss_0based`` (0-based), or
  ``tss``/``tss_hg19``/``tss_position``/``position`` (taken as 1-based, as GTF-derived tables are;
  override with ``one_based=False``);
* BED-like tables with ``start``/``end`` and no TSS column (QTLtools/FastQTL phenotype BEDs,
  ``#chr start end gene ...``): the TSS is ``start`` (0-based) when ``end - start == 1`` or the
  strand is ``+``, else ``end - 1``;
* headerless 5 columns ``gene_id, chrom, tss, symbol, strand`` (the paper's
  ``eur_egenes_hg19.csv``; TSS 1-based);
* headerless BED (``chrom start end [name [score [strand]]]``) as above.

:func:`read_bed` reads intervals: ``name``, ``chrom``, ``start`` (0-based), ``end`` (exclusive),
``strand``.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import polars as pl

__all__ = ["RegionError", "read_tss_table", "read_bed"]

log = logging.getLogger(__name__)

_CHROM = ("chrom", "chr", "chromosome", "seqname", "seqnames", "contig", "chr_hg19", "chrom_hg19")
_GENE = ("gene_id", "geneid", "ensembl_id", "ensembl_gene_id", "target_id", "targetid", "gene",
         "id", "pid", "phenotype_id", "name")
_SYMBOL = ("gene_name", "symbol", "gene_symbol", "hgnc_symbol")
_STRAND = ("strand", "strand_hg19", "strand_hg38")
_TSS_1 = ("tss_1based", "tss_hg19", "tss", "tss_position", "tss_pos", "position")
_TSS_0 = ("tss_0based",)


class RegionError(ValueError):
    """A region file cannot be read; the message names the file, the row and the fix."""


def _separator(path: Path) -> str:
    with _open_text(path) as fh:
        for line in fh:
            if line.strip():
                return "\t" if "\t" in line else ","
    raise RegionError(f"{path} is empty")


def _open_text(path: Path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt")
    return open(path)


def _read_strings(path: Path, keep_header: bool) -> pl.DataFrame:
    """All rows as strings (columns c0, c1, ...); blank, track/browser and '#' lines are skipped,
    except a first line starting with '#' when ``keep_header``."""
    sep = _separator(path)
    lines = []
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip() or line.startswith(("track", "browser")):
                continue
            if line.startswith("#") and not (keep_header and not lines):
                continue
            lines.append(line.rstrip("\n\r"))
    if not lines:
        raise RegionError(f"{path} holds no rows (only blank, '#', track or browser lines): an "
                          "empty selection is an error; add one row per gene or region")
    rows = [ln.split(sep) for ln in lines]
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise RegionError(f"{path}: row {i + 1} has {len(r)} fields, the first has {width}")
    return pl.DataFrame(rows, schema=[f"c{i}" for i in range(width)], orient="row")


def _first_line_fields(path: Path) -> list[str]:
    sep = _separator(path)
    with _open_text(path) as fh:
        for line in fh:
            if line.strip() and not line.startswith(("track", "browser")):
                return [f.strip() for f in line.rstrip("\n\r").split(sep)]
    return []


def _is_int(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    low = {n.lower().lstrip("#"): n for n in names}
    for c in candidates:
        if c in low:
            return low[c]
    return None


def _to_int(col: pl.Series, path: Path, what: str) -> pl.Series:
    try:
        return col.cast(pl.Float64).cast(pl.Int64)
    except pl.exceptions.InvalidOperationError:
        bad = [v for v in col.to_list() if not _is_int(str(v))][:3]
        raise RegionError(f"{path}: column {what} holds non-numeric values such as {bad}") from None


def read_tss_table(
    path: str | os.PathLike,
    *,
    gene_col: str | None = None,
    chrom_col: str | None = None,
    tss_col: str | None = None,
    strand_col: str | None = None,
    one_based: bool | None = None,
) -> pl.DataFrame:
    """Read a gene TSS table (CSV/TSV/BED, optionally gzipped).

    Parameters
    ----------
    path : str or Path
    gene_col, chrom_col, tss_col, strand_col : str, optional
        Column names to use instead of the detected ones (files with a header).
    one_based : bool, optional
        Whether the TSS column is 1-based; default: detected (see module docstring).

    Returns
    -------
    pl.DataFrame
        Columns name, symbol, chrom, tss (0-based int64), strand; file order.
    """
    path = Path(path)
    if not path.exists():
        raise RegionError(f"TSS table {path} does not exist")
    first = _first_line_fields(path)
    has_header = bool(first) and (
        first[0].startswith("#")
        or any(_pick([f], _CHROM + _TSS_1 + _TSS_0 + _GENE + ("start",)) for f in first)
    )
    raw = _read_strings(path, keep_header=has_header)
    if has_header:
        names = [f.lstrip("#") for f in first]
        raw = raw.slice(1)
        if raw.height == 0:
            raise RegionError(
                f"TSS table {path} has a header ({', '.join(names)}) but no gene rows: an empty "
                "selection is an error; add one row per gene (or check the file was not cut off)"
            )
        raw.columns = _dedupe(names)
        return _from_header(raw, path, gene_col, chrom_col, tss_col, strand_col, one_based)
    return _from_headerless(raw, path, one_based)


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _from_header(raw, path, gene_col, chrom_col, tss_col, strand_col, one_based):
    cols = raw.columns
    chrom = chrom_col or _pick(cols, _CHROM)
    gene = gene_col or _pick(cols, _GENE)
    symbol = _pick(cols, _SYMBOL)
    if gene is None:
        gene = symbol
    strand = strand_col or _pick(cols, _STRAND)
    tss = tss_col or _pick(cols, _TSS_0 + _TSS_1)
    start, end = _pick(cols, ("start", "chromstart")), _pick(cols, ("end", "chromend"))
    for what, col in (("chromosome", chrom), ("gene id", gene)):
        if col is None:
            raise RegionError(
                f"{path}: no {what} column among {', '.join(cols)}; name it with "
                f"--{what.split()[0]}-col or rename the column"
            )
    for given in (gene_col, chrom_col, tss_col, strand_col):
        if given is not None and given not in cols:
            raise RegionError(f"{path}: column {given!r} is not in the header ({', '.join(cols)})")
    strand_s = raw[strand].str.strip_chars() if strand else pl.Series(["+"] * raw.height)
    if tss is not None:
        base1 = one_based if one_based is not None else tss.lower().lstrip("#") not in _TSS_0
        tss_s = _to_int(raw[tss], path, tss) - (1 if base1 else 0)
        log.info("%s: TSS from column %r (%s-based)", path.name, tss, "1" if base1 else "0")
    elif start is not None and end is not None:
        s, e = _to_int(raw[start], path, start), _to_int(raw[end], path, end)
        use_start = ((e - s) == 1) | (strand_s != "-")
        tss_s = pl.Series(
            [a if u else b - 1 for a, b, u in zip(s, e, use_start, strict=True)], dtype=pl.Int64
        )
        log.info("%s: TSS from BED start/end (0-based start; end - 1 on minus strand)", path.name)
    else:
        raise RegionError(
            f"{path}: no TSS column (tss, tss_1based, tss_0based, ...) and no start/end "
            f"columns among {', '.join(cols)}; name it with --tss-col"
        )
    return _finish(raw[gene], raw[symbol] if symbol and symbol != gene else None, raw[chrom],
                   tss_s, strand_s, path)


def _from_headerless(raw, path, one_based):
    c = raw.columns
    first = raw.row(0)
    gene_first = _is_int(first[2]) and first[0].upper().startswith("ENS")
    if len(c) >= 3 and _is_int(first[1]) and _is_int(first[2]) and not gene_first:  # BED
        bed = read_bed(path)
        minus = bed["strand"] == "-"
        tss = pl.Series(
            [e - 1 if m and e - s > 1 else s for s, e, m in zip(bed["start"], bed["end"], minus,
                                                                strict=True)],
            dtype=pl.Int64,
        )
        return _finish(bed["name"], None, bed["chrom"], tss, bed["strand"], path)
    if len(c) == 5 and _is_int(first[2]):  # gene_id, chrom, tss, symbol, strand
        base1 = True if one_based is None else one_based
        tss = _to_int(raw["c2"], path, "3 (TSS)") - (1 if base1 else 0)
        return _finish(raw["c0"], raw["c3"], raw["c1"], tss, raw["c4"].str.strip_chars(), path)
    raise RegionError(
        f"{path}: cannot tell the layout of a table without a header; add a header line with "
        "columns gene_id, chrom, tss_1based (or tss_0based), strand"
    )


def _finish(gene, symbol, chrom, tss, strand, path) -> pl.DataFrame:
    df = pl.DataFrame(
        {
            "name": gene.cast(pl.Utf8).str.strip_chars(),
            "symbol": symbol.cast(pl.Utf8) if symbol is not None else pl.Series(
                [None] * len(gene), dtype=pl.Utf8),
            "chrom": chrom.cast(pl.Utf8).str.strip_chars(),
            "tss": tss.cast(pl.Int64),
            "strand": strand.cast(pl.Utf8),
        }
    )
    bad = df.filter(~pl.col("strand").is_in(["+", "-"]))
    if bad.height:
        row = bad.row(0, named=True)
        raise RegionError(
            f"{path}: gene {row['name']} has strand {row['strand']!r}; expected '+' or '-'"
        )
    if (df["tss"] < 0).any():
        row = df.filter(pl.col("tss") < 0).row(0, named=True)
        raise RegionError(f"{path}: gene {row['name']} has a TSS before position 1")
    dup = df.filter(pl.col("name").is_duplicated())
    if dup.height:
        raise RegionError(f"{path}: gene {dup['name'][0]} appears more than once")
    return df


def read_bed(path: str | os.PathLike) -> pl.DataFrame:
    """Read a BED file of intervals.

    Returns
    -------
    pl.DataFrame
        Columns name (column 4, or ``chrom:start+1-end``), chrom, start (0-based), end
        (exclusive), strand (column 6, or ``+``).
    """
    path = Path(path)
    if not path.exists():
        raise RegionError(f"BED file {path} does not exist")
    raw = _read_strings(path, keep_header=False)
    if raw.width < 3:
        raise RegionError(f"{path}: a BED line needs at least chrom, start and end")
    if not _is_int(raw["c1"][0]):  # a header line without '#'
        raw = raw.slice(1)
    start = _to_int(raw["c1"], path, "2 (start)")
    end = _to_int(raw["c2"], path, "3 (end)")
    chrom = raw["c0"].str.strip_chars()
    if raw.width >= 4:
        name = raw["c3"].str.strip_chars()
    else:
        name = pl.Series([f"{c}:{s + 1}-{e}" for c, s, e in zip(chrom, start, end, strict=True)])
    strand = raw["c5"].str.strip_chars() if raw.width >= 6 else pl.Series(["+"] * raw.height)
    strand = strand.replace(".", "+")
    df = pl.DataFrame({"name": name, "chrom": chrom, "start": start, "end": end,
                       "strand": strand})
    bad = df.filter((pl.col("start") < 0) | (pl.col("end") < pl.col("start")))
    if bad.height:
        r = bad.row(0, named=True)
        raise RegionError(
            f"{path}: interval {r['name']} ({r['chrom']} {r['start']} {r['end']}) has end < start "
            "or a negative start; BED is 0-based half-open"
        )
    return df
