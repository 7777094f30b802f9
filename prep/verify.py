"""Verify a study's shards: ``python -m prep.verify DIR/shards``.

Examples
--------
::

    python -m prep.verify work/demo/shards            # everything
    python -m prep.verify work/demo/shards --quick    # sha256 of files and the tables only
    python -m prep.verify --workdir work/demo --split train
    python -m prep.verify work/demo/shards --windows 100   # and 100 random windows rebuilt

Checks that the folder is of shard format 3 (a format-2 folder is refused: rebuild it with
``python -m prep.shard ... --overwrite``), ``meta.json`` and ``build.json``, the manifest against
them and ``targets.json``, every shard's size and sha256 and (unless ``--quick``) every gene
record of every shard against the manifest; with ``--windows N``, N random windows built from
the records against a plain numpy rebuild. Every problem is reported, each naming the file and
member (the checks: :mod:`prep.verification`). Exit status
0 when everything verifies, 1 when a problem was found, 2 on bad arguments. The loader runs the
same checks on request (``make_loader(..., verify=True)``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m prep.verify",
    summary="Verify a study's shards: file checksums against meta.json, the tables, and (unless "
            "--quick) every gene record of every shard against the manifest; --windows N "
            "rebuilds N windows. Exit status 0: all verified, 1: problems found (each named), "
            "2: bad arguments.",
    config="optional",
    workdir="study working directory (verifies DIR/shards)",
    workdir_required=False,
    options=(
        Option("shards", nargs="?", metavar="SHARDS_DIR",
               help="the shards folder (DIR/shards)"),
        Option("--split", repeat=True, choices=("train", "val", "test"),
               help="only this split (repeatable; default: every split)"),
        Option("--quick", switch=True,
               help="file checksums and tables only; do not decode the members"),
        Option("--windows", type=int, default=0, metavar="N",
               help="also build N random windows from the records and compare each with a "
                    "plain numpy rebuild (TSS placement, length, bases); default 0"),
    ),
    next_step="python -m train.run --config C --workdir DIR (or rebuild what failed: python -m "
              "prep.shard ... --overwrite)",
    doc=None,
)


def run(call: Call) -> int:
    # imported here so that --help stays instant
    from prep.verification import verify_shards

    args = call.args
    if bool(args.shards) == bool(call.workdir):
        raise ValueError("give the shards folder or --workdir DIR (one of them)")
    shards = Path(args.shards) if args.shards else call.workdir.shards
    if not shards.is_dir():
        raise FileNotFoundError(f"shards folder {shards} does not exist (run python -m "
                                "prep.shard first)")
    if args.windows < 0 or (args.windows and args.quick):
        raise ValueError("--windows N needs N >= 0 and the records decoded (not --quick)")
    report = verify_shards(shards, splits=args.split, deep=not args.quick, windows=args.windows)
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        return 1
    if not args.quiet:
        print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.verify``: see the module docstring."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
