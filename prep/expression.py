"""Prepare a study's expression matrix: ``python -m prep.expression``.

    python -m prep.expression --config configs/demo.toml --workdir work/demo
    python -m prep.expression --config configs/demo.toml --workdir work/demo --n-pcs 3

Reads the ``[expression]`` section of the config (:class:`ExpressionConfig`; any field can be
overridden with ``--field-name value``), then writes

* ``DIR/expression/expression.parquet``: genes × individuals, first column ``gene``;
* ``DIR/expression/config.toml``: the resolved config.

The work is :func:`prep.targets.run_expression`; this module only parses arguments, so
``--help`` imports neither NumPy nor polars.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Literal

from prep.config import ConfigError, load_config

__all__ = ["ExpressionConfig", "main"]


@dataclass(frozen=True)
class ExpressionConfig:
    """The ``[expression]`` section of a study config."""

    input: str | None = field(default=None, metadata={"path": True})
    """Expression file: CSV/TSV/Parquet matrix, QTLtools/FastQTL BED or GEUVADIS RPKM."""
    format: Literal["auto", "matrix", "bed", "geuvadis_rpkm"] = "auto"
    """Layout of ``input``; ``auto`` guesses from the name and header line."""
    process: Literal["none", "geuvadis"] = "none"
    """``geuvadis``: the paper's RPKM → TPM → filter → ln → top-PC removal; ``none``: as read."""
    n_pcs: int = 10
    """Principal components removed by ``process = "geuvadis"`` (below min(genes, individuals))."""
    min_nonzero_fraction: float = 0.5
    """``geuvadis``: keep genes expressed (> 0) in more than this fraction of individuals."""
    pseudocount: float = 0.01
    """``geuvadis``: added to TPM before the natural log."""
    log1p: bool = False
    """``process = "none"`` only: store ln(1 + value), for RPKM-like inputs such as the demo."""

    def __post_init__(self) -> None:
        if self.input is None:
            raise ConfigError(
                "[expression] input is not set: give the expression file in the config or "
                "with --input"
            )
        if self.n_pcs < 0:
            raise ConfigError(f"[expression] n_pcs={self.n_pcs} must be >= 0")
        if not 0.0 <= self.min_nonzero_fraction < 1.0:
            raise ConfigError(
                f"[expression] min_nonzero_fraction={self.min_nonzero_fraction} must be in [0, 1)"
            )
        if self.pseudocount <= 0:
            raise ConfigError(f"[expression] pseudocount={self.pseudocount} must be > 0")
        if self.log1p and self.process == "geuvadis":
            raise ConfigError(
                '[expression] log1p = true conflicts with process = "geuvadis", which takes '
                "ln(TPM + pseudocount) itself; set log1p = false"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m prep.expression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="study TOML file; its [expression] section is read")
    parser.add_argument("--workdir", required=True, help="study working directory (DIR)")
    for f in dataclasses.fields(ExpressionConfig):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=None,
            metavar="VALUE",
            help=f"override [expression] {f.name}",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExpressionConfig)}
    try:
        config = load_config(ExpressionConfig, args.config, "expression", overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from prep.targets import ExpressionError, run_expression

    try:
        run_expression(config, args.workdir)
    except ExpressionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
