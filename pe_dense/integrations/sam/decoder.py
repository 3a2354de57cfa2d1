"""SAM's mask decoder run for many single-point prompts on one image (docs/alignment.md#sam-teacher-on-the-cpu).

segment-anything's and sam2's decoders share their structure and module names, so one implementation,
built from their own modules and weights, serves both. It gives what ``MaskDecoder.predict_masks``
gives, up to float rounding, with less work per prompt:

- The library repeats the image tokens and their positional encoding once per prompt. Until the first
  image-to-token attention the image tokens are the same for every prompt, so the first block's
  image-side projections are computed once per image (:func:`image_context`).
- After that the image tokens differ per prompt, and each cross-attention would project all N of them
  (4096 at 1024 px) to the attention width (128). A prompt has only T tokens (7 for SAM, 8 for SAM 2.1),
  so with H = 8 heads, moving the image-side projection onto the prompt tokens instead
  ((W q)·x rather than q·(W x)) leaves products over H*T = 56 or 64 columns: about half the work.
- The upscaling stays channels-last, which the tokens already are, so its LayerNorm2d is a layer norm
  over the last dimension. Its two transposed convolutions (2 x 2, stride 2) give every token its own
  4 x 4 output pixels, so it runs over bands of token rows: the upscaled features (8 KiB per token and
  prompt at 1024 px, the largest temporaries) never exist whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Tokens (of all prompts together) per band of the upscaling in :func:`_masks`: its temporaries stay a few
# MiB, which glibc keeps reusing, where whole upscaled maps (8 MiB per prompt at 1024 px) went back to the
# OS when freed and were faulted in again, page by page, on every call.
UPSCALE_TOKENS = 2048


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H*d) -> (B, H, L, d), as the library's ``Attention._separate_heads``."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def image_context(prompt_encoder, decoder, embeddings: torch.Tensor, high_res=()) -> dict:
    """What decoding needs from images (B, C, h, w) that no prompt changes, computed once per image:
    image tokens (B, N, C) with the no-mask embedding a point prompt adds everywhere, their positional
    encoding, the first block's projections of them, and sam2's high-resolution features channels-last."""
    pe = prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)
    tokens = (embeddings + prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1)).flatten(2).transpose(1, 2)
    tokens = tokens.contiguous()
    first = decoder.transformer.layers[0]
    t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
    return {"tokens": tokens, "pe": pe, "size": tuple(embeddings.shape[-2:]),
            "t2i_k": _heads(t2i.k_proj(tokens + pe), t2i.num_heads),
            "t2i_v": _heads(t2i.v_proj(tokens), t2i.num_heads),
            "i2t_q": _heads(i2t.q_proj(tokens + pe), i2t.num_heads),
            "high_res": [f.contiguous(memory_format=torch.channels_last) for f in high_res]}


def prompt_bytes(context: dict) -> int:
    """Bytes of the largest tensors one prompt adds to a decoder call: its own image tokens (N, C)."""
    return context["tokens"][0].numel() * context["tokens"].element_size()


def decode_points(prompt_encoder, decoder, context: dict, index: int, points: torch.Tensor):
    """Mask logits (K, M, 4h, 4w) and predicted IoUs (K, M) of all M mask tokens, as
    ``decoder.predict_masks`` gives them, for K single positive points (K, 2) on image ``index``."""
    labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
    sparse, _ = prompt_encoder(points=(points[:, None], labels), boxes=None, masks=None)
    output_tokens = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    first = int(getattr(decoder, "pred_obj_scores", False))  # SAM 2.1's object-score token comes first
    if first:
        output_tokens.insert(0, decoder.obj_score_token.weight)
    tokens = torch.cat([torch.cat(output_tokens).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    image = _one_image(context, index)

    queries, keys = _two_way_transformer(decoder.transformer, tokens, image)
    mask_tokens = queries[:, first + 1: first + 1 + decoder.num_mask_tokens]
    hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
    return _masks(decoder, keys, hyper, image), decoder.iou_prediction_head(queries[:, first])


def _one_image(context: dict, index: int) -> dict:
    image = {key: context[key][index: index + 1] for key in ("tokens", "t2i_k", "t2i_v", "i2t_q")}
    return {**context, **image, "high_res": [f[index: index + 1] for f in context["high_res"]]}


def select_masks(decoder, masks: torch.Tensor, iou: torch.Tensor, multimask: bool):
    """What ``decoder.forward`` returns from all mask tokens' outputs: the three multimask outputs, or the
    single-mask output (which SAM 2.1 replaces by its best multimask output where it is unstable)."""
    if multimask:
        return masks[:, 1:], iou[:, 1:]
    if getattr(decoder, "dynamic_multimask_via_stability", False) and not decoder.training:
        return decoder._dynamic_multimask_via_stability(masks, iou)
    return masks[:, :1], iou[:, :1]


def _two_way_transformer(transformer, tokens: torch.Tensor, image: dict):
    """``transformer(src, pos, tokens)`` for K prompts' tokens (K, T, C) on one image: (queries, keys)."""
    first, *rest = transformer.layers
    queries, keys = _first_block(first, tokens, image)
    for layer in rest:
        queries, keys = _block(layer, queries, keys, tokens, image["pe"])
    attn = _tokens_to_image(transformer.final_attn_token_to_image, queries + tokens, keys + image["pe"], keys)
    return transformer.norm_final_attn(queries + attn), keys


