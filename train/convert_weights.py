"""Convert an Enformer weights folder to safetensors: ``python -m train.convert_weights``.

Examples
--------
The official weights (downloaded once on a machine with internet)::

    huggingface-cli download EleutherAI/enformer-official-rough --local-dir weights/official
    python -m train.convert_weights weights/official weights/enformer

Reads ``SRC/config.json`` and ``SRC/pytorch_model.bin`` (with ``torch.load(weights_only=True)``:
tensors only, nothing executed) or ``SRC/model.safetensors``, checks the weights against the
config strictly, and writes ``OUT/model.safetensors`` (each tensor once) and ``OUT/config.json``
atomically, then reads them back and checks every tensor. Same input, same bytes. Point
``[model] weights`` at OUT with ``source = "pretrained"``.

With a study file, SRC may be left out: the study's ``[model] weights`` folder is converted::

    python -m train.convert_weights --config study.toml weights/enformer
"""

from __future__ import annotations

import logging
import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m train.convert_weights",
    summary="Convert Enformer weights (Hugging Face layout) to model.safetensors + config.json, "
            "and check the round trip tensor by tensor.",
    reads=("model",),
    keys=(Keys("model", only=("weights",),
               why="the conversion reads the weights folder; the architecture comes from its "
                   "config.json"),),
    config="optional",
    options=(
        Option("src", metavar="SRC_DIR", nargs="?",
               help="folder with config.json and pytorch_model.bin or model.safetensors "
                    "(default: the study's [model] weights)"),
        Option("out", metavar="OUT_DIR", help="folder to write (created if needed)"),
    ),
    next_step='point [model] weights at OUT_DIR with source = "pretrained"',
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from train.weights import convert_weights

    src = call.args.src or call.study.model.weights
    if src is None:
        raise ValueError("give SRC_DIR, or --config STUDY.toml whose [model] weights is the "
                         "folder to convert")
    summary = convert_weights(src, call.args.out)
    logging.info("wrote %s: %d tensors, %s parameters, from %s", summary["target"],
                 summary["tensors"], f"{summary['parameters']:,}", summary["source"])


def main(argv: list[str] | None = None) -> int:
    """``python -m train.convert_weights [SRC] OUT``: see the module docstring."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
