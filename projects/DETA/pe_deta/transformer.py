"""The deformable transformer of two-stage Deformable DETR with iterative box refinement, as DETA uses it.

Encoder layers attend over all feature levels with :class:`pe_dense.ops.MSDeformAttn`; the encoder
output proposes boxes (one per position, sized by level); the best proposals, chosen per level after
NMS as DETA does, become the decoder's queries and reference boxes; each decoder layer refines the
boxes. Module and parameter names are those of the released Deformable DETR / DETA code, so their
checkpoints map onto this one key for key (see ``pe_deta.checkpoint``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_convert

from pe_dense.ops import MSDeformAttn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def mask_sine_embedding(mask: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine position embedding of the valid (False) area of a padding mask (B, H, W):
    (B, 2 * num_feats, H, W), the y half first."""
    not_mask = ~mask
    scale, eps = 2 * math.pi, 1e-6
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def box_sine_embedding(boxes_unact: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of proposal boxes given as logits (B, N, 4): (B, N, 4 * num_feats)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes_unact.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = boxes_unact.sigmoid()[..., None] * (2 * math.pi) / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(2)


class EncoderLayer(nn.Module):
    """Post-norm: deformable self-attention over all levels, then a ReLU feed-forward network."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, levels: "Levels"):
        attended = self.self_attn(src + pos, reference_points, src, levels.shapes, levels.starts, levels.padding)
        src = self.norm1(src + self.dropout1(attended))
        return self.norm2(src + self.dropout3(self.linear2(self.dropout2(F.relu(self.linear1(src))))))


class DecoderLayer(nn.Module):
    """Post-norm: query self-attention, deformable cross-attention into the encoder output, feed-forward."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos, reference_points, memory, levels: "Levels"):
        q = k = tgt + query_pos
        tgt = self.norm2(tgt + self.dropout2(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, levels.shapes, levels.starts,
                                   levels.padding)
        tgt = self.norm1(tgt + self.dropout1(attended))
        return self.norm3(tgt + self.dropout4(self.linear2(self.dropout3(F.relu(self.linear1(tgt))))))


class Levels(NamedTuple):
    """The flattened multi-scale input of one batch."""

    shapes: torch.Tensor  # (L, 2) (H, W) per level, on the CPU
    starts: torch.Tensor  # (L,) first token of each level
    padding: torch.Tensor  # (B, S) True on padded positions
    valid_ratios: torch.Tensor  # (B, L, 2) (w, h) fraction of each level that is image, not padding
    level_ids: torch.Tensor  # (S,) level of every token


class TransformerOutput(NamedTuple):
    hidden_states: torch.Tensor  # (layers, B, Q, C)
    init_reference: torch.Tensor  # (B, Q, 4) proposals the decoder starts from, (cx, cy, w, h) in [0, 1]
    inter_references: torch.Tensor  # (layers, B, Q, 4) the boxes after each decoder layer (detached)
    enc_logits: torch.Tensor  # (B, S, classes) proposal logits of every encoder position
    enc_boxes_unact: torch.Tensor  # (B, S, 4) proposal box logits of every encoder position
    anchors: torch.Tensor  # (B, S, 4) the fixed anchor of every position, (cx, cy, w, h)


class DeformableTransformer(nn.Module):
    """Encoder, two-stage proposals and refining decoder.

    Args:
        d_model, nhead, dim_feedforward, dropout: layer sizes (DETA: 256, 8, 2048, 0).
        num_encoder_layers, num_decoder_layers: depths (6 and 6).
        num_feature_levels, enc_n_points, dec_n_points: deformable attention sampling (5 levels, 4 points).
        num_queries: proposals kept for the decoder (900).
        proposals_per_level: choose the proposals as DETA does (per-level top-k, NMS at
            ``proposal_nms_thresh``, an equal share of queries per level) rather than a plain top-k.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.0, num_feature_levels: int = 5,
                 enc_n_points: int = 4, dec_n_points: int = 4, num_queries: int = 900,
                 proposals_per_level: bool = True, proposal_pre_nms_topk: int = 1000,
                 proposal_nms_thresh: float = 0.9):
        super().__init__()
        self.d_model = d_model
        self.num_queries = num_queries
        self.proposals_per_level = proposals_per_level
        self.proposal_pre_nms_topk = proposal_pre_nms_topk
        self.proposal_nms_thresh = proposal_nms_thresh
        args = (d_model, dim_feedforward, dropout, num_feature_levels, nhead)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(*args, enc_n_points) for _ in range(num_encoder_layers))
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(DecoderLayer(*args, dec_n_points) for _ in range(num_decoder_layers))
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
        self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        self.pix_trans = nn.Linear(d_model, d_model)
        self.pix_trans_norm = nn.LayerNorm(d_model)
        self.reset_parameters()

    @property
    def num_decoder_layers(self) -> int:
        return len(self.decoder.layers)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def flatten_levels(srcs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, Levels]:
        """(B, S, C) tokens of all levels, and where each level sits."""
        shapes = torch.tensor([tuple(s.shape[-2:]) for s in srcs], dtype=torch.long)
        sizes = shapes.prod(1)
        starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        device = srcs[0].device
        valid = [torch.stack([(~m[:, 0, :]).sum(1) / m.shape[2], (~m[:, :, 0]).sum(1) / m.shape[1]], -1) for m in masks]
        level_ids = torch.repeat_interleave(torch.arange(len(srcs), device=device), sizes.to(device))
        levels = Levels(shapes, starts, torch.cat([m.flatten(1) for m in masks], 1), torch.stack(valid, 1), level_ids)
        return torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1), levels

    @staticmethod
    def encoder_reference_points(levels: Levels) -> torch.Tensor:
        """Centre of every token, relative to the valid area of its level, seen from every level: (B, S, L, 2)."""
        points = []
        ratios = levels.valid_ratios
        for lvl, (h, w) in enumerate(levels.shapes.tolist()):
            ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, device=ratios.device),
                                    torch.linspace(0.5, w - 0.5, w, device=ratios.device), indexing="ij")
            ys = ys.reshape(-1)[None] / (ratios[:, None, lvl, 1] * h)
            xs = xs.reshape(-1)[None] / (ratios[:, None, lvl, 0] * w)
            points.append(torch.stack((xs, ys), -1))
        return torch.cat(points, 1)[:, :, None] * ratios[:, None]

    def anchors(self, memory: torch.Tensor, levels: Levels) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor boxes (B, S, 4) centred on each token, 0.05 * 2^level wide (as logits, inf where unusable),
        and the encoder output turned into proposal features (zero where unusable)."""
        n = memory.shape[0]
        anchors = []
        start = 0
        for lvl, (h, w) in enumerate(levels.shapes.tolist()):
            pad = levels.padding[:, start:start + h * w].view(n, h, w)
            valid_h, valid_w = (~pad[:, :, 0]).sum(1), (~pad[:, 0, :]).sum(1)
            ys, xs = torch.meshgrid(torch.linspace(0, h - 1, h, device=memory.device),
                                    torch.linspace(0, w - 1, w, device=memory.device), indexing="ij")
            grid = torch.stack([xs, ys], -1)
            scale = torch.stack([valid_w, valid_h], 1).view(n, 1, 1, 2)
            grid = (grid[None].expand(n, -1, -1, -1) + 0.5) / scale
            wh = torch.full_like(grid, 0.05 * 2.0**lvl)
            anchors.append(torch.cat((grid, wh), -1).view(n, -1, 4))
            start += h * w
        anchors = torch.cat(anchors, 1)
        usable = ((anchors > 0.01) & (anchors < 0.99)).all(-1, keepdim=True) & ~levels.padding[..., None]
        logits = torch.log(anchors / (1 - anchors)).masked_fill(~usable, float("inf"))
        features = self.enc_output_norm(self.enc_output(memory.masked_fill(~usable, 0.0)))
        return logits, features

    def select_proposals(self, logits: torch.Tensor, boxes_unact: torch.Tensor,
                         level_ids: torch.Tensor) -> torch.Tensor:
        """Indices (B, Q) of the proposals the decoder starts from."""
        q = self.num_queries
        if not self.proposals_per_level:
            return torch.topk(logits, q, dim=1)[1]
        num_levels = int(level_ids.max()) + 1
        boxes = box_convert(boxes_unact.sigmoid().float(), "cxcywh", "xyxy").clamp(0, 1)
        chosen = []
        for b in range(logits.shape[0]):
            scores = logits[b].sigmoid()
            k = min(self.proposal_pre_nms_topk, scores.numel())
            candidates = torch.cat([torch.topk(scores * (level_ids == lvl), k)[1] for lvl in range(num_levels)])
            keep = candidates[batched_nms(boxes[b, candidates], logits[b, candidates], level_ids[candidates],
                                          self.proposal_nms_thresh)]
            if len(keep) < q:  # too few survive NMS (tiny inputs): plain top-k, as the released code does
                chosen.append(torch.topk(logits[b], q)[1])
                continue
            # In score order, the first Q/L of each level, then the best of the rest up to Q.
            per_level = level_ids[keep][None] == torch.arange(num_levels, device=keep.device)[:, None]
            taken = (per_level & (per_level.cumsum(1) <= q // num_levels)).any(0)
            missing = q - int(taken.sum())
            if missing > 0:
                taken[(~taken).nonzero()[:missing, 0]] = True
            chosen.append(keep[taken])
        return torch.stack(chosen)

    # ------------------------------------------------------------------ forward
    def encode(self, srcs, masks, pos_embeds) -> tuple[torch.Tensor, Levels]:
        """The encoder's output (B, S, C) over all levels, and where each level sits."""
        memory, levels = self.flatten_levels(srcs, masks)
        pos = torch.cat([(p.flatten(2).transpose(1, 2) + self.level_embed[lvl]) for lvl, p in enumerate(pos_embeds)], 1)
        reference = self.encoder_reference_points(levels)
        for layer in self.encoder.layers:
            memory = layer(memory, pos, reference, levels)
        return memory, levels

    def forward(self, srcs, masks, pos_embeds, class_embed: nn.ModuleList,
                bbox_embed: nn.ModuleList) -> TransformerOutput:
        """srcs, masks, pos_embeds: per level (B, C, H, W), (B, H, W) True on padding, (B, C, H, W).
        ``class_embed`` and ``bbox_embed`` hold one head per decoder layer plus the proposal head last."""
        memory, levels = self.encode(srcs, masks, pos_embeds)
        anchors_unact, proposal_features = self.anchors(memory, levels)
        enc_logits = class_embed[-1](proposal_features)
        enc_boxes_unact = bbox_embed[-1](proposal_features) + anchors_unact
        topk = self.select_proposals(enc_logits[..., 0], enc_boxes_unact, levels.level_ids)
        topk_boxes_unact = torch.gather(enc_boxes_unact, 1, topk[..., None].expand(-1, -1, 4)).detach()
        box_embedding = box_sine_embedding(topk_boxes_unact, self.d_model // 2)
        query_pos, tgt = self.pos_trans_norm(self.pos_trans(box_embedding)).split(self.d_model, 2)
        topk_features = torch.gather(proposal_features, 1, topk[..., None].expand(-1, -1, self.d_model)).detach()
        tgt = tgt + self.pix_trans_norm(self.pix_trans(topk_features))

        reference = init_reference = topk_boxes_unact.sigmoid()
        ratios = torch.cat([levels.valid_ratios, levels.valid_ratios], -1)[:, None]
        hidden, references = [], []
        for lid, layer in enumerate(self.decoder.layers):
            tgt = layer(tgt, query_pos, reference[:, :, None] * ratios, memory, levels)
            reference = (bbox_embed[lid](tgt) + inverse_sigmoid(reference)).sigmoid().detach()
            hidden.append(tgt)
            references.append(reference)
        return TransformerOutput(torch.stack(hidden), init_reference, torch.stack(references), enc_logits,
                                 enc_boxes_unact, anchors_unact.sigmoid())
