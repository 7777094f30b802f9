"""The expression model: an Enformer trunk and a per-gene regression head on the TSS bins.

``build_model(cfg, L)`` returns an :class:`ExpressionModel` whose ``forward(x, tss_index)``
maps diploid one-hot windows to one expression value per individual:

* **trunk** — Enformer (enformer-pytorch), random, from a local Hugging Face layout folder
  (:mod:`train.weights`) or from the hub. ``target_length`` is fixed at construction to
  ``L // 128``: every 128 bp bin of the window is kept, none is cropped.
* **head** — ``attention_pool`` (the paper's): the trunk embeddings (``2 * dim`` features) of
  ``n_bins`` bins around the bin holding the TSS, attention-pooled (a learned logit per bin,
  softmax, weighted sum) and mapped to one value by a linear layer. ``track``: the pretrained
  human output head's track ``track`` (5110, CAGE GM12878), summed over the same bins.
* **haplotypes** — ``average`` runs each haplotype through the model (folded into the batch)
  and averages the two predictions (the paper); ``mean_onehot`` feeds the mean of the two
  one-hot encodings once (half the compute; heterozygous sites become 0.5/0.5).

The TSS bin comes from ``tss_index`` (per sample: shift and reverse-complement augmentation move
it), never from ``L // 2``. The window of bins is ``tss_bin - n_bins // 2 ...
tss_bin + (n_bins - 1) // 2`` (with 10 bins: ``tss_bin - 5 .. tss_bin + 4``, as the paper's
centre bins ``n/2 - 5 .. n/2 + 4`` for a TSS at ``L // 2``), moved inwards whole when it would
run past either end of the window. Gathering uses tensor index ops only, so ``forward`` compiles
with ``torch.compile(fullgraph=True)``.

Joint training (issue 16) adds, only when its loss terms are configured:

* **Enformer output heads** (``track_heads``: ``human`` and/or ``mouse``, linear + softplus,
  the trunk's own heads when pretrained): ``forward(..., tracks={organism: x})`` maps 196,608
  bp one-hot records to (B, 896, tracks), the centre 896 of the 1,536 bins (Enformer's crop).
  The trunk's ``target_length`` (L // 128, the personal window) plays no part: the embeddings
  are cropped here. TensorFlow gamma positional features are switched on for that forward
  when the weights need them at its length (:func:`train.weights.resolve_tf_gamma`), whatever
  the personal window's setting.
* **MPRA head** (:class:`MpraHead`): ``Linear(2 * dim, n_cell_types)`` on the mean trunk
  embedding of the bins the oligo covers; the oligo (width W, centred in W with N) is centred
  in the model's L bp input with N (all-zero one-hot) around it. The predicted effect is
  ``head(alt) − head(ref)`` (alt − ref, the data's sign).

:meth:`ExpressionModel.forward` runs every input of a micro-step in one call (sequences of
the same length in one trunk forward), so DDP sees one forward per backward. These heads are
training-only: exported models (:mod:`train.export`) leave them out.

Exported models (``model.safetensors`` + ``model.json``) are written and read by
:mod:`train.export`; weight files of the trunk are :mod:`train.weights`.

Example::

    from hapflow.sections import ModelConfig
    from train.model import build_model
    model = build_model(ModelConfig(source="pretrained", weights="weights/enformer"), 49_152)
    y = model(x, tss_index)        # x: (B, 2, 49152, 4), tss_index: (B,) -> y: (B,)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hapflow.sections import ConfigError, ModelConfig
from train.weights import (
    construction_settings,
    load_trunk,
    random_hparams,
    read_hf_config,
    resolve_tf_gamma,
    trunk_folder,
)

__all__ = [
    "ExpressionModel",
    "MpraHead",
    "JOINT_PREFIXES",
    "FrozenBatchNorm1d",
    "build_model",
    "apply_batchnorm_policy",
    "apply_freeze",
    "assemble",
    "unwrap",
]


class FrozenBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that stays in eval mode (running statistics) whatever ``train()`` says.

    Same parameters and buffers as :class:`torch.nn.BatchNorm1d`, so state dicts load either
    way. Its weight and bias are set ``requires_grad = False`` by :func:`apply_batchnorm_policy`.
    """

    def train(self, mode: bool = True) -> FrozenBatchNorm1d:
        return super().train(False)


