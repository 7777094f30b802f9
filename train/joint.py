"""Joint training's part of the loop: the micro-step's model inputs and outputs per stream, and
the joint streams' validation metrics.

A micro-step group ``{stream: batch}`` (which streams: ``[train] mixing``, :mod:`loader.mix`)
becomes one model call (:meth:`train.model.ExpressionModel.forward`): the personal streams'
windows together as ``x`` (pairs as their a and b halves), the MPRA pairs' oligos centred in
the model's L bp input with N around them, the Enformer records per organism at their own
length (196,608 bp); the model runs the sequences of one length in one trunk forward.

Validation of the joint streams (every rank its slice of the validation split, sums reduced
over ranks; ``[train] joint_val_batches`` limits the batches):

* ``val_enformer_{organism}_r``: the mean over tracks of the Pearson r between predicted and
  measured targets over every (record, bin) of the held-out (val) records; forward strand only;
* ``val_mpra_r``: the mean over cell types of the Pearson r between predicted and measured
  effects (alt − ref) over measured val pairs; ``val_mpra_r_{cell type}`` each.

A constant prediction (or target) gives r = 0, as :mod:`hapflow.metrics`.
"""

from __future__ import annotations

import math

import torch

from hapflow.sections import TrainConfig
from loader.device import to_one_hot
from train.distributed import Dist
from train.inference import autocast
from train.losses import STREAMS, TERMS, is_personal

__all__ = ["cfg_streams", "joint_heads", "joint_streams", "model_inputs", "stream_outputs", "centre_oligos",
           "validate_joint", "pearson_from_sums"]


def cfg_streams(cfg: TrainConfig) -> set[str]:
    """The batch streams ``cfg``'s terms read."""
    return {TERMS[t].stream for t in cfg.loss_terms}


def joint_heads(streams) -> dict:
    """``build_model``'s joint-head arguments for the run's streams: the Enformer heads its
    enformer streams need, and (cell types, oligo width) of an MPRA head."""
    organisms = tuple(STREAMS[s]["organism"] for s in streams.train
                      if STREAMS[s].get("kind") == "enformer")
    mpra = streams.train.get("mpra")
    return {"organisms": organisms,
            "mpra": (len(mpra.cell_types), mpra.width) if mpra is not None else None}


def joint_streams(cfg: TrainConfig) -> list[str]:
    """The joint-data streams the configured terms read, by name."""
    return sorted({TERMS[t].stream for t in cfg.loss_terms} - {
        s for s in STREAMS if is_personal(s)})


def centre_oligos(codes: torch.Tensor, length: int) -> torch.Tensor:
    """(B, W) uint8 oligo codes centred in (B, length) with N (4) around them."""
    B, W = codes.shape
    if W > length:
        raise ValueError(f"MPRA oligos of {W} bp do not fit the model's {length} bp input")
    out = torch.full((B, length), 4, dtype=torch.uint8, device=codes.device)
    lo = (length - W) // 2
    out[:, lo:lo + W] = codes
    return out


def model_inputs(group: dict[str, dict], length: int, device: torch.device) -> dict:
    """The keyword inputs of one model call for a micro-step group.

    Returns
    -------
    dict: ``x`` (N, 2, L, 4) float one-hot of the personal streams' windows in stream order
    (pairs: a then b) or None, ``tss_index`` (N,) or None, ``tracks`` {organism: (B, 196608,
    4)}, ``mpra`` (M, 2, L, 4) or None, and ``sizes`` (the personal chunks' row counts).
    """
    seqs, tss, sizes = [], [], []
    tracks, mpra = {}, None
    for stream, batch in group.items():
        spec = STREAMS[stream]
        if is_personal(stream):
            for n in ("seq_a", "seq_b") if spec["pairs"] else ("seq",):
                seqs.append(batch[n])
                tss.append(batch["tss_index"])
                sizes.append(batch[n].shape[0])
        elif spec["kind"] == "enformer":
            tracks[spec["organism"]] = to_one_hot(batch["seq"], torch.float32, device)
        else:
            pair = torch.stack([centre_oligos(batch["seq_ref"], length),
                                centre_oligos(batch["seq_alt"], length)], dim=1)
            mpra = to_one_hot(pair, torch.float32, device)
    x = to_one_hot(torch.cat(seqs), torch.float32, device) if seqs else None
    t = torch.cat(tss).to(device, non_blocking=True) if tss else None
    return {"x": x, "tss_index": t, "tracks": tracks, "mpra": mpra, "sizes": sizes}


