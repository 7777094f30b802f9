"""What an evaluation reads, checked: the split's observed values, each predictor's
predictions, gene classes, the paper's published means and the attribution files.

Every reader raises :class:`EvaluationError` with a message that names the file, the record
and the fix:

* :func:`load_split` — the split's (gene, individual) pairs and observed values, from
  ``DIR/shards/manifest.parquet``;
* :func:`split_gene_classes` / :func:`read_gene_class_table` — the split's own seen / unseen
  classes, or a table gene,class (the paper's ``gene_class.csv``), matched by
  :func:`hapflow.names.gene_key`;
* :func:`discover_predictions` / :func:`read_predictions` — ``DIR/predictions/NAME/SPLIT.parquet``
  (gene, individual, prediction);
* :func:`read_published` — the paper's ``perf_summary.csv``;
* :func:`read_attribution` — ``DIR/attribution/RUN/GENE.json`` and ``GENE.png`` as
  ``python -m analysis.attribute`` wrote them;
* :func:`read_symbols` — the manifest's gene symbols, shown next to the ids;
* :func:`read_oracle` — a simulated study's per-gene oracle r
  (``DIR/expression/simulation_genes.parquet``, written by ``python -m prep.simulate``).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hapflow.names import gene_key
from prep.splits import SplitError, read_gene_classes

__all__ = [
    "EvaluationError",
    "UNLISTED",
    "PAPER_CLASSES",
    "Attribution",
    "load_split",
    "split_gene_classes",
    "read_gene_class_table",
    "discover_predictions",
    "read_predictions",
    "read_published",
    "read_attribution",
    "read_symbols",
    "gene_label",
    "read_oracle",
]

UNLISTED = "unlisted"
"""Class of genes missing from a gene class table."""

PAPER_CLASSES = ("random_split", "yri_split", "unseen")
"""The paper's gene classes, in its order."""


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the file, the record and the fix."""


# --------------------------------------------------------------------------------------------
# the split and the predictions


def _read_parquet(path: Path, what: str) -> pl.DataFrame:
    if not path.exists():
        raise EvaluationError(f"{path}: {what} not found")
    try:
        return pl.read_parquet(path)
    except Exception as err:  # polars raises several types for corrupt files
        raise EvaluationError(f"{path}: cannot read {what} as Parquet ({err})") from None


def load_split(manifest: str | os.PathLike, split: str, target: str = "Y") -> pl.DataFrame:
    """The split's (gene, individual) pairs and their observed values.

    Parameters
    ----------
    manifest : path
        ``DIR/shards/manifest.parquet`` written by ``prep.shard``.
    split : str
        e.g. ``"test"``.
    target : {"Y", "Z"}
        Manifest column used as the observed value.

    Returns
    -------
    pl.DataFrame
        Columns gene, individual, population (str; null when unknown), observed (float64),
        sorted by gene then individual, one row per pair.
    """
    path = Path(manifest)
    table = _read_parquet(path, "shard manifest (run python -m prep.shard first)")
    need = {"split", "gene", "individual", target}
    missing = sorted(need - set(table.columns))
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)}; rebuild the "
                              "shards with python -m prep.shard")
    splits = sorted(table["split"].unique().to_list())
    rows = table.filter(pl.col("split") == split)
    if rows.height == 0:
        raise EvaluationError(f"{path}: no rows of split {split!r}; the manifest has "
                              f"{', '.join(map(repr, splits))}")
    population = (pl.col("population").cast(pl.Utf8) if "population" in rows.columns
                  else pl.lit(None, dtype=pl.Utf8))
    out = rows.select(
        pl.col("gene").cast(pl.Utf8),
        pl.col("individual").cast(pl.Utf8),
        population.replace("NA", None).alias("population"),
        pl.col(target).cast(pl.Float64).alias("observed"),
    ).sort("gene", "individual")
    dups = out.filter(pl.struct("gene", "individual").is_duplicated())
    if dups.height:
        g, i = dups.row(0)[:2]
        raise EvaluationError(f"{path}: gene {g}, individual {i} appears more than once in split "
                              f"{split!r}; rebuild the shards")
    bad = out.filter(pl.col("observed").is_null() | ~pl.col("observed").is_finite())
    if bad.height:
        g, i = bad.row(0)[:2]
        raise EvaluationError(f"{path}: {bad.height} observed {target} value(s) of split "
                              f"{split!r} are missing or not finite, first gene {g}, individual "
                              f"{i}; rebuild the expression targets")
    return out


def split_gene_classes(manifest: str | os.PathLike, split: str) -> pl.DataFrame:
    """The split's own classes: ``seen`` genes have training individuals, ``unseen`` none.

    Returns
    -------
    pl.DataFrame
        Columns gene, class for every gene of ``split``, sorted by gene.
    """
    table = pl.read_parquet(manifest, columns=["split", "gene"])
    trained = table.filter(pl.col("split") == "train")["gene"].unique().implode()
    genes = table.filter(pl.col("split") == split).select("gene").unique()
    return genes.with_columns(
        pl.when(pl.col("gene").is_in(trained)).then(pl.lit("seen")).otherwise(pl.lit("unseen"))
        .alias("class")
    ).sort("gene")


def read_gene_class_table(path: str | os.PathLike, genes: list[str]) -> tuple[pl.DataFrame, int]:
    """Classes of ``genes`` from a table gene,class (CSV/TSV/Parquet, e.g. gene_class.csv).

    Genes match exactly, else by :func:`hapflow.names.gene_key` (case ignored, Ensembl version
    suffixes ignored: ``ENSG00000099889.9`` matches ``ensg00000099889``). Genes absent from the
    table get the class ``unlisted``.

    Returns
    -------
    (pl.DataFrame, int)
        Columns gene, class for every gene in ``genes``; and how many were unlisted.

    Raises
    ------
    EvaluationError
        The table is unreadable, lacks a column, or none of ``genes`` is in it.
    """
    try:
        table = read_gene_classes(path)
    except SplitError as err:
        raise EvaluationError(str(err)) from None
    except (OSError, pl.exceptions.PolarsError) as err:
        raise EvaluationError(f"{path}: cannot read the gene class table ({err})") from None
    exact = dict(zip(table["gene"].cast(pl.Utf8), table["class"].cast(pl.Utf8), strict=True))
    loose = {gene_key(g.strip()): c for g, c in exact.items()}
    classes = [exact.get(g, loose.get(gene_key(g.strip()), UNLISTED)) for g in genes]
    unlisted = sum(c == UNLISTED for c in classes)
    if genes and unlisted == len(genes):
        raise EvaluationError(
            f"{path}: none of the split's {len(genes)} genes (e.g. {genes[0]}) is listed; the "
            "table must name genes as the manifest does (Ensembl ids, version optional)")
    return pl.DataFrame({"gene": genes, "class": classes}, schema={"gene": pl.Utf8,
                                                                   "class": pl.Utf8}), unlisted


def discover_predictions(predictions_dir: str | os.PathLike, split: str) -> list[str]:
    """Names of the folders under ``predictions_dir`` that hold ``SPLIT.parquet``, sorted."""
    root = Path(predictions_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / f"{split}.parquet").is_file())


def read_predictions(path: str | os.PathLike, split_table: pl.DataFrame,
                     split: str = "test", manifest: str | os.PathLike | None = None) -> pl.DataFrame:
    """Read and validate one predictor's ``SPLIT.parquet``.

    Parameters
    ----------
    path : path
        Parquet with columns gene, individual, prediction (others ignored).
    split_table : pl.DataFrame
        :func:`load_split` output: the pairs predictions may name.
    split : str
        The split's name, for messages.
    manifest : path, optional
        The manifest, to say in which split a stray (gene, individual) actually is.

    Returns
    -------
    pl.DataFrame
        Columns gene, individual, prediction (float64), sorted by gene then individual.

    Raises
    ------
    EvaluationError
        Missing columns, no rows, non-numeric, null, NaN or infinite predictions, duplicate
        (gene, individual) rows, genes or individuals that are not in the split.
    """
    path = Path(path)
    table = _read_parquet(path, "predictions")
    missing = [c for c in ("gene", "individual", "prediction") if c not in table.columns]
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)} (it has "
                              f"{', '.join(table.columns) or 'none'}); predictors write gene, "
                              "individual, prediction")
    if table.height == 0:
        raise EvaluationError(f"{path}: no predictions (0 rows)")
    if not table.schema["prediction"].is_numeric():
        raise EvaluationError(f"{path}: column prediction is {table.schema['prediction']}, "
                              "expected numbers")
    table = table.select(pl.col("gene").cast(pl.Utf8), pl.col("individual").cast(pl.Utf8),
                         pl.col("prediction").cast(pl.Float64))
    no_id = table.filter(pl.col("gene").is_null() | pl.col("individual").is_null())
    if no_id.height:
        raise EvaluationError(f"{path}: {no_id.height} row(s) lack a gene or an individual")
    bad = table.filter(pl.col("prediction").is_null() | ~pl.col("prediction").is_finite())
    if bad.height:
        g, i, v = bad.row(0)
        raise EvaluationError(f"{path}: {bad.height} prediction(s) are missing, NaN or infinite, "
                              f"first gene {g}, individual {i} ({v}); fix the predictor or drop "
                              "those rows")
    dups = table.filter(pl.struct("gene", "individual").is_duplicated())
    if dups.height:
        g, i, _ = dups.row(0)
        raise EvaluationError(f"{path}: gene {g}, individual {i} is predicted more than once "
                              f"({dups.height} duplicate rows); write one prediction per pair "
                              "(e.g. average forward and reverse-complement first)")
    stray_genes = table.join(split_table.select("gene").unique(), on="gene", how="anti")
    if stray_genes.height:
        genes = stray_genes["gene"].unique(maintain_order=True).to_list()
        raise EvaluationError(f"{path}: {len(genes)} gene(s) are not in the {split!r} split, "
                              f"e.g. {genes[0]}; predict only that split's genes")
    stray = table.join(split_table, on=["gene", "individual"], how="anti")
    if stray.height:
        g, i, _ = stray.row(0)
        where = ""
        if manifest is not None:
            hit = pl.read_parquet(manifest, columns=["split", "gene", "individual"]).filter(
                (pl.col("gene") == g) & (pl.col("individual") == i))
            where = (f" (it is a {hit['split'][0]!r} individual of that gene)" if hit.height
                     else " (it is not in the study)")
        raise EvaluationError(f"{path}: {stray.height} row(s) name individuals outside the "
                              f"{split!r} split, first gene {g}, individual {i}{where}; "
                              f"predict only the {split!r} individuals of each gene")
    return table.sort("gene", "individual")


# --------------------------------------------------------------------------------------------
# the paper's published means


def read_published(path: str | os.PathLike) -> pl.DataFrame:
    """The paper's mean per-gene Pearson r per model type, full-data runs only.

    Reads ``perf_summary.csv`` (one row per model and replicate; columns Model Type, Replicate,
    Subsample Ratio, Min AF and, per class C in random_split / yri_split / unseen,
    ``C Genes Avg PearsonR``, ``C Genes Avg |PearsonR|`` and ``n_C``). Ablations that subsample
    individuals (Subsample Ratio not -1 or 1) or filter variants by allele frequency (Min AF not
    -1 or 0) are left out; replicates (seeds) are averaged.

    Returns
    -------
    pl.DataFrame
        model (str, line breaks removed), replicates (int), and for each class C: ``C`` (mean
        r), ``C_abs`` (mean |r|), ``n_C`` (genes); in the file's order of first appearance.
    """
    path = Path(path)
    try:
        table = pl.read_csv(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise EvaluationError(f"{path}: cannot read the published summary ({err})") from None
    need = ["Model Type", "Subsample Ratio", "Min AF"]
    for c in PAPER_CLASSES:
        need += [f"{c} Genes Avg PearsonR", f"{c} Genes Avg |PearsonR|", f"n_{c}"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {', '.join(missing)}; expected the paper's "
                     "perf_summary.csv")
    full = table.filter(pl.col("Subsample Ratio").is_in([-1.0, 1.0])
                        & pl.col("Min AF").is_in([-1.0, 0.0]))
    full = full.with_columns(
        pl.col("Model Type").str.replace_all(r"\s*\n\s*", " ").alias("model"),
        pl.int_range(pl.len()).alias("_order"),
    )
    aggs = [pl.len().alias("replicates"), pl.col("_order").min()]
    for c in PAPER_CLASSES:
        aggs += [pl.col(f"{c} Genes Avg PearsonR").mean().alias(c),
                 pl.col(f"{c} Genes Avg |PearsonR|").mean().alias(f"{c}_abs"),
                 pl.col(f"n_{c}").first().alias(f"n_{c}")]
    return full.group_by("model").agg(aggs).sort("_order").drop("_order")


# --------------------------------------------------------------------------------------------
# variant attribution (files of python -m analysis.attribute)


@dataclass(frozen=True)
class Attribution:
    """One gene's attribution as ``python -m analysis.attribute`` wrote it.

    Attributes
    ----------
    run : str
        The run (folder name under ``DIR/attribution``).
    json_path, png_path : Path
        ``DIR/attribution/RUN/GENE.json`` and the plot next to it, ``GENE.png``.
    summary : dict
        The JSON's content (gene, symbol, run, individuals, variants, reverted,
        indels_reverted, elastic_net, top_variants, ...), checked by :func:`read_attribution`.
    png : bytes
        The plot's bytes (a checked PNG).
    """

    run: str
    json_path: Path
    png_path: Path
    summary: dict
    png: bytes


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SUMMARY_TYPES = {"gene": str, "symbol": str, "individuals": list, "variants": int,
                  "reverted": int, "indels_reverted": int, "top_variants": list}
_TOP_KEYS = ("variant", "n_carriers", "mean_effect", "variance_drop")


def _png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete PNG (signature, chunk lengths and CRCs, IHDR first, IEND
    last), or None when it is one. Reads no pixels."""
    if data[:8] != _PNG_MAGIC:
        return "not a PNG (wrong signature)"
    at, first = 8, True
    while True:
        if at + 12 > len(data):
            return "truncated PNG (no IEND chunk)"
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        end = at + 12 + length
        if end > len(data):
            return f"truncated PNG (chunk {kind!r} runs past the end of the file)"
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[at + 4:end - 4]) != crc:
            return f"corrupt PNG (checksum of chunk {kind!r} at byte {at} does not match)"
        if first and kind != b"IHDR":
            return "corrupt PNG (first chunk is not IHDR)"
        first, at = False, end
        if kind == b"IEND":
            return None


