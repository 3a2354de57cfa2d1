"""The PE vision tower: one transformer for dense features, CLIP pooling and ViTDet-style detection.

Parameter names follow the released checkpoints (``conv1``, ``transformer.resblocks.<i>.attn.in_proj_weight``,
...), so official state dicts load without renaming. The ViTDet options (windowed attention, RoPE
rescaled to the pretraining grid, a tiled position table, another patch size) are constructor
arguments of the same module, not a second implementation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..ops.dot_product_attention import attention
from .configs import PEVisionConfig
from .pos_embed import POS_EMBED_MODES, PosEmbedMode, adapt_pos_embed, fractional_rows
from .rope import apply_rope, rope_angles, rope_cos_sin, rope_table
from .windows import window_partition, window_unpartition


class TokenPositions(NamedTuple):
    """Where the tokens of one forward pass sit: grid size and RoPE tables, shared by all blocks."""

    grid_h: int
    grid_w: int
    # (L, 1, 1, head_dim/2) complex, laid out for a (B, L, 2, heads, head_dim/2) q/k pair; in export
    # form real, (2, L, 1, 1, head_dim): cos and sin (rope.rope_cos_sin)
    rope: torch.Tensor
    window_rope: Optional[torch.Tensor]  # the same for one window, in windowed models


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` in training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class SelfAttention(nn.Module):
    """Multi-head self-attention with 2D RoPE on q and k, over one packed in-projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, -1)
        # Rotate q and k together straight out of the packed projection: one kernel, no permute copies.
        q, k = apply_rope(qkv[:, :, :2], rope).permute(2, 0, 3, 1, 4)
        v = qkv[:, :, 2].transpose(1, 2)
        out = attention(q, k, v)  # bf16 on a CPU: pe_dense's kernel
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


def _mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))])
    )


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + ls_1(attn(ln_1(x))), then x + ls_2(mlp(ln_2(x))); windowed when window_size > 0."""

    def __init__(self, width, heads, mlp_width, ls_init_value=None, drop_path=0.0, window_size=0):
        super().__init__()
        self.window_size = window_size
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = SelfAttention(width, heads)
        self.ls_1 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = _mlp(width, mlp_width)
        self.ls_2 = LayerScale(width, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pos: TokenPositions) -> torch.Tensor:
        y = self.ln_1(x)
        if self.window_size:
            y, padded = window_partition(y, pos.grid_h, pos.grid_w, self.window_size)
            y = self.attn(y, pos.window_rope)
            y = window_unpartition(y, padded, pos.grid_h, pos.grid_w, self.window_size)
        else:
            y = self.attn(y, pos.rope)
        x = x + self.drop_path(self.ls_1(y))
        return x + self.drop_path(self.ls_2(self.mlp(self.ln_2(x))))


class Transformer(nn.Module):
    def __init__(self, blocks: Sequence[ResidualAttentionBlock]):
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def _run_block(self, block: ResidualAttentionBlock, x: torch.Tensor, pos: TokenPositions) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, pos, use_reentrant=False)
        return block(x, pos)

    def run(self, x: torch.Tensor, pos: TokenPositions, last: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Run blocks 0..last, yielding (index, tokens) after each."""
        for i, block in enumerate(self.resblocks[: last + 1]):
            x = self._run_block(block, x, pos)
            yield i, x

    def forward(self, x: torch.Tensor, pos: TokenPositions, last: int) -> torch.Tensor:
        """The tokens after block ``last`` (only the latest block's tokens are kept alive)."""
        for block in self.resblocks[: last + 1]:
            x = self._run_block(block, x, pos)
        return x


