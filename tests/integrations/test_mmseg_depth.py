"""Depth with mmsegmentation, piece by piece: bin decoding, the heads' ranges and shapes, the class token,
the gradient loss, mmseg's DepthMetric against the formulas, checked depth loading, and every config in
configs/depth building, training a step and predicting."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEPTH_SCENES_IMAGES, mmseg_data_options
from PIL import Image

pytestmark = pytest.mark.suite("mmseg")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (REPO / "configs/depth").rglob("*.py") if p.parent.name != "_base_")


def linear_head(**kwargs):
    from pe_dense.integrations.mmseg import LinearBinsDepthHead

    options = dict(in_channels=8, num_bins=5, min_depth=0.5, max_depth=4.5, norm_cfg=dict(type="BN"))
    return LinearBinsDepthHead(**{**options, **kwargs})


@pytest.mark.parametrize("bin_weights", ["softmax", "linear"])
def test_bin_decoding_equals_a_direct_computation(bin_weights):
    head = linear_head(bin_weights=bin_weights)
    scores = torch.randn(2, 5, 3, 4, dtype=torch.float64) * 3
    depth = head.decode_bins(scores).numpy()
    s = scores.numpy()
    if bin_weights == "softmax":
        weights = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    else:
        weights = np.maximum(s, 0) + 0.1
        weights /= weights.sum(1, keepdims=True)
    centres = np.array([0.5, 1.5, 2.5, 3.5, 4.5])  # 5 bins spaced evenly over [0.5, 4.5]
    expected = sum(weights[:, k] * centres[k] for k in range(5))[:, None]
    np.testing.assert_allclose(depth, expected, rtol=1e-12)


def test_linear_head_with_class_token_is_batchnorm_and_a_1x1_conv():
    head = linear_head(in_channels=[4, 4], in_index=[0, 1], cls_token=True, upsample=2).eval()
    head.bn.running_mean.normal_()
    head.bn.running_var.uniform_(0.5, 2)
    maps = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)]
    tokens = [torch.randn(2, 4), torch.randn(2, 4)]
    depth = head(list(zip(maps, tokens)))
    features = torch.cat([torch.cat([m, t[:, :, None, None].expand_as(m)], 1) for m, t in zip(maps, tokens)], 1)
    features = torch.nn.functional.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)
    expected = head.decode_bins(head.conv_depth(head.bn(features)))
    torch.testing.assert_close(depth, expected)
    assert depth.shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="output_cls_token"):
        head(maps)


@pytest.mark.parametrize("kind", ["linear", "dpt"])
def test_predictions_are_b1hw_inside_the_depth_range_even_for_extreme_features(kind):
    from pe_dense.integrations.mmseg import DPTDepthHead

    if kind == "linear":
        head = linear_head(in_channels=16)
    else:
        head = DPTDepthHead(in_channels=16, channels=8, post_process_channels=[4, 8, 16, 16], min_depth=0.5,
                            max_depth=4.5)
    head.eval()
    for scale in (1.0, 1e4):
        maps = [torch.randn(3, 16, 4, 6) * scale for _ in range(4)]
        depth = head(maps)
        assert depth.shape == ((3, 1, 4, 6) if kind == "linear" else (3, 1, 64, 96))  # DPT: x16 an even grid
        assert depth.min() >= 0.5 and depth.max() <= 4.5


def test_dpt_project_readout_needs_class_tokens():
    from pe_dense.integrations.mmseg import DPTDepthHead

    head = DPTDepthHead(in_channels=16, channels=8, post_process_channels=[4, 8, 16, 16], readout_type="project").eval()
    maps = [torch.randn(1, 16, 2, 2) for _ in range(4)]
    with pytest.raises(ValueError, match="output_cls_token"):
        head(maps)
    assert head([(m, torch.randn(1, 16)) for m in maps]).shape == (1, 1, 32, 32)


def test_backbone_returns_class_tokens_where_the_model_has_one():
    from pe_dense.integrations.mmseg import PEBackbone

    backbone = PEBackbone("PE-Spatial-T16-512", keep_blocks=3, out_indices=(0, 2), output_cls_token=True).eval()
    images = torch.randn(2, 3, 64, 48)
    pairs = backbone(images)
    expected = backbone.encoder.dense_features_at(images, (0, 2), return_cls_token=True)
    for (grid, cls), (grid_ref, cls_ref) in zip(pairs, expected):
        assert grid.shape == (2, 192, 4, 3) and cls.shape == (2, 192)
        torch.testing.assert_close(grid, grid_ref)
        torch.testing.assert_close(cls, cls_ref)
    with pytest.raises(ValueError, match="no class token"):
        PEBackbone("PE-Spatial-G14-448", keep_blocks=1, output_cls_token=True)


def test_gradient_loss_ignores_scale_and_missing_depth_and_matches_the_formula():
    from pe_dense.integrations.mmseg import DepthGradientLoss

    torch.manual_seed(0)
    target = torch.rand(2, 1, 16, 20) * 5 + 0.5
    target[:, :, :3] = 0  # no ground truth in the top rows
    pred = target * 1.7  # right up to scale
    pred[:, :, :3] = torch.rand(2, 1, 3, 20) * 9 + 0.1  # anything where there is no ground truth
    loss = DepthGradientLoss(scales=3, loss_weight=1.0)
    assert loss(pred, target).item() < 1e-6
    # one scale, against numpy central differences over pixels whose 3x3 neighbourhood has depth
    pred = torch.rand(1, 1, 8, 9) + 1
    target = torch.rand(1, 1, 8, 9) + 1
    target[0, 0, 4, 4] = 0
    r = (np.log(pred.numpy()) - np.log(target.numpy()))[0, 0] * (target.numpy()[0, 0] > 0)
    padded = np.pad(r, 1, mode="edge")
    gx = (padded[1:-1, 2:] - padded[1:-1, :-2]) / 2
    gy = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / 2
    inside = np.ones_like(r, bool)
    inside[3:6, 3:6] = False  # the pixel without depth and its neighbours
    expected = (np.abs(gx) + np.abs(gy))[inside].sum() / inside.sum()
    got = DepthGradientLoss(scales=1, loss_weight=2.0)(pred, target).item()
    assert got == pytest.approx(2.0 * expected, rel=1e-5)


def test_depth_metric_equals_the_formulas():
    from mmseg.evaluation.metrics import DepthMetric

    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(2):
        gt = rng.uniform(0.5, 9.5, (480, 640)).astype(np.float32)
        gt[rng.random(gt.shape) < 0.1] = 0  # no depth
        gt[:5, :5] = 12.0  # beyond the 10 m range
        gts.append(gt)
        preds.append((gt.clip(0.1) * rng.uniform(0.7, 1.4, gt.shape)).astype(np.float32))
    metric = DepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0, crop_type="nyu_crop")
    metric.process({}, [{"pred_depth_map": {"data": torch.from_numpy(p)[None]},
                         "gt_depth_map": {"data": torch.from_numpy(g)[None]}, "img_path": "x.jpg"}
                        for p, g in zip(preds, gts)])
    got = metric.compute_metrics(metric.results)
    per_image = []
    for gt, pred in zip(gts, preds):
        mask = np.zeros(gt.shape, bool)
        mask[45:471, 41:601] = True  # Eigen's crop
        mask &= (gt > 1e-3) & (gt < 10)
        g, p = gt[mask].astype(np.float64), pred[mask].astype(np.float64)
        ratio = np.maximum(g / p, p / g)
        log_diff = np.log(p) - np.log(g)
        per_image.append({
            "d1": (ratio < 1.25).mean(), "d2": (ratio < 1.25**2).mean(), "d3": (ratio < 1.25**3).mean(),
            "abs_rel": (np.abs(p - g) / g).mean(), "sq_rel": ((p - g) ** 2 / g).mean(),
            "rmse": np.sqrt(((p - g) ** 2).mean()), "rmse_log": np.sqrt((log_diff**2).mean()),
            "log10": np.abs(np.log10(p) - np.log10(g)).mean(),
            "silog": np.sqrt((log_diff**2).mean() - 0.5 * log_diff.mean() ** 2)})
    for key in DepthMetric.METRICS:
        assert got[key] == pytest.approx(np.mean([m[key] for m in per_image]), rel=1e-4), key


def _depth_sample(tmp_path, depth, name="d.png", shape=(6, 8)):
    path = tmp_path / name
    if depth is not None:
        Image.fromarray(depth).save(path)
    return {"depth_map_path": str(path), "img_path": str(tmp_path / "i.jpg"), "ori_shape": shape, "seg_fields": []}


def test_checked_depth_loading_reads_16_bit_millimetres(tmp_path):
    from pe_dense.integrations.mmseg import LoadCheckedDepth

    raw = np.arange(48, dtype=np.uint16).reshape(6, 8) * 200
    results = LoadCheckedDepth(depth_rescale_factor=1e-3, max_depth=10).transform(_depth_sample(tmp_path, raw))
    np.testing.assert_allclose(results["gt_depth_map"], raw / 1000, rtol=1e-6)
    assert results["seg_fields"] == ["gt_depth_map"]


@pytest.mark.parametrize("case", ["8-bit", "rgb", "other size", "no valid depth", "beyond max depth", "missing",
                                  "not an image"])
def test_bad_depth_maps_are_refused_naming_the_file(case, tmp_path):
    import cv2

    from pe_dense.integrations.mmseg import LoadCheckedDepth, SegmentationDataError

    depth = {"8-bit": np.full((6, 8), 30, np.uint8), "other size": np.full((5, 8), 3000, np.uint16),
             "no valid depth": np.zeros((6, 8), np.uint16), "beyond max depth": np.full((6, 8), 12000, np.uint16),
             "rgb": None, "missing": None, "not an image": None}[case]
    sample = _depth_sample(tmp_path, depth)
    if case == "rgb":
        cv2.imwrite(sample["depth_map_path"], np.full((6, 8, 3), 3000, np.uint16))
    if case == "not an image":
        Path(sample["depth_map_path"]).write_bytes(b"PNG? no")
    message = {"8-bit": "8-bit image with 1 channel", "rgb": "16-bit image with 3 channel", "other size": "5 pixels",
               "no valid depth": "no valid depth", "beyond max depth": "below 10", "missing": "cannot read",
               "not an image": "cannot read"}[case]
    with pytest.raises(SegmentationDataError, match=message) as error:
        LoadCheckedDepth(depth_rescale_factor=1e-3, max_depth=10).transform(sample)
    assert sample["depth_map_path"] in str(error.value)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    """The built-in depth scenes at NYU's 480x640 in NYU's folders (for the NYU configs: real data in that
    layout drops in the same way)."""
    from pe_dense.data.depth_scenes import write_depth_split

    root = tmp_path_factory.mktemp("nyu")
    for split in ("train", "test"):
        write_depth_split(root, split, num_images=2, size=(480, 640))
    return root


def _synthetic_depth_batch(height: int, width: int, count: int = 2):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(count):
        sample = SegDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width)))
        sample.gt_depth_map = PixelData(data=torch.rand(1, height, width) * 8 + 0.5)
        samples.append(sample)
    return dict(inputs=[torch.randint(0, 256, (3, height, width), dtype=torch.uint8) for _ in range(count)],
                data_samples=samples)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_trains_predicts_and_reads_its_data(config_path, depth_scenes_root, nyu_root):
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(config_path))
    scenes = "scenes" in config_path.parts
    four = len(cfg.model.backbone.out_indices) == 4
    cfg.merge_from_dict({"model.backbone.weights": None, "model.backbone.keep_blocks": 2,  # G and L at reduced depth
                         "model.backbone.out_indices": (0, 1, 1, 1) if four else (-1,),
                         **(mmseg_data_options(depth_scenes_root, DEPTH_SCENES_IMAGES) if scenes
                            else mmseg_data_options(nyu_root))})
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    model.init_weights()
    encoder = model.backbone.encoder
    assert encoder.config.name == cfg.model.backbone.model and encoder.num_blocks == 2
    assert cfg.val_evaluator.type == "DepthMetric" and cfg.val_evaluator.max_depth_eval == 10.0
    size = 4 * encoder.patch_size
    losses = model.train_step(_synthetic_depth_batch(size, size), build_optim_wrapper(model, cfg.optim_wrapper))
    assert "decode.loss_silog" in losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        prediction = model.test_step(_synthetic_depth_batch(size - 3, size + 5, count=1))[0]
    depth = prediction.pred_depth_map.data
    head = model.decode_head
    assert depth.shape == (1, size - 3, size + 5) and head.min_depth <= depth.min() <= depth.max() <= head.max_depth
    for loader in ("train_dataloader", "val_dataloader"):
        batch = next(iter(Runner.build_dataloader(cfg[loader])))
        for image, sample in zip(batch["inputs"], batch["data_samples"]):
            gt = sample.gt_depth_map.data
            assert gt.shape[1:] == (image.shape[1:] if loader == "train_dataloader" else sample.ori_shape)
            assert 0 < gt.max() < 10