def _summary_problem(summary) -> str | None:
    """What a GENE.json lacks to be shown, or None."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    missing = [k for k in _SUMMARY_TYPES if k not in summary]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    for key, kind in _SUMMARY_TYPES.items():
        value = summary[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key} is {type(value).__name__}, expected {kind.__name__}"
    en = summary.get("elastic_net")
    if en is not None and not isinstance(en, dict):
        return f"elastic_net is {type(en).__name__}, expected an object or null"
    for k, row in enumerate(summary["top_variants"]):
        lacking = [c for c in _TOP_KEYS if not isinstance(row, dict) or c not in row]
        if lacking:
            return f"top_variants[{k}] lacks {', '.join(lacking)}"
    return None


def read_attribution(root: str | os.PathLike, runs: list[str]) -> list[Attribution]:
    """The attribution summaries and plots of ``runs`` under ``root`` (``DIR/attribution``).

    For each run in the given order, every ``root/RUN/*.json`` (sorted by name) with the
    ``.png`` of the same stem beside it. Runs without a folder are skipped; an empty list means
    there is nothing to show.

    Raises
    ------
    EvaluationError
        A JSON that cannot be read or is not an attribution summary, or a missing, unreadable
        or incomplete PNG; the message names the file and how to rewrite it.
    """
    root = Path(root)
    found: list[Attribution] = []
    for run in runs:
        folder = root / run
        if not folder.is_dir():
            continue
        redo = (f"re-run python -m analysis.attribute --run {run} --gene GENE (same --config "
                f"and --workdir) or delete the file")
        for path in sorted(folder.glob("*.json")):
            try:
                summary = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise EvaluationError(f"{path}: cannot read the attribution summary ({err}); "
                             f"{redo}") from None
            problem = _summary_problem(summary)
            if problem:
                raise EvaluationError(f"{path}: not an attribution summary of python -m "
                             f"analysis.attribute ({problem}); {redo}")
            png_path = path.with_suffix(".png")
            try:
                png = png_path.read_bytes()
            except OSError as err:
                raise EvaluationError(f"{png_path}: cannot read the attribution plot of {path.name} "
                             f"({err.strerror or err}); {redo}") from None
            problem = _png_problem(png)
            if problem:
                raise EvaluationError(f"{png_path}: {problem}; {redo}")
            found.append(Attribution(run, path, png_path, summary, png))
    return found




# --------------------------------------------------------------------------------------------
# gene symbols and a simulation's oracle


def read_symbols(manifest: str | os.PathLike) -> dict[str, str]:
    """gene -> symbol from the manifest's ``symbol`` column (genes without one left out; an
    older manifest without the column gives ``{}``)."""
    try:
        table = pl.read_parquet(manifest, columns=["gene", "symbol"])
    except Exception:  # noqa: BLE001 - no such column (an older manifest): polars raises several
        return {}
    table = table.unique("gene").filter(pl.col("symbol").is_not_null() & (pl.col("symbol") != "")
                                        & (pl.col("symbol") != pl.col("gene")))
    return dict(zip(table["gene"], table["symbol"], strict=True))


def gene_label(gene: str, symbols: dict[str, str]) -> str:
    """``SYMBOL (gene id)`` when the gene has a symbol, else the id."""
    symbol = symbols.get(gene)
    return f"{symbol} ({gene})" if symbol else gene


def read_oracle(path: str | os.PathLike, genes: list[str]) -> pl.DataFrame | None:
    """A simulated study's oracle r of ``genes``: the genetic value's Pearson r with the
    simulated expression (``oracle_r`` of ``simulation_genes.parquet``, over every simulated
    individual). Genes match exactly, else by :func:`hapflow.names.gene_key`.

    Returns
    -------
    pl.DataFrame or None
        gene, oracle_r (float64; NaN for genes the table lacks); None without the file.

    Raises
    ------
    EvaluationError
        The file exists but is not such a table, or names none of ``genes``.
    """
    path = Path(path)
    if not path.exists():
        return None
    table = _read_parquet(path, "simulation gene table")
    if not {"gene", "oracle_r"} <= set(table.columns):
        raise EvaluationError(f"{path}: lacks the column(s) gene and oracle_r of python -m "
                              "prep.simulate's gene table; simulate again or remove the file")
    values = dict(zip(table["gene"].cast(pl.Utf8), table["oracle_r"].cast(pl.Float64),
                      strict=True))
    loose = {gene_key(g): v for g, v in values.items()}
    r = [values.get(g, loose.get(gene_key(g))) for g in genes]
    if genes and all(v is None for v in r):
        raise EvaluationError(f"{path}: names none of the split's {len(genes)} genes (e.g. "
                              f"{genes[0]}): it belongs to another simulation; simulate again "
                              "or remove it")
    return pl.DataFrame({"gene": genes, "oracle_r": [float("nan") if v is None else v
                                                      for v in r]},
                        schema={"gene": pl.Utf8, "oracle_r": pl.Float64})
