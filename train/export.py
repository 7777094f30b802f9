"""Exported models: a fine-tuned model as two self-contained files, and back.

::

    DIR/model.safetensors   the plain module's state dict (no ``module.`` / ``_orig_mod.``)
    DIR/model.json          format, hapflow version, window length, the [model] settings and
                            the trunk's hyper-parameters (``use_tf_gamma`` resolved)

``DIR`` is a run folder (``DIR/runs/RUN``, the best model at the end of training) or its
``best/`` folder. :func:`load_exported` rebuilds the model from model.json alone: the trunk's
original weights folder is not needed. Same model, same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from hapflow.config import config_to_dict
from hapflow.io import atomic_write_bytes, atomic_write_json
from hapflow.sections import ModelConfig
from train.model import JOINT_PREFIXES, ExpressionModel, assemble, unwrap
from train.weights import WeightsError, load_state_dict_strict, new_enformer, read_state_dict

__all__ = ["save_exported", "load_exported", "EXPORT_WEIGHTS", "EXPORT_META"]

EXPORT_WEIGHTS = "model.safetensors"
EXPORT_META = "model.json"
EXPORT_FORMAT = 1


def _hapflow_version() -> str:
    try:
        return version("hapflow")
    except PackageNotFoundError:
        return "unknown"


def save_exported(model: nn.Module, cfg: ModelConfig, length: int,
                  directory: str | os.PathLike) -> None:
    """Write a self-contained model: ``DIR/model.safetensors`` + ``DIR/model.json``, atomically.

    The weights are the plain module's state dict (no ``module.`` / ``_orig_mod.`` prefixes);
    model.json holds the ModelConfig, ``length``, the trunk hyper-parameters (``use_tf_gamma``
    resolved) and the hapflow version: all :func:`load_exported` needs, without the original
    weights folder. Same model, same bytes. The joint-training heads (Enformer output tracks,
    MPRA) are left out: an exported model predicts expression only.
    """
    plain = unwrap(model)
    if not isinstance(plain, ExpressionModel):
        raise TypeError(f"save_exported needs an ExpressionModel, got {type(plain).__name__}")
    if length != plain.length:
        raise ValueError(f"length {length} differs from the model's {plain.length}")
    # the joint-training heads (Enformer tracks, MPRA) are training-only: not exported
    state = {k: v.detach().cpu().contiguous() for k, v in plain.state_dict().items()
             if not k.startswith(JOINT_PREFIXES)}
    meta = {
        "format": EXPORT_FORMAT,
        "hapflow_version": _hapflow_version(),
        "length": length,
        "model": config_to_dict(cfg),
        "trunk": plain.trunk,
    }
    directory = Path(directory)
    atomic_write_bytes(directory / EXPORT_WEIGHTS, save(state, metadata={"format": "pt"}))
    atomic_write_json(directory / EXPORT_META, meta, indent=2, sort_keys=True)


def load_exported(directory: str | os.PathLike, device: str | torch.device = "cpu"
                  ) -> ExpressionModel:
    """Rebuild a model written by :func:`save_exported`, in eval mode, on ``device``.

    Raises
    ------
    WeightsError
        Missing or unreadable files, or weights that do not match model.json.
    """
    directory = Path(directory)
    cfg, length, hparams = _read_meta(directory)
    weights = directory / EXPORT_WEIGHTS
    state = read_state_dict(weights)
    if cfg.batchnorm == "sync" and not torch.cuda.is_available():
        cfg = dataclasses.replace(cfg, batchnorm="local")  # same tensors; inference only
    model = assemble(new_enformer(hparams), cfg, length, hparams)
    load_state_dict_strict(model, state, weights)
    return model.to(device).eval()


def _read_meta(directory: Path) -> tuple[ModelConfig, int, dict]:
    """model.json's ModelConfig, window length and trunk hyper-parameters."""
    meta_path = directory / EXPORT_META
    if not meta_path.is_file():
        raise WeightsError(f"{meta_path} is missing: {directory} is not an exported hapflow "
                           f"model (save_exported writes {EXPORT_META} + {EXPORT_WEIGHTS})")
    try:
        meta = json.loads(meta_path.read_text())
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(meta["model"]) - fields)
        if unknown:
            raise WeightsError(f"{meta_path}: unknown model settings {', '.join(unknown)}")
        # Rebuild from the trunk hyper-parameters alone: the original weights are not needed.
        return ModelConfig(**meta["model"]), int(meta["length"]), dict(meta["trunk"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"{meta_path} is not a valid hapflow model.json: {err}") from None
