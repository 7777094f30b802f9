"""Names every stage agrees on: splits, stages, gene ids and contig names.

* :data:`SPLITS` — the split names, in the order tables and reports list them.
* :data:`STAGES` — a study's stages in the order they run (the demo runs them so; ``hapflow
  --help`` lists them so).
* :func:`strip_version` / :func:`gene_key` — how gene ids from different files are matched:
  the Ensembl version suffix is ignored (``ENSG00000099889.9`` = ``ENSG00000099889``), anything
  after it is kept (``ENSG00000182378.14_PAR_Y`` -> ``ENSG00000182378_PAR_Y``, another gene than
  ``ENSG00000182378``), and case is ignored.
* :func:`contig_key` / :func:`contig_aliases` — how contig names from different files are
  matched: ``chr22`` = ``22``, ``chrM`` = ``chrMT`` = ``M`` = ``MT``.
"""

from __future__ import annotations

import re

__all__ = ["SPLITS", "STAGES", "strip_version", "gene_key", "contig_key", "contig_aliases"]

SPLITS = ("train", "val", "test")
"""The three splits of a study's individuals."""

STAGES = ("expression", "shard", "train", "predict", "baselines", "attribute", "evaluate")
"""A study's stages in the order they run (``hapflow SUBCOMMAND`` names)."""

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d+)\.\d+", re.IGNORECASE)


def strip_version(gene_id: str) -> str:
    """Drop an Ensembl version suffix: ``ENSG00000099889.9`` -> ``ENSG00000099889``.

    Only Ensembl-style ids (``ENS...`` + digits) lose their ``.N``; other names keep their dots,
    since in clone-based symbols such as ``AC017104.1`` the dot is part of the name. Anything
    after the version (``ENSG00000182378.14_PAR_Y`` -> ``ENSG00000182378_PAR_Y``) is kept.
    """
    return _ENSEMBL_VERSION.sub(r"\1", str(gene_id))


def gene_key(gene_id: str) -> str:
    """The key gene ids are matched on: :func:`strip_version`, then upper case."""
    return strip_version(gene_id).upper()


_MITO = ("M", "MT")


def contig_key(name: str) -> str:
    """The key contig names are matched on: no ``chr`` prefix (any case), ``M`` as ``MT``.

    >>> contig_key("chr22"), contig_key("Chr22"), contig_key("22"), contig_key("chrM")
    ('22', '22', '22', 'MT')
    """
    text = str(name).strip()
    bare = text[3:] if text.lower().startswith("chr") else text
    return "MT" if bare.upper() in _MITO else bare


def contig_aliases(name: str) -> list[str]:
    """Names that denote the same contig as ``name`` in real files, ``name`` first.

    >>> contig_aliases("chr22")
    ['chr22', '22']
    >>> contig_aliases("MT")
    ['MT', 'chrM', 'M', 'chrMT']
    """
    out = [name]
    key = contig_key(name)
    candidates = ["MT", "chrM", "M", "chrMT"] if key == "MT" else [key, "chr" + key]
    for c in candidates:
        if c not in out:
            out.append(c)
    return out
