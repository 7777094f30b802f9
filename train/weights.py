"""Enformer trunk weights: what a ``[model]`` section asks of the trunk, and the files on disk.

A weights directory in Hugging Face layout holds ``config.json`` (Enformer's hyper-parameters,
the fields of ``enformer_pytorch.EnformerConfig``) and the state dict as ``model.safetensors``
or ``pytorch_model.bin``. The official ``EleutherAI/enformer-official-rough`` ships only the
~1 GB pickle ``pytorch_model.bin``; it is read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers, never with plain unpickling.
``python -m train.convert_weights`` turns it into ``model.safetensors`` once
(:func:`convert_weights`).

enformer-pytorch registers the same modules twice (``stem.*`` is also ``_trunk.1.*``, and so on),
so its state dict names every tensor under two keys. Files may hold either or both names;
:func:`load_state_dict_strict` accepts any of them, and :func:`canonical_state_dict` writes each
tensor once (the short name), which safetensors requires.

enformer-pytorch's own ``from_pretrained`` is not used for local directories: it turns the
TensorFlow gamma positional features on only for the exact hub name. :func:`load_enformer`
builds the model from ``config.json`` with the caller's construction-time settings
(``target_length``, ``use_tf_gamma``, dropout rates) and loads the weights strictly.

The trunk of a ``[model]`` section, in the order :func:`train.model.build_model` asks for it:

1. :func:`trunk_folder` — where the weights are: none (random init), ``model.weights`` or the
   hub's snapshot;
2. :func:`random_hparams` or :func:`read_hf_config` — the architecture;
3. :func:`construction_settings` — ``target_length``, dropout rates and the TensorFlow gamma
   rule (:func:`resolve_tf_gamma`);
4. :func:`load_trunk` — a fresh Enformer, with the folder's weights loaded strictly.

This module knows nothing of the expression model built on the trunk (it never imports
:mod:`train.model`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from enformer_pytorch import Enformer
from enformer_pytorch.config_enformer import EnformerConfig
from enformer_pytorch.modeling_enformer import TF_GAMMAS
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from hapflow.io import atomic_write_bytes, atomic_write_json
from hapflow.sections import ConfigError, ModelConfig

__all__ = [
    "WeightsError",
    "ENFORMER_HPARAMS",
    "SAFETENSORS_NAME",
    "BIN_NAME",
    "CONFIG_NAME",
    "TF_GAMMA_LENGTH",
    "trunk_folder",
    "random_hparams",
    "construction_settings",
    "resolve_tf_gamma",
    "load_trunk",
    "enformer_hparams",
    "new_enformer",
    "read_hf_config",
    "find_weights_file",
    "read_state_dict",
    "canonical_state_dict",
    "load_state_dict_strict",
    "load_enformer",
    "download_hub",
    "save_hf_directory",
    "convert_weights",
]

SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"

TF_GAMMA_LENGTH = 196_608
"""enformer-pytorch's precomputed TensorFlow gamma features exist for 1,536 bins of 128 bp only."""

# The construction hyper-parameters of enformer_pytorch.EnformerConfig, with the full model's
# values. Everything else in a Hugging Face config.json (transformers bookkeeping) is ignored.
ENFORMER_HPARAMS: dict[str, Any] = {
    "dim": 1536,
    "depth": 11,
    "heads": 8,
    "output_heads": {"human": 5313, "mouse": 1643},
    "target_length": 896,
    "attn_dim_key": 64,
    "dropout_rate": 0.4,
    "attn_dropout": 0.05,
    "pos_dropout": 0.01,
    "use_checkpointing": False,
    "use_convnext": False,
    "num_downsamples": 7,
    "dim_divisible_by": 128,
    "use_tf_gamma": False,
}

# The settings a caller may change at construction; the architecture comes from config.json.
CONSTRUCTION_SETTINGS = ("target_length", "use_tf_gamma", "dropout_rate", "attn_dropout",
                         "pos_dropout")


class WeightsError(ConfigError):
    """A weights directory or file is missing or unusable; the message names the file."""


# -- the trunk a [model] section asks for ------------------------------------------------------

def trunk_folder(cfg: ModelConfig) -> Path | None:
    """The Hugging Face layout folder of the trunk's weights; None for a random trunk.

    ``source = "pretrained"``: ``cfg.weights``; ``"hub"``: the hub's snapshot of ``cfg.hub_id``
    (downloaded, or found in the local Hugging Face cache).

    Raises
    ------
    WeightsError
        The hub cannot be reached and nothing is cached (see :func:`download_hub`).
    """
    if cfg.source == "random":
        return None
    if cfg.source == "hub":
        return download_hub(cfg.hub_id)
    return Path(cfg.weights)