class AttentionPooling(nn.Module):
    """CLIP head of PE-Core: a learned probe attends over all tokens, then a residual MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=1e-5)
        self.mlp = _mlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1).to(x.dtype)
        out = self.attn(probe, x, x, need_weights=False)[0]
        return (out + self.mlp(self.layernorm(out)))[:, 0]


class PEVisionTransformer(nn.Module):
    """A PE vision tower built from a :class:`PEVisionConfig`.

    Args:
        config: the architecture (see ``pe_dense.models.get_config``).
        keep_blocks: keep only the first ``keep_blocks`` blocks (dropping unused trailing blocks); None
            keeps all ``config.depth``.
        patch_size: patch size of ``conv1`` if not the config's (e.g. 16 for a patch-14 model in
            detection; checkpoints are converted on load).
        drop_cls_token: run without the class token even if the checkpoint has one (ViTDet).
        window_size: if > 0, blocks attend within non-overlapping windows of this many tokens per side,
            except ``global_blocks``. Needs no class token.
        global_blocks: block indices that keep global attention in a windowed model.
        rope_pretrain_grid: rescale RoPE positions so every run of tokens spans this grid, as the
            released ViTDet backbones do; None keeps the released models' integer positions.
        pos_embed_mode: how the position table fits another grid: "bilinear" (released models),
            "bicubic" or "tile" (ViTDet options).
        drop_path_rate: stochastic depth, rising linearly over the blocks up to this rate.
    """

    def __init__(
        self,
        config: PEVisionConfig,
        *,
        keep_blocks: Optional[int] = None,
        patch_size: Optional[int] = None,
        drop_cls_token: bool = False,
        window_size: int = 0,
        global_blocks: Sequence[int] = (),
        rope_pretrain_grid: Optional[int] = None,
        pos_embed_mode: PosEmbedMode = "bilinear",
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        keep_blocks = config.depth if keep_blocks is None else keep_blocks
        if not 1 <= keep_blocks <= config.depth:
            raise ValueError(f"keep_blocks must be in 1..{config.depth} for {config.name}, got {keep_blocks}")
        if pos_embed_mode not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed_mode must be one of {POS_EMBED_MODES}, got '{pos_embed_mode}'")
        bad = [i for i in global_blocks if not 0 <= i < config.depth]
        if bad:
            raise ValueError(f"global_blocks {bad} are outside 0..{config.depth - 1}")
        self.config = config
        self.patch_size = patch_size or config.patch_size
        self.use_cls_token = config.use_cls_token and not drop_cls_token
        if window_size and self.use_cls_token:
            raise ValueError("windowed attention has no place for the class token: pass drop_cls_token=True")
        self.window_size = window_size
        self.rope_pretrain_grid = rope_pretrain_grid
        self.pos_embed_mode = pos_embed_mode
        # Set by pe_dense.export (docs/export.md#the-graph): RoPE in real arithmetic, as ONNX has no complex
        # numbers, and the position table resized even at its own grid (an identity there), so that no branch
        # depends on the input size and height and width can stay symbolic. Eager runs keep the faster forms.
        self.export_mode = False

        width = config.width
        self.conv1 = nn.Conv2d(3, width, kernel_size=self.patch_size, stride=self.patch_size, bias=False)
        if self.use_cls_token:
            self.class_embedding = nn.Parameter(torch.empty(width))
        # The table keeps the checkpoint's class row even when the token is dropped, so weights load as they are.
        table_rows = int(config.use_cls_token) + config.pretrain_grid**2
        self.positional_embedding = nn.Parameter(torch.empty(table_rows, width))
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        rates = [drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        blocks = [
            ResidualAttentionBlock(
                width, config.heads, config.mlp_width, config.ls_init_value, rates[i],
                window_size=0 if i in global_blocks else window_size,
            )
            for i in range(keep_blocks)
        ]
        self.transformer = Transformer(blocks)
        self.ln_post = nn.LayerNorm(width, eps=1e-5) if config.use_ln_post else nn.Identity()
        if config.pool == "attn":
            self.attn_pool = AttentionPooling(width, config.attn_pool_heads)
            self.proj = nn.Parameter(torch.empty(width, config.output_dim))
        else:
            self.attn_pool = None
            self.proj = None
        self.reset_parameters()

    # ------------------------------------------------------------------ set-up
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation (as the released code for embeddings; truncated normal for linears)."""
        scale = self.config.width**-0.5
        for name, p in self.named_parameters():
            if name in ("class_embedding", "positional_embedding", "proj", "attn_pool.probe"):
                p.normal_(0.0, scale)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, SelfAttention):
                nn.init.trunc_normal_(m.in_proj_weight, std=0.02)
                nn.init.zeros_(m.in_proj_bias)
            elif isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, LayerScale):
                m.gamma.fill_(self.config.ls_init_value)
        nn.init.kaiming_uniform_(self.conv1.weight, a=math.sqrt(5))

    @property
    def num_blocks(self) -> int:
        """How many blocks the model has (after ``keep_blocks`` or :meth:`truncate`)."""
        return len(self.transformer.resblocks)

    @property
    def width(self) -> int:
        return self.config.width

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (training only) to save memory."""
        self.transformer.grad_checkpointing = enable

    def truncate(self, layer: int) -> None:
        """Drop the blocks after ``layer``, e.g. when only that intermediate layer is used."""
        self.transformer.resblocks = self.transformer.resblocks[: self.layer_index(layer) + 1]

    def freeze(self, first_blocks: Optional[int] = None) -> "PEVisionTransformer":
        """Stop gradients to the embeddings and the first ``first_blocks`` blocks; None freezes everything."""
        if first_blocks is None:
            self.requires_grad_(False)
            return self
        for module in (self.conv1, self.ln_pre, *self.transformer.resblocks[:first_blocks]):
            module.requires_grad_(False)
        for name in ("class_embedding", "positional_embedding"):
            if hasattr(self, name):
                getattr(self, name).requires_grad_(False)
        return self

    # ------------------------------------------------------------------ forward pieces
    def layer_index(self, layer: int) -> int:
        """The block index ``layer`` means (negative counts from the end), or a ValueError if out of range."""
        n = self.num_blocks
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} is out of range for a {n}-block model (valid: {-n}..{n - 1})")
        return layer % n

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of tokens for an input of this size; sizes must be multiples of the patch size."""
        p = self.patch_size
        if height % p or width % p or height < p or width < p:
            raise ValueError(
                f"input size {height}x{width} is not a positive multiple of the patch size {p}; resize or pad "
                f"the image (e.g. pe_dense.models.preprocess(image, size) picks a valid size)"
            )
        return height // p, width // p

    def positions(self, grid_h: int, grid_w: int, device=None, step: float = 1.0) -> TokenPositions:
        """RoPE tables for a grid (computed per call: a few thousand sin/cos, negligible next to a block);
        ``step`` < 1: tokens that far apart (overlapping patches)."""
        head_dim = self.config.head_dim
        form = rope_cos_sin if self.export_mode else rope_table

        def table(angles):  # broadcast axes for the pair and head dims of q/k, before the channel dim
            return form(angles)[..., None, None, :]

        angles = rope_angles(grid_h, grid_w, head_dim, cls_token=self.use_cls_token,
                             pretrain_grid=self.rope_pretrain_grid, step=step, device=device)
        window_rope = None
        if self.window_size:
            ws = self.window_size
            window_angles = rope_angles(ws, ws, head_dim, pretrain_grid=self.rope_pretrain_grid, device=device)
            window_rope = table(window_angles)
        return TokenPositions(grid_h, grid_w, table(angles), window_rope)

    def position_table(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Absolute position rows added to the patch tokens of a grid_h x grid_w input: (grid_h*grid_w, width)."""
        patch_rows = self.positional_embedding[int(self.config.use_cls_token):]
        return adapt_pos_embed(patch_rows, grid_h, grid_w, self.pos_embed_mode, resize_native=self.export_mode)

    def embed(self, images: torch.Tensor, token_stride: Optional[int] = None) -> tuple[torch.Tensor, TokenPositions]:
        """Patchify, add positions, prepend the class token and apply ln_pre: (B, cls + h*w, width).

        ``token_stride`` (a divisor of the patch size p) takes overlapping patches every that many pixels, k
        = p / token_stride times denser per side, positioned between the released grid's positions
        (docs/sharper.md#overlapping-patches): an approximation of the released model, not its output.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        grid_h, grid_w = self.token_grid(images.shape[2], images.shape[3])
        stride = token_stride or self.patch_size
        k = self.patch_size // stride
        if stride * k != self.patch_size:
            raise ValueError(f"token stride {stride} does not divide the patch size {self.patch_size}")
        if k == 1:
            x = self.conv1(images).flatten(2).transpose(1, 2)
            x = x + self.position_table(grid_h, grid_w).to(x.dtype)
        else:
            if self.window_size:
                raise ValueError("overlapping patches would change what a window of tokens covers: not in windowed "
                                 "models")
            # the last patches reach past the image: its last row and column repeated (as shift-and-stitch)
            padded = F.pad(images, (0, self.patch_size - stride, 0, self.patch_size - stride), mode="replicate")
            x = F.conv2d(padded, self.conv1.weight, stride=stride).flatten(2).transpose(1, 2)
            x = x + fractional_rows(self.position_table(grid_h, grid_w), grid_h, grid_w, k).to(x.dtype)
            grid_h, grid_w = grid_h * k, grid_w * k
        if self.use_cls_token:
            cls = self.class_embedding + self.positional_embedding[0]
            x = torch.cat([cls.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        return self.ln_pre(x), self.positions(grid_h, grid_w, device=images.device, step=1.0 / k)

    def _to_map(self, tokens: torch.Tensor, pos: TokenPositions) -> torch.Tensor:
        patches = tokens[:, int(self.use_cls_token):]
        return patches.transpose(1, 2).unflatten(2, (pos.grid_h, pos.grid_w))

    # ------------------------------------------------------------------ public forward API
    def forward_features(self, images: torch.Tensor, layer: int = -1, norm: bool = False) -> torch.Tensor:
        """Tokens (B, cls + h*w, width) after block ``layer`` (class token first where the model has one).

        ``norm`` applies ln_post where the model has one (Core); blocks after ``layer`` are not run.
        """
        last = self.layer_index(layer)
        x, pos = self.embed(images)
        tokens = self.transformer(x, pos, last)
        return self.ln_post(tokens) if norm else tokens

    def dense_features_at(
        self,
        images: torch.Tensor,
        layers: Sequence[int] = (-1,),
        norm: bool = False,
        return_cls_token: bool = False,
        token_stride: Optional[int] = None,
    ):
        """Dense maps (B, width, H/p, W/p) after each block in ``layers`` (negative counts from the end).

        One pass, stopping at the deepest requested block. With ``return_cls_token`` the result is a
        list of (map, cls) pairs, cls of shape (B, width). ``token_stride``: overlapping patches, maps of
        (H, W) / token_stride (:meth:`embed`).
        """
        if return_cls_token and not self.use_cls_token:
            raise ValueError(f"{self.config.name} runs without a class token")
        wanted = [self.layer_index(i) for i in layers]
        found, pos = self._tokens_after(images, wanted, token_stride)
        if norm:
            found = {i: self.ln_post(tokens) for i, tokens in found.items()}
        maps = [self._to_map(found[i], pos) for i in wanted]
        if return_cls_token:
            return [(m, found[i][:, 0]) for m, i in zip(maps, wanted)]
        return maps

    def dense_features_and_embedding(self, images: torch.Tensor,
                                     layers: Sequence[int] = (-1,)) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Dense maps after each block in ``layers`` (as :meth:`dense_features_at`) and the CLIP embedding
        (B, output_dim) of :meth:`forward`, from one pass through every block (Core models only)."""
        if self.attn_pool is None:
            raise ValueError(f"{self.config.name} has no pooling head (only PE-Core models do)")
        wanted = [self.layer_index(i) for i in layers]
        last = self.num_blocks - 1
        found, pos = self._tokens_after(images, [*wanted, last])
        return [self._to_map(found[i], pos) for i in wanted], self.pool(self.ln_post(found[last]))

    def _tokens_after(self, images: torch.Tensor, blocks: Sequence[int],
                      token_stride: Optional[int] = None) -> tuple[dict, TokenPositions]:
        """{block: tokens after it} for the (non-negative) ``blocks``, stopping at the deepest."""
        if not blocks:
            raise ValueError("layers is empty")
        x, pos = self.embed(images, token_stride)
        return {i: tokens for i, tokens in self.transformer.run(x, pos, max(blocks)) if i in blocks}, pos

    def dense_features(self, images: torch.Tensor, layer: int = -1, norm: bool = False) -> torch.Tensor:
        """The dense map (B, width, H/p, W/p) after block ``layer``, without the class token."""
        return self.dense_features_at(images, (layer,), norm=norm)[0]

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP embedding from ln_post-normalised tokens: attention pooling then ``proj`` (Core only)."""
        if self.attn_pool is None:
            raise ValueError(f"{self.config.name} has no pooling head (only PE-Core models do)")
        return self.attn_pool(tokens) @ self.proj.to(tokens.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """As the released models: Core gives the pooled, projected CLIP embedding (B, output_dim);
        Lang and Spatial give all last-layer tokens (B, cls + h*w, width)."""
        tokens = self.forward_features(images, norm=True)
        return self.pool(tokens) if self.attn_pool is not None else tokens