class AttentionPoolHead(nn.Module):
    """Attention pooling over bins, then a linear map to one value.

    ``(N, n_bins, C) -> (N,)``: a learned logit per bin from its embedding, softmax over bins,
    the weighted sum of embeddings, then ``Linear(C, 1)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Linear(channels, 1)
        self.output = nn.Linear(channels, 1)

    def forward(self, bins: Tensor) -> Tensor:
        weights = self.attention(bins).softmax(dim=1)  # (N, n_bins, 1)
        pooled = (weights * bins).sum(dim=1)  # (N, C)
        return self.output(pooled).squeeze(-1)  # (N,)


class TrackHead(nn.Module):
    """One track of Enformer's output head (linear + softplus), summed over bins.

    ``(N, n_bins, C) -> (N,)``. Initialised from row ``track`` of a pretrained head.
    """

    def __init__(self, linear: nn.Linear, track: int):
        super().__init__()
        self.output = nn.Linear(linear.in_features, 1)
        with torch.no_grad():
            self.output.weight.copy_(linear.weight[track : track + 1])
            self.output.bias.copy_(linear.bias[track : track + 1])

    def forward(self, bins: Tensor) -> Tensor:
        return F.softplus(self.output(bins)).squeeze(-1).sum(dim=1)  # (N,)


class MpraHead(nn.Module):
    """MPRA activity per cell type from the trunk embeddings of an oligo's bins.

    ``(N, T, C) -> (N, n_cell_types)``: the mean embedding of bins ``first .. last``
    (inclusive, the bins overlapping the oligo's W bp centred in the L bp input), then
    ``Linear(C, n_cell_types)``.
    """

    def __init__(self, channels: int, n_cell_types: int, length: int, width: int,
                 bin_size: int):
        super().__init__()
        self.output = nn.Linear(channels, n_cell_types)
        lo = (length - width) // 2
        self.first, self.last = lo // bin_size, (lo + width - 1) // bin_size

    def forward(self, emb: Tensor) -> Tensor:
        return self.output(emb[:, self.first:self.last + 1].mean(dim=1))


ENFORMER_BINS = 896
"""Bins of Enformer's output (the centre 896 of a 196,608 bp input's 1,536)."""

JOINT_PREFIXES = ("track_heads.", "mpra_head.")
"""State-dict prefixes of the training-only joint heads (left out of exported models)."""


class ExpressionModel(nn.Module):
    """Enformer trunk + expression head; see the module docstring.

    Attributes
    ----------
    config : ModelConfig
        The configuration it was built from (``use_tf_gamma`` as given, see ``trunk``).
    length : int
        L, the input window in bp.
    bin_size : int
        bp per trunk output bin (128 for the full Enformer).
    n_total_bins : int
        ``L // bin_size``, bins of :meth:`embeddings`.
    trunk : dict
        The Enformer hyper-parameters it was built with (``use_tf_gamma`` resolved).
    """

    def __init__(self, enformer: nn.Module, config: ModelConfig, length: int,
                 hparams: dict[str, Any], organisms: tuple[str, ...] = (),
                 mpra: tuple[int, int] | None = None):
        super().__init__()
        self.config = config
        self.length = length
        self.trunk = dict(hparams)
        self.bin_size = 2 ** hparams["num_downsamples"]
        self.n_total_bins = length // self.bin_size
        channels = 2 * hparams["dim"]
        # The trunk's parts, each registered once (Enformer registers them twice, which
        # doubles state-dict keys); the output heads stay behind unless head = "track".
        self.stem = enformer.stem
        self.conv_tower = enformer.conv_tower
        self.transformer = enformer.transformer
        self.final_pointwise = enformer.final_pointwise
        if config.head == "attention_pool":
            self.head = AttentionPoolHead(channels)
        else:
            self.head = TrackHead(enformer.heads["human"][0], config.track)
        # joint training: Enformer's own heads and the MPRA head, only when asked for
        self.track_heads = nn.ModuleDict({o: enformer.heads[o] for o in organisms})
        self.mpra_head = (MpraHead(channels, mpra[0], length, mpra[1], self.bin_size)
                          if mpra else None)

    def embeddings(self, x1: Tensor) -> Tensor:
        """Trunk embeddings of single sequences.

        Parameters
        ----------
        x1 : Tensor, shape=(N, L, 4)
            One-hot (A, C, G, T; N all zeros), any float dtype, on the model's device.

        Returns
        -------
        Tensor, shape=(N, L // bin_size, 2 * dim)
            Bin ``j`` covers window bases ``[j * bin_size, (j + 1) * bin_size)`` (0-based).
        """
        h = x1.to(self.stem[0].weight.dtype).transpose(1, 2)  # (N, 4, L)
        h = self.stem(h)  # (N, dim / 2, L / 2)
        h = self.conv_tower(h)  # (N, dim, L / bin_size)
        h = h.transpose(1, 2)  # (N, T, dim)
        if self.config.checkpointing and self.training:
            for block in self.transformer:
                h = checkpoint(block, h, use_reentrant=False)
        else:
            h = self.transformer(h)
        return self.final_pointwise(h)  # (N, T, 2 * dim)

    def tss_bins(self, emb: Tensor, tss_index: Tensor) -> Tensor:
        """The ``n_bins`` embeddings around each sequence's TSS bin.

        Parameters
        ----------
        emb : Tensor, shape=(N, T, C)
            :meth:`embeddings` output.
        tss_index : Tensor, shape=(N,), int64
            0-based index of the TSS base in the L bp window.

        Returns
        -------
        Tensor, shape=(N, n_bins, C)
            Bins ``tss_bin - n_bins // 2 ...`` (contiguous), shifted inwards at the window ends.
        """
        n_bins = self.config.n_bins
        start = tss_index.to(torch.long) // self.bin_size - n_bins // 2  # (N,)
        start = start.clamp(0, self.n_total_bins - n_bins)
        index = start[:, None] + torch.arange(n_bins, device=emb.device)  # (N, n_bins)
        index = index[:, :, None].expand(-1, -1, emb.shape[-1])  # (N, n_bins, C)
        return torch.gather(emb, 1, index)

    def _tf_gamma(self, length: int) -> bool:
        """Whether the trunk needs TF gamma features for ``length`` bp inputs."""
        if length == self.length:
            return bool(self.trunk.get("use_tf_gamma"))
        if self.config.use_tf_gamma is False:
            return False
        # None or true: on where pretrained weights need it (196,608 bp and a trunk that fits)
        return resolve_tf_gamma(dataclasses.replace(self.config, use_tf_gamma=None), length,
                                self.trunk)

    def _embed(self, seqs: Tensor) -> Tensor:
        """:meth:`embeddings` with the TF gamma setting of ``seqs``' length."""
        want = self._tf_gamma(seqs.shape[1])
        layers = [m for m in self.transformer.modules() if hasattr(m, "use_tf_gamma")]
        before = [m.use_tf_gamma for m in layers]
        for m in layers:
            m.use_tf_gamma = want
        try:
            return self.embeddings(seqs)
        finally:
            for m, b in zip(layers, before, strict=True):
                m.use_tf_gamma = b

    def _crop(self, emb: Tensor, bins: int) -> Tensor:
        extra = emb.shape[1] - bins
        if extra < 0 or extra % 2:
            raise ValueError(f"{emb.shape[1]} trunk bins cannot be cropped to the targets' "
                             f"{bins} centre bins")
        return emb[:, extra // 2: emb.shape[1] - extra // 2]

    def forward(self, x: Tensor | None, tss_index: Tensor | None,
                tracks: dict[str, Tensor] | None = None, mpra: Tensor | None = None):
        """Predict expression; with joint inputs, every output of a micro-step in one call.

        Parameters
        ----------
        x : (B, 2, L, 4) float one-hot of the two haplotypes, or None (joint inputs only)
        tss_index : (B,) int64 TSS index per window, or None with ``x``
        tracks : {organism: (N, 196608, 4) one-hot records}, optional
        mpra : (M, 2, L, 4) one-hot of each pair's ref and alt oligo centred in L, optional

        Returns
        -------
        Without joint inputs, (B,) float32 (as :meth:`expression`). With them, a dict:
        ``pred`` (B,) or None, ``tracks`` {organism: (N, 896, tracks)}, ``effect`` (M, C)
        float32 = head(alt) − head(ref) or None, ``anchor`` (0 times every head parameter the
        call did not use: added to the loss, it gives DDP a gradient for each).
        """
        if tracks is None and mpra is None:
            return self.expression(x, tss_index)
        tracks = tracks or {}
        groups: dict[int, list[Tensor]] = {}
        parts = []  # (name, length, position in group, rows)
        personal = None
        if x is not None:
            personal = x.flatten(0, 1) if self.config.haplotypes == "average" else x.mean(1)
            parts.append(("x", personal))
        if mpra is not None:
            parts.append(("mpra", mpra.flatten(0, 1)))  # ref, alt of pair 0, then pair 1 ...
        parts += [(f"tracks:{o}", t) for o, t in tracks.items()]
        where = {}
        for name, seqs in parts:
            group = groups.setdefault(seqs.shape[1], [])
            where[name] = (seqs.shape[1], sum(g.shape[0] for g in group), seqs.shape[0])
            group.append(seqs)
        emb = {n: self._embed(torch.cat(g) if len(g) > 1 else g[0]) for n, g in groups.items()}
        out = {"pred": None, "tracks": {}, "effect": None}
        used = []

        def take(name: str) -> Tensor:
            n, start, rows = where[name]
            return emb[n][start:start + rows]

        if x is not None:
            out["pred"] = self._head(take("x"), tss_index, x.shape[0])
            used.append(self.head)
        if mpra is not None:
            act = self.mpra_head(take("mpra")).float().reshape(mpra.shape[0], 2, -1)
            out["effect"] = act[:, 1] - act[:, 0]  # alt − ref
            used.append(self.mpra_head)
        for o in tracks:
            out["tracks"][o] = self.track_heads[o](self._crop(take(f"tracks:{o}"),
                                                              ENFORMER_BINS)).float()
            used.append(self.track_heads[o])
        out["anchor"] = self._anchor(used)
        return out

    def _anchor(self, used: list[nn.Module]) -> Tensor:
        """0 x the sum of the trainable head parameters of heads not in ``used``."""
        heads = [self.head, *self.track_heads.values()]
        if self.mpra_head is not None:
            heads.append(self.mpra_head)
        ids = {id(m) for m in used}
        zero = self.stem[0].weight.new_zeros(())
        for h in heads:
            if id(h) not in ids:
                for p in h.parameters():
                    if p.requires_grad:
                        zero = zero + 0.0 * p.sum()
        return zero

    def _head(self, emb: Tensor, tss_index: Tensor, B: int) -> Tensor:
        """The expression head on the personal embeddings (N = B * 2 or B, T, C) -> (B,)."""
        tss = tss_index.repeat_interleave(2) if self.config.haplotypes == "average" else tss_index
        y = self.head(self.tss_bins(emb, tss))
        if self.config.haplotypes == "average":
            y = y.reshape(B, 2).mean(dim=1)
        return y.float()

    def expression(self, x: Tensor, tss_index: Tensor) -> Tensor:
        """Predict expression for diploid windows.

        Parameters
        ----------
        x : Tensor, shape=(B, 2, L, 4)
            Float one-hot of haplotype 1 and 2 (A, C, G, T; N all zeros), on the device.
        tss_index : Tensor, shape=(B,), int64
            0-based TSS index in the window, per sample (both haplotypes share it).

        Returns
        -------
        Tensor, shape=(B,), float32
        """
        # average: (B * 2, L, 4), the haplotypes folded into the batch; mean_onehot: (B, L, 4)
        seqs = x.flatten(0, 1) if self.config.haplotypes == "average" else x.mean(dim=1)
        return self._head(self.embeddings(seqs), tss_index, x.shape[0])


def build_model(cfg: ModelConfig, length: int, organisms: tuple[str, ...] = (),
                mpra: tuple[int, int] | None = None) -> ExpressionModel:
    """Build the expression model for ``length``-bp windows.

    The steps, in order: find the trunk's weights (none, a local folder or the hub), read its
    architecture, check that the window and head fit it, fix the construction-time settings
    (``target_length = length // bin_size``, the TensorFlow gamma rule, dropout rates), build
    the trunk (random, or with the folder's weights loaded strictly), add the head, then apply
    ``cfg.batchnorm`` and ``cfg.freeze``. Everything about weight files is
    :mod:`train.weights`. Deterministic given ``torch.manual_seed``. Works with or without an
    initialised ``torch.distributed`` process group (the batch-norm class is always set by
    ``cfg.batchnorm``, never by enformer-pytorch's guess).

    Parameters
    ----------
    cfg : ModelConfig
    length : int
        L, the input window the loader yields (a multiple of the bin size, 128).
    organisms : the Enformer output heads to keep for joint training ("human", "mouse")
    mpra : (n_cell_types, oligo width W) of an MPRA head for joint training, or None

    Raises
    ------
    ConfigError
        A window that does not fit, a track outside the human head, sync batch norm without
        GPUs, TF gammas that do not fit; :class:`train.weights.WeightsError` (a ConfigError)
        for unusable weights.
    """
    folder = trunk_folder(cfg)  # None: random init
    hparams = random_hparams(cfg, length) if folder is None else read_hf_config(folder)
    _check_window(cfg, length, hparams)
    if cfg.batchnorm == "sync":
        _require_sync_batchnorm()
    hparams.update(construction_settings(cfg, length, hparams))
    _check_track(cfg, hparams)
    if folder is None and "mouse" in organisms:  # random trunks get a mouse head on demand
        hparams["output_heads"] = {**hparams["output_heads"], "mouse": cfg.output_heads_mouse}
    missing = [o for o in organisms if o not in hparams["output_heads"]]
    if missing:
        raise ConfigError(f"the trunk has no {', '.join(missing)} output head for the "
                          f"enformer_{missing[0]} loss term (heads: "
                          f"{', '.join(hparams['output_heads'])})")
    enformer = load_trunk(hparams, folder)
    return assemble(enformer, cfg, length, hparams, organisms, mpra)


def assemble(enformer: nn.Module, cfg: ModelConfig, length: int,
             hparams: dict[str, Any], organisms: tuple[str, ...] = (),
             mpra: tuple[int, int] | None = None) -> ExpressionModel:
    """The expression model on a built trunk: head added (and the joint heads asked for),
    batch-norm policy and freezing applied (in place on the trunk's modules)."""
    model = ExpressionModel(enformer, cfg, length, hparams, organisms, mpra)
    apply_batchnorm_policy(model, cfg.batchnorm)
    apply_freeze(model, cfg.freeze)
    return model


def _check_window(cfg: ModelConfig, length: int, hparams: dict[str, Any]) -> None:
    bin_size = 2 ** hparams["num_downsamples"]
    if length <= 0 or length % bin_size:
        raise ConfigError(f"window length {length:,} bp is not a positive multiple of the "
                          f"trunk's {bin_size} bp bins")
    if length // bin_size < cfg.n_bins:
        raise ConfigError(f"model.n_bins = {cfg.n_bins} is more than the {length // bin_size} "
                          f"bins of a {length:,} bp window")


def _check_track(cfg: ModelConfig, hparams: dict[str, Any]) -> None:
    if cfg.head == "track":
        n_tracks = hparams["output_heads"].get("human", 0)
        if not 0 <= cfg.track < n_tracks:
            raise ConfigError(f"model.track = {cfg.track} is outside the human output head "
                              f"(tracks 0..{n_tracks - 1})")


def _require_sync_batchnorm() -> None:
    if not torch.cuda.is_available():
        raise ConfigError('model.batchnorm = "sync" needs GPUs (SyncBatchNorm runs on CUDA '
                          'only); use "local" or "frozen" on this machine')


_BATCHNORM_CLASSES = {"frozen": FrozenBatchNorm1d, "local": nn.BatchNorm1d,
                      "sync": nn.SyncBatchNorm}


def _convert_batchnorm(bn: nn.modules.batchnorm._BatchNorm, cls: type) -> nn.Module:
    if type(bn) is cls:
        return bn
    new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
              track_running_stats=bn.track_running_stats)
    new = new.to(device=bn.weight.device if bn.affine else bn.running_mean.device)
    # Keep the very same tensors (an optimizer holding them keeps working).
    for name in ("weight", "bias"):
        if getattr(bn, name, None) is not None:
            setattr(new, name, getattr(bn, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if getattr(bn, name, None) is not None:
            new.register_buffer(name, getattr(bn, name))
    new.train(bn.training)
    return new


def apply_batchnorm_policy(model: nn.Module, policy: str) -> None:
    """Set every batch-norm layer of ``model`` (in place) to ``policy``; idempotent.

    ``frozen``: :class:`FrozenBatchNorm1d` (eval statistics even under ``model.train()``),
    weight and bias ``requires_grad = False``. ``local``: plain ``BatchNorm1d`` (statistics of
    each process's batch). ``sync``: ``SyncBatchNorm`` (statistics over all processes; needs
    CUDA). ``local`` and ``sync`` leave ``requires_grad`` as it is (so freezing survives).

    Raises
    ------
    ConfigError
        An unknown policy, or ``sync`` without CUDA.
    """
    if policy not in _BATCHNORM_CLASSES:
        raise ConfigError(f"batchnorm policy {policy!r} is not one of "
                          f"{', '.join(map(repr, _BATCHNORM_CLASSES))}")
    if policy == "sync":
        _require_sync_batchnorm()
    cls = _BATCHNORM_CLASSES[policy]
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                new = _convert_batchnorm(child, cls)
                if new is not child:
                    setattr(parent, name, new)
                if policy == "frozen":
                    for p in new.parameters():
                        p.requires_grad_(False)


def apply_freeze(model: ExpressionModel, freeze: str) -> None:
    """Set ``requires_grad = False`` on the frozen part of ``model`` (in place).

    ``conv_tower``: stem + conv tower; ``transformer``: the transformer blocks; ``trunk``: all
    but the head; ``none``: nothing. Freezing does not stop batch-norm statistics from
    updating in training mode: that is ``batchnorm = "frozen"``.
    """
    parts = {
        "none": (),
        "conv_tower": (model.stem, model.conv_tower),
        "transformer": (model.transformer,),
        "trunk": (model.stem, model.conv_tower, model.transformer, model.final_pointwise),
    }
    if freeze not in parts:
        raise ConfigError(f"model.freeze = {freeze!r} is not one of "
                          f"{', '.join(map(repr, parts))}")
    for part in parts[freeze]:
        for p in part.parameters():
            p.requires_grad_(False)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and DDP / DataParallel / FSDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) or (
            type(model).__name__ == "FullyShardedDataParallel" and hasattr(model, "module")
        ):
            model = model.module
        else:
            return model
