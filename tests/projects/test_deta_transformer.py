"""projects/DETA's detectron2-free parts: the deformable transformer (on pe_dense's compiled
deformable attention), position embeddings, proposal selection, NMS and soft-NMS."""

import importlib
import math

import pytest
import torch
from torchvision.ops import batched_nms

from pe_deta.postprocess import detections, soft_nms
from pe_deta.transformer import (
    MLP,
    DeformableTransformer,
    box_sine_embedding,
    inverse_sigmoid,
    mask_sine_embedding,
)


def small_transformer(**options):
    torch.manual_seed(0)
    kwargs = dict(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128,
                  num_feature_levels=3, num_queries=20)
    return DeformableTransformer(**{**kwargs, **options})


def inputs(batch=2, sizes=((16, 20), (8, 10), (4, 5)), d=64, pad_right=4):
    torch.manual_seed(1)
    srcs = [torch.randn(batch, d, h, w) for h, w in sizes]
    masks = []
    for h, w in sizes:
        m = torch.zeros(batch, h, w, dtype=torch.bool)
        m[1, :, w - max(1, pad_right * w // sizes[0][1]):] = True  # the second image is padded on the right
        masks.append(m)
    pos = [mask_sine_embedding(m, d // 2) for m in masks]
    return srcs, masks, pos


def heads(transformer, num_classes=3):
    d, n = transformer.d_model, transformer.num_decoder_layers + 1
    return (torch.nn.ModuleList(torch.nn.Linear(d, num_classes) for _ in range(n)),
            torch.nn.ModuleList(MLP(d, d, 4, 3) for _ in range(n)))


def test_forward_shapes_and_boxes_in_range():
    transformer = small_transformer()
    srcs, masks, pos = inputs()
    out = transformer(srcs, masks, pos, *heads(transformer))
    tokens = sum(s.shape[-2] * s.shape[-1] for s in srcs)
    assert out.hidden_states.shape == (2, 2, 20, 64)
    assert out.init_reference.shape == out.inter_references.shape[1:] == (2, 20, 4)
    assert out.enc_logits.shape == (2, tokens, 3) and out.enc_boxes_unact.shape == out.anchors.shape == (2, tokens, 4)
    assert (out.inter_references > 0).all() and (out.inter_references < 1).all()
    assert not out.init_reference.requires_grad and not out.inter_references.requires_grad  # detached, as released


@pytest.mark.suite("ops_kernels")
def test_the_compiled_kernel_runs_not_the_fallback(monkeypatch):
    module = importlib.import_module("pe_dense.ops.ms_deform_attn")
    calls = {"kernel": 0}
    original = module._MSDeformAttnFunction.apply

    def counting(*args):
        calls["kernel"] += 1
        return original(*args)

    monkeypatch.setattr(module._MSDeformAttnFunction, "apply", counting)
    monkeypatch.setattr(module, "ms_deform_attn_reference", lambda *a, **k: pytest.fail("fallback used"))
    transformer = small_transformer()
    out = transformer(*inputs(), *heads(transformer))
    out.hidden_states.sum().backward()
    assert calls["kernel"] == 2 + 2  # every encoder and decoder layer


def test_padding_does_not_change_the_encoding_of_the_image():
    """An image padded on the right is encoded as the same image unpadded (valid ratios, masked values).
    (Proposals may differ: as in the released code, padded positions keep a finite score.)"""
    transformer = small_transformer().eval()
    torch.manual_seed(3)
    sizes, padded_sizes = ((8, 8), (4, 4), (2, 2)), ((8, 12), (4, 6), (2, 3))
    srcs = [torch.randn(1, 64, h, w) for h, w in sizes]
    masks = [torch.zeros(1, h, w, dtype=torch.bool) for h, w in sizes]
    padded = [torch.nn.functional.pad(s, (0, pw - s.shape[-1])) for s, (_, pw) in zip(srcs, padded_sizes)]
    padded_masks = [torch.ones(1, h, w, dtype=torch.bool) for h, w in padded_sizes]
    for m, (h, w) in zip(padded_masks, sizes):
        m[:, :h, :w] = False
    with torch.no_grad():
        plain, _ = transformer.encode(srcs, masks, [mask_sine_embedding(m, 32) for m in masks])
        pad, levels = transformer.encode(padded, padded_masks, [mask_sine_embedding(m, 32) for m in padded_masks])
    torch.testing.assert_close(pad[0, ~levels.padding[0]], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(levels.valid_ratios[0], torch.tensor([[8 / 12, 1.0], [4 / 6, 1.0], [2 / 3, 1.0]]))


def test_mask_sine_embedding_follows_detr_formula():
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, :, 3] = True  # last column padded
    pos = mask_sine_embedding(mask, num_feats=8)
    assert pos.shape == (1, 16, 3, 4)
    y, x = 1, 2  # (row, column) of a valid position: cumulative counts 2 and 3 of 3 valid each way
    y_embed = (2 - 0.5) / (3 + 1e-6) * 2 * math.pi
    x_embed = (3 - 0.5) / (3 + 1e-6) * 2 * math.pi
    expected = []
    for value in (y_embed, x_embed):
        for i in range(8):
            t = 10000 ** (2 * (i // 2) / 8)
            expected.append(math.sin(value / t) if i % 2 == 0 else math.cos(value / t))
    # the layout interleaves sin and cos pairs: (sin f0, cos f1, sin f2, ...) per half
    got = pos[0, :, y, x].tolist()
    reordered = []
    for half in (expected[:8], expected[8:]):
        reordered += [v for pair in zip(half[0::2], half[1::2]) for v in pair]
    assert got == pytest.approx(reordered, abs=1e-6)


def test_box_sine_embedding_and_inverse_sigmoid():
    boxes = torch.tensor([[[0.2, 0.4, 0.1, 0.3]]])
    emb = box_sine_embedding(inverse_sigmoid(boxes), num_feats=4)
    assert emb.shape == (1, 1, 16)
    # first coordinate, first frequency: sin(0.2 * 2 pi)
    assert emb[0, 0, 0].item() == pytest.approx(math.sin(0.2 * 2 * math.pi), abs=1e-5)
    assert inverse_sigmoid(torch.tensor([0.0, 1.0])).isfinite().all()


def test_proposals_are_shared_between_levels_after_nms():
    """Per-level top-k, NMS, then Q / L proposals from each level in score order, the rest by score."""
    transformer = small_transformer(num_queries=4, num_feature_levels=2, proposal_pre_nms_topk=3)
    level_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    # disjoint boxes, except that box 1 sits on box 0 (suppressed by NMS at 0.9)
    centres = torch.tensor([[0.1, 0.1], [0.1, 0.1], [0.3, 0.3], [0.5, 0.5], [0.7, 0.7], [0.9, 0.9]])
    boxes = torch.cat([centres, torch.full((6, 2), 0.05)], 1)[None]
    chosen = transformer.select_proposals(logits, inverse_sigmoid(boxes), level_ids)
    assert chosen.tolist() == [[0, 2, 3, 4]]  # two per level; 1 was suppressed

    plain = small_transformer(num_queries=4, num_feature_levels=2, proposals_per_level=False)
    assert plain.select_proposals(logits, inverse_sigmoid(boxes), level_ids).tolist() == [[0, 1, 2, 3]]


def test_proposals_fall_back_to_top_k_when_nms_leaves_too_few():
    transformer = small_transformer(num_queries=3, num_feature_levels=1)
    boxes = inverse_sigmoid(torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 4]))  # all the same box
    chosen = transformer.select_proposals(torch.tensor([[1.0, 4.0, 3.0, 2.0]]), boxes, torch.zeros(4, dtype=torch.long))
    assert chosen.tolist() == [[1, 2, 3]]


# ------------------------------------------------------------------ inference
def test_soft_nms_decays_overlaps_by_the_released_rules():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 8], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 0, 0, 1])
    keep, new = soft_nms(boxes, scores, classes, iou_threshold=0.7, method="quad", quad_scale=0.5)
    # box 1 overlaps box 0 with IoU 0.8 > 0.7: its score becomes 0.8 * (1 - 0.8) ** 0.5; box 3 is another class
    assert keep.tolist() == [0, 2, 3, 1]
    assert new.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.8 * 0.2**0.5], abs=1e-6)
    keep, new = soft_nms(boxes, scores, classes, iou_threshold=0.7, method="linear")
    assert new[-1].item() == pytest.approx(0.8 * 0.2, abs=1e-6)
    keep, new = soft_nms(boxes, scores, classes, iou_threshold=0.7, method="hard")
    assert sorted(keep.tolist()) == sorted(batched_nms(boxes, scores, classes, 0.7).tolist())
    with pytest.raises(ValueError, match="unknown soft-NMS method"):
        soft_nms(boxes, scores, classes, method="cubic")
    empty = soft_nms(boxes[:0], scores[:0], classes[:0])
    assert empty[0].numel() == empty[1].numel() == 0


@pytest.mark.parametrize("soft", [False, True])
def test_detections_keep_at_most_the_limit_in_pixels(soft):
    torch.manual_seed(0)
    logits = torch.randn(300, 5)
    boxes = torch.cat([0.25 + 0.5 * torch.rand(300, 2), 0.5 * torch.rand(300, 2)], 1)  # inside the image
    xyxy, scores, classes = detections(logits, boxes, (120, 200), max_detections=100, use_soft_nms=soft)
    assert len(xyxy) == len(scores) == len(classes) == 100
    assert (scores[:-1] >= scores[1:]).all() and classes.max() < 5
    assert xyxy[:, 0::2].max() <= 200 * 1.001 and xyxy[:, 1::2].max() <= 120 * 1.001
    # the best detection is the best (query, class) pair
    best = logits.sigmoid().flatten().argmax()
    assert scores[0].item() == pytest.approx(logits.sigmoid().flatten()[best].item())
    assert classes[0].item() == best.item() % 5
