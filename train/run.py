"""Fine-tune Enformer on a study's shards: ``python -m train.run`` / ``torchrun -m train.run``.

Examples
--------
The demo (a tiny model on CPU, after prep.expression and prep.shard)::

    python -m train.run --config configs/demo.toml --workdir work/demo

Eight GPUs of one node, then four nodes (SLURM: see the README's full-scale section)::

    torchrun --nproc-per-node 8 -m train.run --config configs/geuvadis.toml --workdir /scratch/g
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m train.run --config configs/geuvadis.toml --workdir /scratch/g --name pairwise

Continue after an interruption (same command plus ``--resume``)::

    python -m train.run --config configs/demo.toml --workdir work/demo --resume

Reads ``[model]``, ``[train]`` and ``[loader]``; ``--set section.key=value`` overrides any of
them. Writes ``DIR/runs/NAME/`` (see :mod:`train.loop`). Next: ``python -m train.predict``.
"""

from __future__ import annotations

import argparse
import os
import sys

SECTIONS = ("model", "train", "loader")


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m train.run",
                    "Fine-tune Enformer on personal genomes and expression (reads DIR/shards, "
                    "writes DIR/runs/NAME). The same command runs under torchrun.",
                    next_step="python -m train.predict --config C --workdir DIR --run NAME "
                              "--split test")
    add_common_arguments(p, SECTIONS, workdir_help="study folder (reads DIR/shards, writes "
                         "DIR/runs/NAME)")
    p.add_argument("--name", help="run name, the folder DIR/runs/NAME (default: the strategy)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its latest checkpoint")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet, fmt="%(asctime)s %(levelname)s %(message)s",
                  rank=int(os.environ.get("RANK", "0")), datefmt="%H:%M:%S")
    from hapflow.config import split_overrides
    from train.loop import fine_tune

    overrides = split_overrides(args.set, SECTIONS)
    fine_tune(args.config, args.workdir, args.name, args.resume, overrides)
    return 0


def main(argv=None) -> int:
    """``python -m train.run``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
