"""Depth heads for mmsegmentation's ``DepthEstimator``: DINOv2's linear bin classifier and a DPT decoder,
both predicting (B, 1, H, W) depth bounded to [min_depth, max_depth] in metres."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.decode_heads.dpt_head import FeatureFusionBlock, ReassembleBlocks
from mmseg.models.utils import resize
from mmseg.registry import MODELS


class DepthHead(BaseDecodeHead):
    """What the depth heads share: the depth range, and losses (mmseg's ``SiLogLoss`` by default, with
    others such as :class:`~pe_dense.integrations.mmseg.depth_losses.DepthGradientLoss` summed in)
    between the prediction, resized to the ground truth, and ``gt_depth_map`` (0 = no depth).

    Inference is ``BaseDecodeHead``'s: the depth map is resized bilinearly to the padded input and the
    estimator cuts the padding off and resizes it to the image.
    """

    def __init__(self, in_channels, channels: int, *, min_depth: float = 1e-3, max_depth: float = 10.0,
                 in_index=-1, input_transform=None, loss_decode=dict(type="SiLogLoss"), align_corners: bool = False,
                 init_cfg=None):
        # BaseDecodeHead.__init__ builds a classifier and class settings that depth has no use for: like
        # mmseg's own VPDDepthHead, start from BaseModule and set what the estimator reads.
        BaseModule.__init__(self, init_cfg)
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"the depth range needs 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        self._init_inputs(in_channels, in_index, input_transform)
        self.channels = channels
        self.num_classes = self.out_channels = 1
        self.align_corners = align_corners
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        losses = loss_decode if isinstance(loss_decode, (list, tuple)) else [loss_decode]
        self.loss_decode = nn.ModuleList(MODELS.build(loss) for loss in losses)

    def extra_repr(self) -> str:
        return f"min_depth={self.min_depth}, max_depth={self.max_depth}, align_corners={self.align_corners}"

    def loss_by_feat(self, depth: torch.Tensor, batch_data_samples) -> dict:
        target = torch.stack([sample.gt_depth_map.data for sample in batch_data_samples]).to(depth)
        depth = resize(depth, size=target.shape[2:], mode="bilinear", align_corners=self.align_corners)
        losses = {}
        for loss in self.loss_decode:
            losses[loss.loss_name] = losses.get(loss.loss_name, 0) + loss(depth, target)
        return losses


def _split_cls(x):
    """(map, class token or None) of a backbone output, which is a map or a (map, class token) pair."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x, None)