def stream_outputs(out: dict, group: dict[str, dict], sizes: list[int]) -> dict:
    """{stream: outputs} for :func:`train.losses.weighted_loss` from one model call's dict."""
    chunks = iter(out["pred"].split(sizes)) if sizes else iter(())
    outputs = {}
    for stream in group:
        spec = STREAMS[stream]
        if is_personal(stream):
            outputs[stream] = ({"pred_a": next(chunks), "pred_b": next(chunks)}
                               if spec["pairs"] else {"pred": next(chunks)})
        elif spec["kind"] == "enformer":
            outputs[stream] = {"tracks": out["tracks"][spec["organism"]]}
        else:
            outputs[stream] = {"effect": out["effect"]}
    return outputs


def _sums(pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(6, K) float64 sums n, Σx, Σy, Σx², Σy², Σxy per column over ``keep`` rows (N, K)."""
    w = keep.double()
    x, y = pred.double() * w, target.double() * w
    return torch.stack([w.sum(0), x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0),
                        (x * y).sum(0)])


def pearson_from_sums(s: torch.Tensor) -> list[float]:
    """Pearson r per column of :func:`_sums` (0 where either side is constant or n < 2)."""
    n, sx, sy, sxx, syy, sxy = s.double()
    cov = sxy - sx * sy / n.clamp(min=1)
    vx = sxx - sx * sx / n.clamp(min=1)
    vy = syy - sy * sy / n.clamp(min=1)
    # constant within rounding: a variance below 1e-9 of the sum of squares
    ok = (n >= 2) & (vx > 1e-9 * sxx) & (vy > 1e-9 * syy) & (vx > 0) & (vy > 0)
    r = torch.where(ok, cov / (vx * vy).clamp(min=1e-300).sqrt(), torch.zeros_like(cov))
    return [float(v) for v in r]


def validate_joint(model, loaders: dict, cfg: TrainConfig, d: Dist, bar=None) -> dict:
    """Metrics of every joint stream's validation loader (see the module docstring)."""
    out = {}
    for stream, loader in loaders.items():
        spec = STREAMS[stream]
        total = None
        for batch in loader:
            group = {stream: batch}
            inputs = model_inputs(group, model.length, d.device)
            inputs.pop("sizes")
            with torch.no_grad(), autocast(d.device, cfg.precision):
                res = model(**inputs)
            if spec["kind"] == "enformer":
                pred = res["tracks"][spec["organism"]].flatten(0, 1)  # (B * bins, tracks)
                target = batch["target"].to(d.device).flatten(0, 1)
                rows = batch["valid"].to(d.device).repeat_interleave(batch["target"].shape[1])
                keep = rows[:, None].expand_as(pred)
            else:
                pred, target = res["effect"], batch["effect"].to(d.device)
                keep = batch["mask"].to(d.device) & batch["valid"].to(d.device)[:, None]
            s = _sums(pred.float(), target.float(), keep)
            total = s if total is None else total + s
            if bar is not None:
                bar.update(1)
        if d.distributed:
            torch.distributed.all_reduce(total)
        r = pearson_from_sums(total)
        if spec["kind"] == "enformer":
            out[f"val_{stream}_r"] = sum(r) / len(r)
            out[f"val_{stream}_records"] = int(total[0, 0]) // batch["target"].shape[1]
        else:
            out["val_mpra_r"] = sum(r) / len(r)
            for name, value in zip(loader.cell_types, r, strict=True):
                out[f"val_mpra_r_{name}"] = value
            out["val_mpra_measured"] = int(total[0].sum())
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else float("nan"))
            for k, v in out.items()}
