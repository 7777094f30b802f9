"""What every section shares: the one configuration error and the value checks.

:func:`require` is called by every section's ``__post_init__``: it checks the section's own
rules and that every field typed ``Literal[...]`` holds one of its choices (also when a section
is built in Python, not only when it is read from TOML).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

__all__ = ["ConfigError", "require", "file_stem", "MAX_LENGTH", "STRATEGIES", "LOSS_TERM_HEADS",
           "LOSS_TERM_STREAMS", "BASELINE_METHODS", "PRIMARY_TARGETS", "ORGANISMS", "MPRA_CELL_TYPES"]


class ConfigError(ValueError):
    """A study file, section, setting or override is invalid; the message says which and why."""


def require(config, section: str, checks: list[tuple[bool, str]] = ()) -> None:
    """Raise ConfigError ``[section] message`` for the first failed check.

    Every ``Literal`` field of ``config`` (a section dataclass) is checked first: its value must
    be one of the literal's choices.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        kind = hints[f.name]
        if typing.get_origin(kind) is typing.Literal:
            value = getattr(config, f.name)
            if value not in typing.get_args(kind):
                choices = ", ".join(repr(a) for a in typing.get_args(kind))
                raise ConfigError(f"[{section}] {f.name} = {value!r} is not one of {choices}")
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"[{section}] {message}")


def file_stem(path: str) -> str:
    """A file's name without its data extensions (``a/b.tsv.gz`` -> ``b``): default names of
    target sets and MPRA cell types."""
    name = Path(path).name
    for suffix in (".gz", ".zst", ".parquet", ".pq", ".tsv", ".csv", ".txt", ".bed"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


MAX_LENGTH = 524_288
"""The longest window the haplotype engine builds (Borzoi's 524,288 bp = 4 x Enformer's
131,072)."""

STRATEGIES = ("single", "pairwise_regression", "pairwise_classification", "in_batch")
"""The paper's fine-tuning strategies (``[train] strategy``)."""

LOSS_TERM_HEADS: dict[str, str | None] = {
    "single": None,
    "pairwise_regression": None,
    "pairwise_classification": "track",
    "in_batch": None,
    "enformer_human": None,
    "enformer_mouse": None,
    "mpra": None,
}
"""Every loss term ``[train] terms`` may name, and the ``[model] head`` it needs (None: any).
The terms themselves are :data:`train.losses.TERMS` (same names)."""

LOSS_TERM_STREAMS: dict[str, str] = {
    "single": "samples",
    "pairwise_regression": "pairs",
    "pairwise_classification": "pairs_p",
    "in_batch": "gene",
    "enformer_human": "enformer_human",
    "enformer_mouse": "enformer_mouse",
    "mpra": "mpra",
}
"""The batch stream each loss term reads (:data:`train.losses.STREAMS`; ``[train]
stream_ratios`` names these). The joint-data streams read ``DIR/enformer_data`` and
``DIR/mpra``."""

BASELINE_METHODS = ("elastic_net", "lasso", "ridge", "top_snp")
"""The baseline methods, as named in ``[baselines] methods`` and ``DIR/predictions/NAME``."""

PRIMARY_TARGETS = "primary"
"""The label of a study's primary target set (``[shard] expression``)."""

ORGANISMS = ("human", "mouse")
"""Enformer's two output heads, and the Basenji2 data folders of ``[enformer_data]``."""

MPRA_CELL_TYPES = ("K562", "HepG2", "GM12878", "SK-N-SH", "A549")
"""The cell types of Siraj et al.'s MPRA variant-effect tables (the usual ``[mpra] cell_types``)."""