@MODELS.register_module()
class LinearBinsDepthHead(DepthHead):
    """DINOv2's linear depth probe: BatchNorm and a 1x1 convolution classify each position of one or
    several backbone maps (concatenated, resized to the first map's size times ``upsample``) into
    ``num_bins`` depths spaced evenly from ``min_depth`` to ``max_depth``; the depth is their average
    weighted by the normalised scores, so it always lies in the range.

    Args:
        in_channels: channels of each selected map (a list when several are concatenated).
        in_index: which backbone outputs to use.
        num_bins: the number of depth bins (DINOv2: 256).
        bin_weights: ``"softmax"`` of the scores, or ``"linear"``: ReLU(scores) + 0.1, divided by their
            sum (DINOv2 code's default, after AdaBins).
        cls_token: concatenate each map's class token to every position (DINOv2's probe); the backbone
            must return (map, class token) pairs (``PEBackbone(output_cls_token=True)``).
        upsample: resize the maps by this factor before classifying.
        norm_cfg: the normalisation before the classifier.
        **kwargs: as :class:`DepthHead` (``min_depth``, ``max_depth``, ``loss_decode``, ...).
    """

    def __init__(self, in_channels: Sequence[int] | int, in_index: Sequence[int] | int = -1, num_bins: int = 256,
                 bin_weights: str = "softmax", cls_token: bool = False, upsample: int = 1,
                 norm_cfg: dict = dict(type="SyncBN", requires_grad=True), **kwargs):
        if bin_weights not in ("softmax", "linear"):
            raise ValueError(f"bin_weights must be 'softmax' or 'linear', got '{bin_weights}'")
        several = isinstance(in_channels, (list, tuple))
        channels = (sum(in_channels) if several else in_channels) * (2 if cls_token else 1)
        super().__init__(in_channels, channels, in_index=in_index,
                         input_transform="multiple_select" if several else None, **kwargs)
        self.num_bins, self.bin_weights, self.cls_token, self.upsample = num_bins, bin_weights, cls_token, upsample
        self.bn = build_norm_layer(norm_cfg, channels)[1]
        self.conv_depth = nn.Conv2d(channels, num_bins, kernel_size=1)
        nn.init.normal_(self.conv_depth.weight, std=0.01)
        nn.init.zeros_(self.conv_depth.bias)
        self.register_buffer("bin_depths", torch.linspace(self.min_depth, self.max_depth, num_bins), persistent=False)

    def forward(self, inputs) -> torch.Tensor:
        selected = self._transform_inputs(inputs)
        maps = []
        for x in selected if isinstance(selected, list) else [selected]:
            x, cls = _split_cls(x)
            if self.cls_token:
                if cls is None:
                    raise ValueError("cls_token=True needs (map, class token) pairs: set the backbone's "
                                     "output_cls_token=True")
                x = torch.cat([x, cls[:, :, None, None].expand_as(x)], 1)
            maps.append(x)
        size = [s * self.upsample for s in maps[0].shape[2:]]
        x = torch.cat([m if list(m.shape[2:]) == size else
                       resize(m, size=size, mode="bilinear", align_corners=self.align_corners) for m in maps], 1)
        return self.decode_bins(self.conv_depth(self.bn(x)))

    def decode_bins(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) depth from (B, num_bins, H, W) bin scores."""
        if self.bin_weights == "softmax":
            weights = scores.softmax(1)
        else:
            weights = torch.relu(scores) + 0.1
            weights = weights / weights.sum(1, keepdim=True)
        return torch.einsum("bkhw,k->bhw", weights, self.bin_depths.to(weights)).unsqueeze(1)


@MODELS.register_module()
class DPTDepthHead(DepthHead):
    """DPT's decoder for depth (Ranftl et al. 2021, as DINOv2 evaluates it): four backbone maps are
    reassembled into strides 4, 8, 16 and 32 of the patch grid (mmseg's ``ReassembleBlocks``), fused
    from coarse to fine (``FeatureFusionBlock``), and a head (3x3 conv, x2 upsampling, 3x3 conv, ReLU,
    1x1 conv) gives one channel, mapped into [min_depth, max_depth] by a sigmoid.

    Args:
        in_channels: the backbone's width (all four maps).
        channels: the fusion width (DPT: 256).
        post_process_channels: widths of the four reassembled maps.
        readout_type: the class token's use: ``"ignore"``, ``"add"`` or ``"project"`` (needs
            ``PEBackbone(output_cls_token=True)``).
        in_index: the four backbone outputs to use, shallow to deep.
        **kwargs: as :class:`DepthHead`.
    """

    def __init__(self, in_channels: int, channels: int = 256,
                 post_process_channels: Sequence[int] = (96, 192, 384, 768), readout_type: str = "ignore",
                 in_index: Sequence[int] = (0, 1, 2, 3), norm_cfg: dict = dict(type="BN"),
                 act_cfg: dict = dict(type="ReLU"), **kwargs):
        if len(in_index) != 4 or len(post_process_channels) != 4:
            raise ValueError("DPT reassembles four maps: in_index and post_process_channels need four entries")
        super().__init__([in_channels] * 4, channels, in_index=list(in_index), input_transform="multiple_select",
                         **kwargs)
        self.readout_type = readout_type
        self.reassemble_blocks = ReassembleBlocks(in_channels, list(post_process_channels), readout_type)
        self.convs = nn.ModuleList(ConvModule(c, channels, kernel_size=3, padding=1, act_cfg=None, bias=False)
                                   for c in post_process_channels)
        self.fusion_blocks = nn.ModuleList(FeatureFusionBlock(channels, act_cfg, norm_cfg) for _ in range(4))
        self.fusion_blocks[0].res_conv_unit1 = None  # the coarsest level has nothing to fuse
        self.project = ConvModule(channels, channels, kernel_size=3, padding=1, norm_cfg=norm_cfg)
        self.conv_depth = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(channels // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, kernel_size=1),
        )

    def forward(self, inputs) -> torch.Tensor:
        pairs = [_split_cls(x) for x in self._transform_inputs(inputs)]
        if self.readout_type != "ignore" and any(cls is None for _, cls in pairs):
            raise ValueError(f"readout_type='{self.readout_type}' needs (map, class token) pairs: set the "
                             "backbone's output_cls_token=True")
        levels = [conv(x) for conv, x in zip(self.convs, self.reassemble_blocks(pairs))]
        out = self.fusion_blocks[0](levels[-1])
        for fusion, skip in zip(self.fusion_blocks[1:], reversed(levels[:-1])):
            out = fusion(out, skip)
        scores = self.conv_depth(self.project(out))
        return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(scores)