def _first_block(layer, tokens: torch.Tensor, image: dict):
    """The first ``TwoWayAttentionBlock`` (no positional encoding in its self-attention), whose image
    tokens are the same for every prompt: their projections come from :func:`image_context`."""
    queries = layer.norm1(layer.self_attn(q=tokens, k=tokens, v=tokens))
    t2i = layer.cross_attn_token_to_image
    # All prompts' tokens are queries of one attention over the shared image tokens.
    q = _heads(t2i.q_proj(queries + tokens).flatten(0, 1)[None], t2i.num_heads)
    attn = F.scaled_dot_product_attention(q, image["t2i_k"], image["t2i_v"])
    queries = layer.norm2(queries + t2i.out_proj(attn.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[1], -1)))
    queries = layer.norm3(queries + layer.mlp(queries))
    attn = _image_to_tokens(layer.cross_attn_image_to_token, queries + tokens, queries, image_q=image["i2t_q"])
    return queries, layer.norm4(attn + image["tokens"])


def _block(layer, queries, keys, query_pe, key_pe):
    """``TwoWayAttentionBlock.forward`` with per-prompt image tokens ``keys`` (K, N, C)."""
    q = queries + query_pe
    queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
    k = keys + key_pe
    queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = layer.norm3(queries + layer.mlp(queries))
    attn = _image_to_tokens(layer.cross_attn_image_to_token, queries + query_pe, queries, image=k)
    return queries, layer.norm4(keys + attn)


