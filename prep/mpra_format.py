"""Shard members of MPRA variant effects (``python -m prep.mpra``).

A shard sample holds a *group* of up to ``[mpra] group_size`` oligo pairs of one split (tar
members cost 512 bytes each, a 200-bp oligo 50), key ``mpra_{split}_{NNNNN}``; members in
this order:

``{key}.json``
    UTF-8 JSON ending in its own sha256 (:func:`prep.shard_format.encode_meta`): ``format``,
    ``kind`` = ``"mpra"``, ``split``, ``cell_types`` (C names, the column order below),
    ``effect`` = ``"alt_minus_ref"``, ``normalise``, ``ids`` and ``variants`` (n each),
    ``ref_lengths`` and ``alt_lengths`` (n each), ``build``, the sha256 of the four members
    below and, last, ``sha256``.
``{key}.ref.2bit`` / ``{key}.alt.2bit``
    The n reference (alternate) oligos, concatenated in order, as codes A, C, G, T, N =
    0..4 packed 2 bits per base plus N runs (:func:`prep.shard_format.encode_reference`); pair
    i is ``[sum(lengths[:i]), sum(lengths[:i + 1]))``.
``{key}.effect.f32``
    float32 little-endian, shape (n, C), row-major: the normalised effect (alt - ref) per
    cell type; 0.0 where not measured (never NaN, so a masked loss stays finite).
``{key}.mask.u8``
    uint8, shape (n, C): 1 where the cell type measured the pair, else 0.

:func:`unpack_mpra_groups` verifies every member and yields one sample per oligo pair. Every
problem is a :class:`prep.shard_format.ShardFormatError` naming shard and member. Torch-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np

from prep.shard_format import (
    FORMAT_VERSION,
    ShardFormatError,
    decode_meta,
    decode_reference,
    encode_meta,
    encode_reference,
    safe_key,
)

__all__ = ["KIND", "EFFECT", "MEMBERS", "group_key", "pair_key", "encode_group",
           "decode_group", "unpack_mpra_groups"]

KIND = "mpra"
EFFECT = "alt_minus_ref"
MEMBERS = ("json", "ref.2bit", "alt.2bit", "effect.f32", "mask.u8")


def group_key(split: str, index: int) -> str:
    """``mpra_{split}_{index:05d}``."""
    return f"mpra_{split}_{index:05d}"


def pair_key(pair_id: str) -> str:
    """Key of one oligo pair in unpacked samples and the manifest: ``mpra__{id}`` (dots and
    slashes of the id as underscores)."""
    return f"mpra__{safe_key(pair_id)}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_group(key: str, refs: list[np.ndarray], alts: list[np.ndarray],
                 effects: np.ndarray, mask: np.ndarray, meta: dict) -> list[tuple[str, bytes]]:
    """The five members of one group, as (member name, bytes), JSON first.

    Parameters
    ----------
    refs, alts : list of np.ndarray, each (length,), uint8 codes 0..4
    effects : np.ndarray, shape (n, C), float (NaN where not measured; stored as 0)
    mask : np.ndarray, shape (n, C), bool
    meta : dict
        split, cell_types, normalise, ids, variants, build (the rest is filled in here).
    """
    members = {
        "ref.2bit": encode_reference(np.concatenate(refs)),
        "alt.2bit": encode_reference(np.concatenate(alts)),
        "effect.f32": np.where(mask, effects, 0.0).astype("<f4").tobytes(),
        "mask.u8": np.ascontiguousarray(mask, dtype=np.uint8).tobytes(),
    }
    record = {"format": FORMAT_VERSION, "kind": KIND, "effect": EFFECT, **meta,
              "ref_lengths": [int(r.shape[0]) for r in refs],
              "alt_lengths": [int(a.shape[0]) for a in alts],
              **{f"{name.split('.')[0]}_sha256": _sha256(blob) for name, blob in members.items()}}
    return [(f"{key}.json", encode_meta(record)),
            *((f"{key}.{name}", blob) for name, blob in members.items())]


def _check(meta: dict, where: str) -> int:
    if meta.get("kind") != KIND or meta.get("effect") != EFFECT:
        raise ShardFormatError(f"{where}: not an MPRA group (kind {meta.get('kind')!r}, effect "
                               f"{meta.get('effect')!r})")
    n = len(meta.get("ids") or [])
    for field in ("variants", "ref_lengths", "alt_lengths"):
        if not isinstance(meta.get(field), list) or len(meta[field]) != n or n == 0:
            raise ShardFormatError(f"{where}: field {field} does not list the group's {n} pairs")
    if not isinstance(meta.get("cell_types"), list) or not meta["cell_types"]:
        raise ShardFormatError(f"{where}: field cell_types is not a list of names")
    return n


def decode_group(sample: dict) -> dict:
    """Verify and decode one group sample (member bytes by extension).

    Returns
    -------
    dict
        ``meta`` (the JSON), ``ref`` and ``alt`` (lists of n uint8 code arrays), ``effect``
        (np.ndarray (n, C), float32), ``mask`` (np.ndarray (n, C), bool).

    Raises
    ------
    ShardFormatError
        A missing or corrupt member, naming shard and member.
    """
    key = sample.get("__key__", "?")
    shard = f"shard {sample.get('__url__', '?')}"
    for ext in MEMBERS:
        if ext not in sample:
            raise ShardFormatError(f"{shard}: sample {key} lacks its .{ext} member")
    meta = decode_meta(sample["json"], f"{shard}: member {key}.json")
    n = _check(meta, f"{shard}: member {key}.json")
    for ext in MEMBERS[1:]:
        if _sha256(sample[ext]) != meta.get(f"{ext.split('.')[0]}_sha256"):
            raise ShardFormatError(f"{shard}: member {key}.{ext}: its bytes do not match the "
                                   "sha256 its JSON recorded: the member is corrupt")
    c = len(meta["cell_types"])
    if len(sample["effect.f32"]) != 4 * n * c or len(sample["mask.u8"]) != n * c:
        raise ShardFormatError(f"{shard}: sample {key}: effect or mask is not ({n}, {c})")
    out = {"meta": meta,
           "effect": np.frombuffer(sample["effect.f32"], "<f4").reshape(n, c),
           "mask": np.frombuffer(sample["mask.u8"], np.uint8).reshape(n, c).astype(bool)}
    for name in ("ref", "alt"):
        try:
            codes = decode_reference(sample[f"{name}.2bit"])
        except ShardFormatError as err:
            raise ShardFormatError(f"{shard}: member {key}.{name}.2bit: {err}") from None
        lengths = meta[f"{name}_lengths"]
        if codes.shape[0] != sum(lengths):
            raise ShardFormatError(f"{shard}: member {key}.{name}.2bit holds {codes.shape[0]} "
                                   f"bases, its JSON {sum(lengths)}")
        out[name] = np.split(codes, np.cumsum(lengths)[:-1])
    return out


def unpack_mpra_groups(samples: Iterable[dict]) -> Iterator[dict]:
    """WebDataset stage: raw group samples in, one sample per oligo pair out.

    Yields
    ------
    dict
        ``__key__`` (:func:`pair_key`), ``__url__``, ``id``, ``variant``, ``split``, ``ref``
        and ``alt`` (np.ndarray (length,), uint8 codes), ``effect`` (np.ndarray (C,), float32,
        alt - ref, normalised; 0 where masked), ``mask`` (np.ndarray (C,), bool),
        ``cell_types`` (list of C names).
    """
    for sample in samples:
        g = decode_group(sample)
        meta = g["meta"]
        for i, pair in enumerate(meta["ids"]):
            yield {"__key__": pair_key(pair), "__url__": sample.get("__url__", "?"),
                   "id": pair, "variant": meta["variants"][i], "split": meta["split"],
                   "ref": g["ref"][i], "alt": g["alt"][i], "effect": g["effect"][i],
                   "mask": g["mask"][i], "cell_types": meta["cell_types"]}