def random_hparams(cfg: ModelConfig, length: int) -> dict[str, Any]:
    """Enformer hyper-parameters of a random trunk from ``cfg`` (target_length = L // bin)."""
    return enformer_hparams({
        "dim": cfg.dim,
        "depth": cfg.depth,
        "heads": cfg.heads,
        "attn_dim_key": cfg.attn_dim_key,
        "num_downsamples": cfg.num_downsamples,
        "dim_divisible_by": cfg.dim_divisible_by,
        "output_heads": {"human": cfg.output_heads_human},
        "target_length": length // 2 ** cfg.num_downsamples,
        "dropout_rate": cfg.dropout_rate,
        "attn_dropout": cfg.attn_dropout,
        "pos_dropout": cfg.pos_dropout,
        "use_tf_gamma": False,
    })


def resolve_tf_gamma(cfg: ModelConfig, length: int, hparams: dict[str, Any]) -> bool:
    """Whether the trunk uses TensorFlow gamma positional features.

    ``cfg.use_tf_gamma = None``: on only for pretrained weights (local or hub) at
    :data:`TF_GAMMA_LENGTH` bp with a trunk that fits the precomputed features.

    Raises
    ------
    ConfigError
        ``use_tf_gamma = true`` for a trunk the precomputed features do not fit.
    """
    bins = length // 2 ** hparams["num_downsamples"]
    fits = bins == 1536 and hparams["dim"] // hparams["heads"] == 6 * TF_GAMMAS.shape[-1]
    if cfg.use_tf_gamma is None:
        return cfg.source != "random" and length == TF_GAMMA_LENGTH and fits
    if cfg.use_tf_gamma and not fits:
        raise ConfigError(
            f"model.use_tf_gamma = true needs 1,536 trunk bins ({TF_GAMMA_LENGTH:,} bp at 128 bp "
            f"per bin) and dim // heads = {6 * TF_GAMMAS.shape[-1]}; this model has {bins:,} "
            f"bins of a {length:,} bp window. Set it false (the paper's 49,152 bp runs did)"
        )
    return cfg.use_tf_gamma


def construction_settings(cfg: ModelConfig, length: int, hparams: dict[str, Any]
                          ) -> dict[str, Any]:
    """What ``cfg`` sets at construction, whatever the weights: every 128 bp bin of the
    ``length`` bp window kept (``target_length``), the TensorFlow gamma rule, dropout rates."""
    return {
        "target_length": length // 2 ** hparams["num_downsamples"],
        "use_tf_gamma": resolve_tf_gamma(cfg, length, hparams),
        "dropout_rate": cfg.dropout_rate,
        "attn_dropout": cfg.attn_dropout,
        "pos_dropout": cfg.pos_dropout,
    }


def load_trunk(hparams: dict[str, Any], folder: str | os.PathLike | None) -> nn.Module:
    """A fresh Enformer of ``hparams``; with ``folder``, its weights loaded strictly.

    Random initialisation draws from the global torch RNG (deterministic given
    ``torch.manual_seed``).

    Raises
    ------
    WeightsError
        No weights file in ``folder``; a refused or corrupt file; keys or shapes that do not
        match ``hparams``.
    """
    if folder is None:
        return new_enformer(hparams)
    weights = find_weights_file(folder)
    state = read_state_dict(weights)
    model = new_enformer(hparams)
    load_state_dict_strict(model, state, weights)
    return model


# -- Hugging Face layout folders ------------------------------------------------------------------

