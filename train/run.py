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

A resume needs the run's checkpoint and the settings it started with: changes to the schedule
([train] epochs, max_steps, lr, warmup_steps, min_lr_ratio, effective_batch), the data
([loader], the shards) or the model ([model]) are refused, each named;
``--allow-schedule-change`` continues with a changed schedule (the learning rate is recomputed
and the change logged). Rank 0's log lines go to ``DIR/runs/NAME/train.log`` as well.

Reads ``[model]``, ``[train]`` and ``[loader]``; ``--set section.key=value`` overrides any of
them. Writes ``DIR/runs/NAME/`` (see :mod:`train.loop`). Next: ``python -m train.predict``.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m train.run",
    summary="Fine-tune Enformer on personal genomes and expression (reads DIR/shards, writes "
            "DIR/runs/NAME). The same command runs under torchrun.",
    reads=("model", "train", "loader"),
    workdir="study folder (reads DIR/shards, writes DIR/runs/NAME)",
    options=(
        Option("--name", help="run name, the folder DIR/runs/NAME (default: the strategy)"),
        Option("--resume", switch=True, help="continue the run from its latest checkpoint "
               "(with the settings it started with)"),
        Option("--allow-schedule-change", switch=True,
               help="with --resume: continue with changed [train] epochs, max_steps, lr, "
                    "warmup_steps, min_lr_ratio or effective_batch (the learning-rate schedule "
                    "is recomputed and logged)"),
    ),
    next_step="python -m train.predict --config C --workdir DIR --run NAME --split test",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from train.loop import fine_tune

    args = call.args
    if args.allow_schedule_change and not args.resume:
        raise ValueError("--allow-schedule-change applies to --resume (a new run takes its "
                         "schedule from the settings)")
    fine_tune(call.study, call.workdir, args.name, args.resume, args.allow_schedule_change)


def main(argv: list[str] | None = None) -> int:
    """``python -m train.run``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
