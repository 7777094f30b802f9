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
import logging
import os
import sys

SECTIONS = ("model", "train", "loader")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.run",
        description="Fine-tune Enformer on personal genomes and expression (reads DIR/shards, "
                    "writes DIR/runs/NAME). Next step: python -m train.predict.")
    p.add_argument("--config", required=True, help="study TOML with [model], [train], [loader]")
    p.add_argument("--workdir", required=True, help="study folder (reads DIR/shards)")
    p.add_argument("--name", help="run name (default: the strategy), the folder DIR/runs/NAME")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its latest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting, e.g. --set train.epochs=3 (sections: model, train, "
                        "loader)")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if args.quiet or rank != 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    from prep.config import ConfigError
    from prep.shard import split_overrides
    from prep.shard_format import ShardFormatError
    from train.loop import TrainError, fine_tune
    from train.weights import WeightsError

    try:
        overrides = split_overrides(args.set, SECTIONS)
        fine_tune(args.config, args.workdir, args.name, args.resume, overrides)
    except (ConfigError, TrainError, WeightsError, ShardFormatError, ValueError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