def enformer_hparams(raw: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """The Enformer hyper-parameters in ``raw`` (a config.json dict), defaults filled in.

    Raises
    ------
    WeightsError
        A hyper-parameter has the wrong type (``where`` names the file in the message).
    """
    out = dict(ENFORMER_HPARAMS)
    for key in ENFORMER_HPARAMS:
        if key in raw:
            out[key] = raw[key]
    for key in ("dim", "depth", "heads", "target_length", "attn_dim_key", "num_downsamples",
                "dim_divisible_by"):
        if not isinstance(out[key], int) or isinstance(out[key], bool):
            raise WeightsError(f"{where}: {key} = {out[key]!r} is not an integer")
    heads = out["output_heads"]
    if not isinstance(heads, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in heads.items()
    ):
        raise WeightsError(f"{where}: output_heads = {heads!r} is not a {{name: n_tracks}} table")
    out["output_heads"] = dict(heads)
    return out


def new_enformer(hparams: dict[str, Any]) -> nn.Module:
    """A freshly initialised ``enformer_pytorch.Enformer`` from :func:`enformer_hparams` values.

    Uses the global torch RNG: deterministic given ``torch.manual_seed``.
    """
    return Enformer(EnformerConfig(**hparams))


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``DIR/config.json`` into :func:`enformer_hparams` form.

    Raises
    ------
    WeightsError
        The directory or its config.json is missing, or config.json is not valid JSON.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(
            f"weights directory {directory} does not exist; set model.weights to a folder in "
            f"Hugging Face layout ({CONFIG_NAME} + {SAFETENSORS_NAME} or {BIN_NAME})"
        )
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(
            f"{path} is missing: a weights folder needs {CONFIG_NAME} (Enformer's "
            f"hyper-parameters) next to {SAFETENSORS_NAME} or {BIN_NAME}"
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: expected a JSON object of hyper-parameters")
    return enformer_hparams(raw, str(path))


def find_weights_file(directory: str | os.PathLike) -> Path:
    """``DIR/model.safetensors`` if present, else ``DIR/pytorch_model.bin``.

    Raises
    ------
    WeightsError
        Neither file exists.
    """
    directory = Path(directory)
    for name in (SAFETENSORS_NAME, BIN_NAME):
        if (directory / name).is_file():
            return directory / name
    raise WeightsError(f"{directory} holds neither {SAFETENSORS_NAME} nor {BIN_NAME}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (``.bin``/``.pt``), on the CPU.

    Pickles are read with ``torch.load(weights_only=True)``: tensors and plain containers only,
    so a file carrying code or arbitrary objects is refused, never executed.

    Returns
    -------
    dict of str to torch.Tensor
        Parameter and buffer names to tensors, as stored.

    Raises
    ------
    WeightsError
        The file is missing, corrupt, refused by ``weights_only`` or not a flat
        ``{name: tensor}`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WeightsError(
                f"{path} was refused by torch.load(weights_only=True): it holds objects other "
                f"than tensors ({first}). Only plain state dicts are loaded; if you trust the "
                f"file, re-save its state dict with torch.save(model.state_dict(), ...)"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise WeightsError(f"{path} is not a readable torch file: {err}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        raise WeightsError(
            f"{path} is a training checkpoint ({{'state_dict': ...}}), not a plain state dict; "
            f"save checkpoint['state_dict'] (without any 'model.' prefix) instead"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise WeightsError(
            f"{path}: {len(bad)} entries are not tensors (first: {bad[0]!r}); expected a flat "
            f"{{name: tensor}} state dict"
        )
    return state


def _alias_groups(module: nn.Module) -> list[list[str]]:
    """Keys of ``module.state_dict()`` grouped by the tensor they name, short names first."""
    groups: dict[int, list[str]] = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return [sorted(keys, key=lambda k: (k.startswith("_trunk."), keys.index(k)))
            for keys in groups.values()]


def canonical_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with each tensor once (aliases dropped), detached, on the CPU.

    For an Enformer, ``stem.*``, ``conv_tower.*``, ``transformer.*`` and ``final_pointwise.*``
    are kept and their ``_trunk.*`` aliases dropped. Tensors are made contiguous (safetensors
    needs it).
    """
    state = module.state_dict()
    return {keys[0]: state[keys[0]].detach().cpu().contiguous()
            for keys in _alias_groups(module)}


def load_state_dict_strict(
    module: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike
) -> None:
    """Load ``state`` into ``module`` strictly, accepting any alias of a shared tensor.

    Every tensor of ``module`` must be in ``state`` under one of its names, with the same
    shape, and ``state`` must hold nothing else.

    Raises
    ------
    WeightsError
        Lists the missing, unexpected and mis-shaped keys, naming ``source``.
    """
    full: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    shapes: list[str] = []
    own = module.state_dict()
    for keys in _alias_groups(module):
        present = [k for k in keys if k in state]
        if not present:
            missing.append(keys[0])
            continue
        used.update(present)
        tensor = state[present[0]]
        if tuple(tensor.shape) != tuple(own[keys[0]].shape):
            shapes.append(f"{present[0]}: file {tuple(tensor.shape)}, model "
                          f"{tuple(own[keys[0]].shape)}")
        for k in keys:
            full[k] = tensor
    unexpected = sorted(set(state) - used)
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)"
                                                 if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(
            f"{source} does not match the model built from its config: " + "; ".join(parts)
            + ". Check that config.json belongs to these weights."
        )
    module.load_state_dict(full, strict=True)


def load_enformer(directory: str | os.PathLike, **settings: Any) -> nn.Module:
    """Build an Enformer from ``DIR/config.json`` and load ``DIR``'s weights strictly.

    Parameters
    ----------
    directory : str or Path
        Hugging Face layout folder: config.json + model.safetensors or pytorch_model.bin.
    **settings
        Construction-time values that override config.json: ``target_length``,
        ``use_tf_gamma``, ``dropout_rate``, ``attn_dropout``, ``pos_dropout``. The
        architecture (dim, depth, heads, output heads, ...) always comes from config.json.

    Returns
    -------
    enformer_pytorch.Enformer
        On the CPU, in training mode, as enformer-pytorch builds it.

    Raises
    ------
    WeightsError
        Missing directory, config.json or weights file; a refused or corrupt file; keys or
        shapes that do not match the config.
    """
    unknown = sorted(set(settings) - set(CONSTRUCTION_SETTINGS))
    if unknown:
        raise TypeError(f"load_enformer: cannot override {', '.join(unknown)}")
    hparams = read_hf_config(directory)
    hparams.update(settings)
    return load_trunk(hparams, directory)


def download_hub(hub_id: str) -> Path:
    """Fetch (or find in the local Hugging Face cache) ``hub_id``'s config and weights.

    Returns
    -------
    Path
        The snapshot folder, in Hugging Face layout (feed it to :func:`load_enformer`).

    Raises
    ------
    WeightsError
        The hub cannot be reached and the files are not cached (offline machines): the message
        says how to download them elsewhere and point ``model.weights`` at the folder.
    """
    try:
        path = snapshot_download(
            hub_id, allow_patterns=[CONFIG_NAME, SAFETENSORS_NAME, BIN_NAME]
        )
    except Exception as err:  # huggingface_hub raises many types when offline
        raise WeightsError(
            f"could not fetch {hub_id!r} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). On a machine with internet run "
            f"`huggingface-cli download {hub_id} --local-dir DIR` (then optionally "
            f"`python -m train.convert_weights DIR DIR_ST`), copy the folder here and set "
            f'model.source = "pretrained" and model.weights = "DIR"'
        ) from None
    return Path(path)


def save_hf_directory(
    model: nn.Module, hparams: dict[str, Any], directory: str | os.PathLike,
    fmt: str = "safetensors",
) -> Path:
    """Write ``model``'s weights and ``hparams`` as a Hugging Face layout folder, atomically.

    Parameters
    ----------
    model : enformer_pytorch.Enformer
        The model whose :func:`canonical_state_dict` is written.
    hparams : dict
        :func:`enformer_hparams` values, written as ``config.json`` (sorted keys, plus
        ``model_type = "enformer"`` so that ``Enformer.from_pretrained(DIR)`` reads it too).
    directory : str or Path
        Created if needed.
    fmt : {"safetensors", "bin"}
        ``model.safetensors`` or ``pytorch_model.bin`` (``torch.save`` of the state dict).

    Returns
    -------
    Path
        The weights file written. Same model, same bytes.
    """
    directory = Path(directory)
    state = canonical_state_dict(model)
    if fmt == "safetensors":
        target = directory / SAFETENSORS_NAME
        atomic_write_bytes(target, save(state, metadata={"format": "pt"}))
    elif fmt == "bin":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        target = directory / BIN_NAME
        atomic_write_bytes(target, buffer.getvalue())
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'bin', not {fmt!r}")
    config = {**enformer_hparams(hparams), "model_type": "enformer",
              "architectures": ["Enformer"]}
    atomic_write_json(directory / CONFIG_NAME, config, indent=2, sort_keys=True)
    return target


def convert_weights(src: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Convert the Hugging Face layout folder ``src`` to ``out`` (``model.safetensors``, each
    tensor once, + ``config.json``) and check the round trip tensor by tensor.

    Returns
    -------
    dict: ``source`` and ``target`` (the weights files), ``tensors``, ``parameters``.

    Raises
    ------
    WeightsError
        Unusable input, or an output that does not read back identically.
    """
    hparams = read_hf_config(src)
    source = find_weights_file(src)
    model = load_enformer(src)
    target = save_hf_directory(model, hparams, out, fmt="safetensors")
    expected = canonical_state_dict(model)
    written = read_state_dict(target)
    bad = [k for k in expected if k not in written or not torch.equal(expected[k], written[k])]
    if bad or set(written) != set(expected):
        raise WeightsError(f"{target} does not read back as written ({len(bad)} tensors differ)")
    return {"source": str(source), "target": str(target), "tensors": len(expected),
            "parameters": sum(t.numel() for t in expected.values())}