def _tokens_to_image(attn, q, k, v):
    """``attn(q=q, k=k, v=v)`` for prompt tokens q (K, T, C) and per-prompt image tokens k, v (K, N, C),
    the image-side projections folded into the prompt tokens: q·(W_k x + b_k) = (W_kᵀ q)·x + q·b_k, whose
    last term is the same for every image token (softmax drops it), and Σ p (W_v x + b_v) = W_v (Σ p x)
    + b_v, as the attention weights p sum to 1."""
    heads = attn.num_heads
    q = _heads(attn.q_proj(q), heads)  # (K, H, T, d)
    d = q.shape[-1]
    q = q @ (attn.k_proj.weight.unflatten(0, (heads, d)) * d**-0.5)  # (K, H, T, C)
    probs = torch.softmax(q.flatten(1, 2) @ k.transpose(1, 2), dim=-1)  # (K, H*T, N)
    pooled = (probs @ v).unflatten(1, (heads, -1))  # (K, H, T, C)
    out = pooled @ attn.v_proj.weight.unflatten(0, (heads, d)).transpose(1, 2) + attn.v_proj.bias.view(heads, 1, d)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _image_to_tokens(attn, k, v, image=None, image_q=None):
    """``attn(q=image, k=k, v=v)``: image tokens (K, N, C) attending to prompt tokens k, v (K, T, C).

    Given ``image_q`` instead, the image's projected queries split into heads (1, H, N, d), the image is
    the same for all prompts. Otherwise the query projection is folded into the prompt tokens:
    (W_q x + b_q)·k = x·(W_qᵀ k) + b_q·k. The output projection is folded into the values either way:
    out_proj mixes the heads' outputs Σ_t p_t v_t, which is Σ_(h,t) p_ht (W_o,h v_ht).
    """
    heads = attn.num_heads
    prompts, length = k.shape[:2]
    k = _heads(attn.k_proj(k), heads)  # (K, H, T, d)
    d = k.shape[-1]
    k = k * d**-0.5
    # Scores as (K, H, T, N): softmax over the few tokens then runs along N, much faster than over a last dim of T.
    if image_q is not None:
        scores = (k.transpose(0, 1).flatten(1, 2) @ image_q[0].transpose(1, 2)).unflatten(1, (prompts, length))
        scores = scores.transpose(0, 1)  # (K, H, T, N)
    else:
        folded = (k @ attn.q_proj.weight.unflatten(0, (heads, d))).flatten(1, 2)  # (K, H*T, C)
        bias = (k @ attn.q_proj.bias.view(heads, d, 1)).flatten(1)  # (K, H*T)
        scores = torch.baddbmm(bias[..., None], folded, image.transpose(1, 2)).unflatten(1, (heads, length))
    probs = scores.softmax(2).flatten(1, 2)  # (K, H*T, N)
    out_weight = attn.out_proj.weight.unflatten(1, (heads, d)).permute(1, 2, 0)  # (H, d, C)
    values = (_heads(attn.v_proj(v), heads) @ out_weight).flatten(1, 2)  # (K, H*T, C)
    return torch.baddbmm(attn.out_proj.bias, probs.transpose(1, 2), values)


def _masks(decoder, keys: torch.Tensor, hyper: torch.Tensor, image: dict) -> torch.Tensor:
    """Mask logits (K, M, 4h, 4w): ``hyper`` (K, M, C/8) times ``decoder.output_upscaling`` of the image
    tokens ``keys`` (K, N, C), with sam2's high-resolution features added as its decoder adds them.

    Band by band of token rows (UPSCALE_TOKENS tokens of all prompts together), every tensor channels-last."""
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    high_res = image["high_res"]
    (h, w), prompts = image["size"], keys.shape[0]
    grid = keys.unflatten(1, (h, w))
    masks = keys.new_empty(prompts, hyper.shape[1], 4 * h, 4 * w)
    rows = max(1, UPSCALE_TOKENS // (prompts * w))
    for top in range(0, h, rows):
        bottom = min(top + rows, h)
        x = dc1(grid[:, top:bottom].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))
        if high_res:
            x = x + high_res[1][..., 2 * top: 2 * bottom, :]
        x = act1(F.layer_norm(x.permute(0, 2, 3, 1), ln1.weight.shape, ln1.weight, ln1.bias, ln1.eps))
        x = dc2(x.permute(0, 3, 1, 2))
        if high_res:
            x = x + high_res[0][..., 4 * top: 4 * bottom, :]
        pixels = act2(x).permute(0, 2, 3, 1).flatten(1, 2)  # (K, pixels, C/8), a view of channels-last memory
        masks[..., 4 * top: 4 * bottom, :] = (hyper @ pixels.transpose(1, 2)).unflatten(2, (-1, 4 * w))
    return masks
