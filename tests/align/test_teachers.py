"""The alignment teachers: the PE feature teacher against the encoder's own intermediate layers,
and the SAM correspondence teacher against segment-anything's and sam2's own predictors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pe_dense.align.teachers import (
    FeatureTeacher,
    SAMCorrespondenceTeacher,
    default_teacher_layer,
    pe_input,
    point_grid,
)
from pe_dense.integrations.sam import build_segmenter
from pe_dense.models import build_encoder, get_config
from pe_dense.models.checkpoint import CheckpointError

SIZE = 128  # SAM input side in these tests: an 8 x 8 image embedding, 32 x 32 mask logits
GRID = (8, 8)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


def test_default_teacher_layer_is_41_for_G_and_the_same_relative_depth_elsewhere():
    assert default_teacher_layer(get_config("PE-Core-G14-448")) == 41
    assert default_teacher_layer(get_config("PE-Core-L14-336")) == 20
    assert default_teacher_layer(get_config("PE-Core-T16-384")) == 10


def test_feature_teacher_gives_the_encoders_layer_tokens(images):
    torch.manual_seed(0)
    encoder = build_encoder(get_config("PE-Core-T16-384").replace(depth=4))
    reference = build_encoder(encoder.config)
    reference.load_state_dict(encoder.state_dict())
    teacher = FeatureTeacher(encoder, layer=2, image_size=64)
    targets = teacher(images)
    assert targets.shape == (2, 16, 192)
    expected = reference.dense_features(pe_input(images, 64), layer=2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(targets, expected)
    assert teacher.encoder.num_blocks == 3  # the blocks after the layer are dropped
    assert torch.equal(teacher(images), targets)  # deterministic
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.encoder.training


def test_feature_teacher_default_layer_and_bad_size():
    encoder = build_encoder(get_config("PE-Core-T16-384").replace(depth=12))
    assert FeatureTeacher(encoder).layer == 10
    with pytest.raises(ValueError, match="multiple of the patch size"):
        FeatureTeacher(build_encoder("PE-Core-T16-384", keep_blocks=2), layer=1, image_size=100)


def test_point_grid_is_sams_automatic_mask_generator_grid():
    pytest.importorskip("segment_anything")
    from segment_anything.utils.amg import build_point_grid

    expected = torch.from_numpy(build_point_grid(5) * 640).float()
    torch.testing.assert_close(point_grid(5, 640), expected)


def _token_targets(low_res_logits, grid):
    return F.interpolate(low_res_logits.float(), size=grid, mode="bilinear", align_corners=False,
                         antialias=True).flatten(1).T


@pytest.fixture(scope="module")
def sam_vit_b():
    torch.manual_seed(0)
    return build_segmenter("segment_anything", "vit_b", image_size=SIZE)


@pytest.fixture(scope="module")
def sam2_hiera_t():
    torch.manual_seed(0)
    return build_segmenter("sam2", "hiera_t", image_size=SIZE)


@pytest.mark.suite("segment_anything")
@pytest.mark.parametrize("mask", ["single", "best"])
def test_sam_vit_b_targets_equal_sams_own_predictor(sam_vit_b, images, mask):
    from segment_anything import SamPredictor

    teacher = SAMCorrespondenceTeacher(sam_vit_b, points_per_side=4, points_per_batch=5, mask=mask)
    targets = teacher(images, GRID)
    assert targets.shape == (2, 64, 16)
    assert torch.equal(teacher(images, GRID), targets)

    predictor = SamPredictor(sam_vit_b.sam)
    points = point_grid(4, SIZE)
    for i in range(2):
        resized = F.interpolate(images[i: i + 1], size=(SIZE, SIZE), mode="bilinear", antialias=True) * 255
        predictor.set_torch_image(resized, (SIZE, SIZE))
        _, iou, low_res = predictor.predict_torch(points[:, None], torch.ones(16, 1), multimask_output=mask == "best")
        if mask == "best":
            low_res = low_res[torch.arange(16), iou.argmax(1)][:, None]
        torch.testing.assert_close(targets[i], _token_targets(low_res, GRID), atol=1e-4, rtol=1e-4)


@pytest.mark.suite("sam2")
@pytest.mark.parametrize("mask", ["single", "best"])
def test_sam2_hiera_t_targets_equal_sam2s_own_predictor(sam2_hiera_t, images, mask):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    teacher = SAMCorrespondenceTeacher(sam2_hiera_t, points_per_side=4, points_per_batch=16, mask=mask)
    square = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    pixels = (square * 255).round().byte()
    targets = teacher(pixels.float() / 255, GRID)  # the predictor takes uint8 pictures: feed both the same
    assert targets.shape == (2, 64, 16)
    assert torch.equal(teacher(pixels.float() / 255, GRID), targets)

    predictor = SAM2ImagePredictor(sam2_hiera_t.model)
    predictor._bb_feat_sizes = [(SIZE // 4,) * 2, (SIZE // 8,) * 2, (SIZE // 16,) * 2]  # it assumes 1024
    points = point_grid(4, SIZE).numpy() / SIZE  # with normalize_coords=False it takes coordinates in [0, 1]
    for i in range(2):
        predictor.set_image(pixels[i].permute(1, 2, 0).numpy())
        _, iou, low_res = predictor.predict(points[:, None], np.ones((16, 1)), multimask_output=mask == "best",
                                            return_logits=True, normalize_coords=False)
        if mask == "best":
            low_res = low_res[np.arange(16), iou.argmax(1)][:, None]
        torch.testing.assert_close(targets[i], _token_targets(torch.as_tensor(low_res), GRID), atol=1e-4, rtol=1e-4)


@pytest.mark.suite("sam2")
@pytest.mark.suite("segment_anything")
@pytest.mark.parametrize("family", ["segment_anything", "sam2"])
def test_batched_decoding_equals_one_point_per_call(family, sam_vit_b, sam2_hiera_t, images):
    segmenter = sam_vit_b if family == "segment_anything" else sam2_hiera_t
    batched = SAMCorrespondenceTeacher(segmenter, points_per_side=6, points_per_batch=36)(images, GRID)
    looped = SAMCorrespondenceTeacher(segmenter, points_per_side=6, points_per_batch=1)(images, GRID)
    assert batched.shape == (2, 64, 36)
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    assert batched.std() > 0


@pytest.mark.suite("sam2")
@pytest.mark.suite("segment_anything")
@pytest.mark.parametrize("family", ["segment_anything", "sam2"])
def test_cpu_chunk_budget_sets_prompts_per_call_not_the_targets(family, sam_vit_b, sam2_hiera_t, images):
    segmenter = sam_vit_b if family == "segment_anything" else sam2_hiera_t
    state = segmenter.encode(images)
    point_bytes = 256 * (SIZE // 16) ** 2 * 4  # the image tokens of one prompt: 256 channels, 8 x 8, float
    assert segmenter.point_bytes(state) == point_bytes
    per_call, targets = {}, {}
    for budget in (1, 3 * point_bytes, 2**30):
        teacher = SAMCorrespondenceTeacher(segmenter, points_per_side=4, points_per_batch=8, cpu_chunk_bytes=budget)
        per_call[budget] = teacher.points_per_call(state, images.device)
        targets[budget] = teacher(images, GRID)
    assert per_call == {1: 1, 3 * point_bytes: 3, 2**30: 8}  # 16 prompts: calls of 1, of 3 (and a last 1), of 8
    torch.testing.assert_close(targets[1], targets[3 * point_bytes], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(targets[1], targets[2**30], atol=1e-5, rtol=1e-5)


@pytest.mark.suite("sam2")
@pytest.mark.suite("segment_anything")
@pytest.mark.parametrize("family", ["segment_anything", "sam2"])
@pytest.mark.parametrize("band_tokens", [2**20, 1, 3 * 9 * SIZE // 16])  # one band; one token row; 3 rows, last 2
def test_decoder_equals_the_librarys_mask_decoder_for_every_mask_token(family, band_tokens, sam_vit_b, sam2_hiera_t,
                                                                        monkeypatch):
    import pe_dense.integrations.sam.decoder as decoder_module
    from pe_dense.integrations.sam.decoder import decode_points, image_context

    monkeypatch.setattr(decoder_module, "UPSCALE_TOKENS", band_tokens)  # the upscaling's bands of token rows
    segmenter = sam_vit_b if family == "segment_anything" else sam2_hiera_t
    prompt_encoder, decoder = segmenter.prompt_encoder, segmenter.mask_decoder
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 256, SIZE // 16, SIZE // 16, generator=generator)
    high_res = [] if family == "segment_anything" else [
        torch.randn(2, 32, SIZE // 4, SIZE // 4, generator=generator),
        torch.randn(2, 64, SIZE // 8, SIZE // 8, generator=generator)]
    state = image_context(prompt_encoder, decoder, embeddings, high_res)
    points = point_grid(3, SIZE)
    sparse, dense = prompt_encoder(points=(points[:, None], torch.ones(9, 1, dtype=torch.int)), boxes=None, masks=None)
    for i in range(2):
        extra = {"repeat_image": True, "high_res_features": [f[i: i + 1] for f in high_res]} if high_res else {}
        expected = decoder.predict_masks(embeddings[i: i + 1], prompt_encoder.get_dense_pe(), sparse, dense, **extra)
        masks, iou = decode_points(prompt_encoder, decoder, state, i, points)
        torch.testing.assert_close(masks, expected[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(iou, expected[1], atol=1e-5, rtol=1e-5)


@pytest.mark.suite("segment_anything")
def test_sam_checkpoints_load_without_unpickling_and_mismatches_are_named(tmp_path, sam_vit_b, images):
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam_vit_b.sam.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_segmenter("segment_anything", "vit_b", checkpoint=path, image_size=SIZE)
    expected = SAMCorrespondenceTeacher(sam_vit_b, points_per_side=2)(images, GRID)
    torch.testing.assert_close(SAMCorrespondenceTeacher(loaded, points_per_side=2)(images, GRID), expected)
    with pytest.raises(CheckpointError, match="(?s)shape mismatch.*image_size 1024"):
        build_segmenter("segment_anything", "vit_b", checkpoint=path, image_size=2 * SIZE)
    evil = tmp_path / "evil.pth"
    torch.save({"model": sam_vit_b.sam.state_dict(), "object": np.dtype}, evil)
    with pytest.raises(CheckpointError, match="refusing"):
        build_segmenter("segment_anything", "vit_b", checkpoint=evil, image_size=SIZE)


@pytest.mark.suite("sam2")
def test_sam2_checkpoint_in_the_released_nesting_loads(tmp_path, sam2_hiera_t, images):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam2_hiera_t.model.state_dict()}, path)
    torch.manual_seed(1)
    loaded = build_segmenter("sam2", "hiera_t", checkpoint=path, image_size=SIZE)
    for key, value in sam2_hiera_t.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_bad_segmenter_arguments_are_named():
    with pytest.raises(ValueError, match="unknown SAM family 'sam3'"):
        build_segmenter("sam3", "vit_b")
    with pytest.raises(ValueError, match="unknown sam2 architecture 'vit_b'"):
        build_segmenter("sam2", "vit_b")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_segmenter("sam2", "hiera_t", image_size=100)
    with pytest.raises(ValueError, match="mask must be one of"):
        SAMCorrespondenceTeacher(torch.nn.Identity(), mask="all")
