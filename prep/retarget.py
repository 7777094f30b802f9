"""Re-target a study: rewrite its targets table from new expression, never its shards.

Shards hold sequences and identity only (:mod:`prep.shard_format`); the targets live in one
table, the study's ``DIR/shards/manifest.parquet`` (one row per (gene, individual) sample),
joined by the loader by sample. A change of expression processing (another normalisation,
``n_pcs``, ``target_reference``, more expression sets) therefore rewrites that table only::

    python -m prep.expression --config C --workdir DIR --set expression.n_pcs=3   # if needed
    python -m prep.retarget --config C --workdir DIR

(``--expression`` runs the first line's stage too). ``prep.shard`` does the same by itself when
re-run with new expression whose samples are the shards' samples.

What a re-target may change
---------------------------
The *values* of the existing samples only: Y, Z and P of the primary set (``[shard]
expression``) and of every further set (``[shard] target_sets``), and the reference of Z and P.
Every existing sample must have a value in the primary matrix, otherwise it stops naming the
first missing (gene, individual): dropping or adding samples, or moving them between splits,
changes the sequences to store and needs a rebuild (``python -m prep.shard ... --overwrite``).
Genes and individuals of the new matrix without sequences are counted and logged, not added.

Targets table
-------------
Manifest columns ``Y``, ``Z``, ``P`` (primary set; Z and P from the training individuals'
statistics unless ``target_reference = "all"``), then ``Y:NAME``, ``Z:NAME``, ``P:NAME`` per
further set (NaN where that matrix lacks the sample: masked in batches), and ``targets_build``,
the fingerprint of the targets' provenance. ``DIR/shards/targets.json`` records that provenance:
the sets (name, file, sha256, columns), the target settings, the sequence build they were
joined to, and per set the samples with a value.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from pathlib import Path

__all__ = [
    "TARGETS_JSON",
    "PRIMARY",
    "RetargetError",
    "target_sets",
    "target_components",
    "target_table",
    "with_targets",
    "write_targets",
    "retarget",
    "main",
]

log = logging.getLogger(__name__)

TARGETS_JSON = "targets.json"
PRIMARY = "primary"
"""Name of the primary set (``[shard] expression``) in ``targets.json`` and batches."""

_TARGET_COLUMN_PREFIXES = ("Y:", "Z:", "P:")


class RetargetError(ValueError):
    """The targets cannot be rewritten as asked; the message says what to fix."""


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".zst", ".parquet", ".pq", ".tsv", ".csv", ".txt", ".bed"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def target_sets(scfg, workdir: str | os.PathLike) -> list[tuple[str | None, str, str]]:
    """The target sets of a study: ``(name, path, label)``, primary first (name None).

    ``label`` is the name used in ``targets.json`` and batches (:data:`PRIMARY` for the
    primary set).
    """
    primary = scfg.expression or str(Path(workdir) / "expression" / "expression.parquet")
    names = list(scfg.target_names) or [_stem(p) for p in scfg.target_sets]
    out = [(None, primary, PRIMARY)]
    out += [(n, p, n) for n, p in zip(names, scfg.target_sets, strict=True)]
    return out


def target_components(scfg, workdir, build: str, cache_dir=None) -> dict:
    """What the targets are made of: settings, sha256 of every matrix, the sequence build."""
    from prep.fingerprint import file_sha256

    sets = target_sets(scfg, workdir)
    for _, path, label in sets:
        if not Path(path).exists():
            hint = (" (run `python -m prep.expression` with the same --workdir first)"
                    if label == PRIMARY and not scfg.expression else "")
            raise RetargetError(f"expression matrix {path} of target set {label} does not "
                                f"exist{hint}")
    return {
        "settings": {"expression_format": scfg.expression_format,
                     "target_reference": scfg.target_reference,
                     "sets": [label for _, _, label in sets]},
        "inputs": {label: file_sha256(path, cache_dir) for _, path, label in sets},
        "build": build,
    }


def target_table(samples, scfg, workdir, report_unused: bool = False):
    """The target columns of ``samples`` (gene, individual, split), in their order.

    Returns
    -------
    (pl.DataFrame, list of dict)
        Columns Y, Z, P then Y:NAME, Z:NAME, P:NAME per further set (Float64, NaN where a
        further set lacks the sample); and per set ``{"name", "file", "columns", "samples"}``
        (samples with a value). ``report_unused`` logs the matrices' genes and individuals
        without sequences.

    Raises
    ------
    prep.targets.ExpressionError
        A primary value missing for some sample (the message says to rebuild), or an
        unreadable matrix.
    """
    import polars as pl

    from prep.expression_files import read_expression
    from prep.targets import target_columns, targets_for

    parts, sets = [], []
    for name, path, label in target_sets(scfg, workdir):
        matrix = read_expression(path, scfg.expression_format)
        cols = targets_for(samples, matrix, reference=scfg.target_reference, name=name,
                           source=f"expression matrix {path} (target set {label})",
                           complete=name is None)
        parts.append(cols)
        n = int(cols[cols.columns[0]].is_not_nan().sum())
        sets.append({"name": label, "file": os.path.basename(path),
                     "columns": list(target_columns(name)), "samples": n})
        if name is not None:
            log.info("Target set %s: %d of %d samples have a value (the others are masked)",
                     label, n, samples.height)
        if report_unused:
            _log_unused(samples, matrix, label)
    return pl.concat(parts, how="horizontal"), sets


def _log_unused(samples, matrix, label: str) -> None:
    from hapflow.names import gene_key

    extra_inds = set(matrix.columns[1:]) - set(samples["individual"].unique().to_list())
    have = {gene_key(g) for g in samples["gene"].unique().to_list()}
    extra_genes = [g for g in matrix["gene"].to_list() if gene_key(g) not in have]
    if extra_inds or extra_genes:
        log.info("Target set %s: %d individual(s) and %d gene(s) of the matrix have no "
                 "sequences in the shards and are left out (a rebuild, `prep.shard "
                 "--overwrite`, would add those the VCF and split have)", label, len(extra_inds),
                 len(extra_genes))


def _is_target_column(name: str) -> bool:
    return name in ("Y", "Z", "P", "targets_build") or name.startswith(_TARGET_COLUMN_PREFIXES)


def with_targets(manifest, scfg, workdir, build: str, cache_dir=None,
                 report_unused: bool = False):
    """The manifest with fresh target columns, and the ``targets.json`` record.

    Parameters
    ----------
    manifest : pl.DataFrame
        One row per sample (split, shard, group, ..., gene, individual, ...); any old target
        columns are replaced.
    build : str
        The sequence build the targets are joined to.

    Returns
    -------
    (pl.DataFrame, dict)
        Identity columns, target columns (see :func:`target_table`), ``build`` (if present)
        and ``targets_build``; the record for :func:`write_targets`.
    """
    import polars as pl

    from prep.fingerprint import fingerprint

    components = target_components(scfg, workdir, build, cache_dir)
    targets_build = fingerprint(components)
    identity = manifest.select([c for c in manifest.columns
                                if not _is_target_column(c) and c != "build"])
    table, sets = target_table(identity, scfg, workdir, report_unused)
    parts = [identity, table]
    if "build" in manifest.columns:
        parts.append(manifest.select("build"))
    out = pl.concat(parts, how="horizontal").with_columns(
        pl.lit(targets_build).alias("targets_build"))
    record = {"targets_build": targets_build, "build": build, "sets": sets,
              "samples": manifest.height, "components": components}
    return out, record


def write_targets(out_dir: str | os.PathLike, manifest, record: dict) -> None:
    """Write ``targets.json`` then ``manifest.parquet`` (each atomically)."""
    from hapflow.io import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    atomic_write_text(out_dir / TARGETS_JSON, json.dumps(record, indent=1) + "\n")
    buf = io.BytesIO()
    manifest.write_parquet(buf, compression="zstd", statistics=False)
    atomic_write_bytes(out_dir / "manifest.parquet", buf.getvalue())


def retarget(scfg, workdir: str | os.PathLike) -> dict:
    """Rewrite the targets of a built study (``DIR/shards``) from ``scfg``'s target settings.

    Reads ``manifest.parquet`` and ``build.json``; writes ``targets.json`` and the manifest's
    target columns. Shards, ``meta.json`` and ``build.json`` are not touched.

    Returns
    -------
    dict
        ``samples``, ``sets`` (names), ``targets_build``, ``changed`` (False when the targets
        already had this provenance), ``seconds``.

    Raises
    ------
    RetargetError
        No built study in ``DIR/shards``; prep.targets.ExpressionError: a sample without a
        primary value (rebuild to drop it), an unreadable matrix.
    """
    import polars as pl

    t0 = time.perf_counter()
    out_dir = Path(workdir) / "shards"
    path = out_dir / "manifest.parquet"
    if not path.exists() or not (out_dir / "build.json").exists():
        raise RetargetError(f"{out_dir} holds no built study (no manifest.parquet or build.json): "
                            "run `python -m prep.shard` with the same --config and --workdir")
    try:
        manifest = pl.read_parquet(path)
        build = json.loads((out_dir / "build.json").read_text())["build"]
    except Exception as err:  # noqa: BLE001 - polars and json raise several types
        raise RetargetError(f"cannot read {path} or build.json ({err}): rebuild with "
                            "`python -m prep.shard ... --overwrite`") from None
    if "build" in manifest.columns and manifest["build"].unique().to_list() != [build]:
        raise RetargetError(f"{path} describes another build than {out_dir / 'build.json'}: "
                            "the study is half written; re-run `python -m prep.shard`")
    new, record = with_targets(manifest, scfg, workdir, build, Path(workdir) / ".cache",
                               report_unused=True)
    old = manifest["targets_build"][0] if "targets_build" in manifest.columns else None
    changed = old != record["targets_build"]
    if changed:
        write_targets(out_dir, new, record)
        delta = _mean_change(manifest, new)
        log.info("Re-targeted %d samples (%s) in %s; the shards were not touched%s",
                 new.height, ", ".join(s["name"] for s in record["sets"]), out_dir,
                 f"; Y moved by {delta:.3g} on average" if delta is not None else "")
    else:
        log.info("Nothing to do: the targets in %s already come from these matrices and "
                 "settings (%s)", out_dir, record["targets_build"])
    return {"samples": new.height, "sets": [s["name"] for s in record["sets"]],
            "targets_build": record["targets_build"], "changed": changed,
            "seconds": time.perf_counter() - t0}


def _mean_change(old, new) -> float | None:
    if "Y" not in old.columns:
        return None
    import numpy as np

    return float(np.nanmean(np.abs(new["Y"].to_numpy() - old["Y"].to_numpy())))


def _main(argv=None) -> int:
    from hapflow.cli import add_common_arguments, make_parser, setup_logging

    p = make_parser("python -m prep.retarget",
                    "Rewrite a study's targets table (DIR/shards/manifest.parquet) from new "
                    "expression values; the shards themselves stay.",
                    next_step="python -m train.run --config C --workdir DIR")
    add_common_arguments(p, ("expression", "shard"),
                         workdir_help="study working directory (rewrites DIR/shards tables)")
    p.add_argument("--expression", action="store_true",
                   help="run the prep.expression stage first (e.g. after changing n_pcs)")
    args = p.parse_args(argv)
    setup_logging(args.quiet)
    from hapflow.config import load_study, split_overrides
    from prep.targets import run_expression

    sets = split_overrides(args.set, ("expression", "shard"))
    need = ("expression", "shard") if args.expression else ("shard",)
    study = load_study(args.config, sets, need=need)
    if args.expression:
        run_expression(study.expression, args.workdir)
    summary = retarget(study.shard, args.workdir)
    if not args.quiet:
        print(f"{summary['samples']} samples, target sets {', '.join(summary['sets'])}: "
              f"{'rewritten' if summary['changed'] else 'unchanged, nothing to do'} in "
              f"{summary['seconds']:.2f} s")
    return 0


def main(argv=None) -> int:
    """``python -m prep.retarget --config C --workdir DIR``: see the module docstring."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
