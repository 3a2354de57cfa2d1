"""Reading DETA checkpoints: this project's own, the released DETA-for-PE layout, and PE encoders.

The released DETA-for-PE code (a fork of the DETA repository) saves ``{"model": state_dict, ...}``
with its backbone under ``backbone.0.body.`` and the detector's keys named as in Deformable DETR.
One key map turns it into this project's layout:

==========================================  ==========================================
released                                    pe_deta
==========================================  ==========================================
``backbone.0.body.fpn1.*``                  ``backbone.fpn1.*``
``backbone.0.body.<encoder key>``           ``backbone.net.<encoder key>``
``backbone.0.body.rope_win/rope_glb.*``,    dropped: RoPE tables, recomputed from the
``...resblocks.<i>.attn.rope.*``            input size
``transformer.decoder.class_embed.*``,      dropped: the same tensors as ``class_embed.*``
``transformer.decoder.bbox_embed.*``        and ``bbox_embed.*`` (checked equal)
``class_embed.<i>.weight/bias``             the rows of ``released_class_ids`` (the released
                                            COCO model scores the 91 COCO category ids);
                                            the proposal head (the last) keeps row 0 first,
                                            its objectness
everything else                             unchanged
==========================================  ==========================================

Then the encoder goes through pe_dense's usual fitting (``(1, N, C)`` position table squeezed,
patch-14 kernels resized to 16). An encoder checkpoint whose position table covers another grid
than the built encoder's (a released PE encoder, 32 x 32, for the released DETA backbone's 24 x 24)
has its table resized bilinearly, as PE resizes it for other image sizes.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from pe_dense.integrations.detectron2 import find_pe_encoder
from pe_dense.models.checkpoint import CheckpointError, StateDict, find_vision_tower, vision_towers
from pe_dense.models.pos_embed import adapt_pos_embed, grid_side

RELEASED_BACKBONE = "backbone.0.body."
_DUPLICATE_HEADS = ("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed.")


def is_released_layout(state: StateDict) -> bool:
    return any(k.startswith(RELEASED_BACKBONE) for k in state)


def from_released(state: StateDict, class_ids: Optional[Sequence[int]] = None) -> StateDict:
    """The released DETA-for-PE state dict in this project's keys (see the module's table)."""
    out = {}
    for key, value in state.items():
        if key.startswith(RELEASED_BACKBONE):
            rest = key[len(RELEASED_BACKBONE):]
            if rest.startswith(("rope_win.", "rope_glb.")) or ".attn.rope." in rest:
                continue
            out[("backbone." if rest.startswith("fpn") else "backbone.net.") + rest] = value
        elif key.startswith(_DUPLICATE_HEADS):
            twin = key[len("transformer.decoder."):]
            if twin not in state or not torch.equal(state[twin], value):
                raise CheckpointError(f"{key} differs from {twin}: not a released DETA checkpoint")
        else:
            out[key] = value
    if class_ids is not None:
        heads = [k for k in out if k.startswith("class_embed.")]
        proposal_head = max(int(k.split(".")[1]) for k in heads)
        for key in heads:
            rows = list(class_ids)
            if int(key.split(".")[1]) == proposal_head:
                # The proposal head scores objectness in its first column (the only one ever read); its
                # other columns are trained as negatives only, so any rows fill them.
                rows = [0] + [i for i in rows if i != 0][: len(rows) - 1]
            if max(rows) >= out[key].shape[0]:
                raise CheckpointError(f"{key} has {out[key].shape[0]} classes; class id {max(rows)} is outside")
            out[key] = out[key][torch.as_tensor(rows)]
    return out


def fit_position_grid(state: StateDict, grid: int) -> tuple[StateDict, list[str]]:
    """Resize the position table of the one PE encoder in ``state`` to ``grid`` x ``grid`` if it covers
    another square grid (a class row, where there is one, is kept as it is)."""
    if not vision_towers(state):
        return state, []
    _, prefix = find_vision_tower(state)
    key = prefix + "positional_embedding"
    table = state[key][0] if state[key].ndim == 3 else state[key]
    rows = table.shape[0]
    class_rows = 0 if math.isqrt(rows) ** 2 == rows else 1  # G*G + 1 rows is never a square
    side = grid_side(rows - class_rows)
    if side == grid:
        return state, []
    resized = adapt_pos_embed(table[class_rows:].float(), grid, grid, "bilinear").to(table.dtype)
    return {**state, key: torch.cat([table[:class_rows], resized])}, [
        f"position table resized from {side}x{side} to {grid}x{grid}"]


def adapt_checkpoint(state: StateDict, model) -> tuple[StateDict, list[str]]:
    """A DETA or encoder state dict in the keys and position grid of ``model`` (a DETA), with notes."""
    notes = []
    if is_released_layout(state):
        state = from_released(state, model.released_class_ids)
        notes.append("released DETA-for-PE layout mapped to pe_deta's keys")
    found = find_pe_encoder(model)
    if found is not None:
        state, resized = fit_position_grid(state, found[1].config.pretrain_grid)
        notes += resized
    return state, notes
