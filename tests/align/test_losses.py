"""Alignment losses against naive full-matrix formulas: values, gradients, bounded memory, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from pe_dense.align import FeatureDistillation, cosine_distillation_loss, pairwise_similarity_loss


def naive_pairwise(student, teacher):
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return ((s @ s.transpose(1, 2) - t @ t.transpose(1, 2)) ** 2).mean()


@pytest.mark.parametrize("tokens,chunk", [(64, 512), (100, 32), (97, 7), (50, 1)])
def test_pairwise_loss_and_gradient_equal_the_full_matrix(tokens, chunk):
    g = torch.Generator().manual_seed(tokens)
    student = torch.randn(2, tokens, 24, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, tokens, 40, generator=g, dtype=torch.float64)  # another width, as SAM's P^2 vectors
    ours = pairwise_similarity_loss(student, teacher, chunk_size=chunk)
    (grad,) = torch.autograd.grad(ours, student)
    reference = naive_pairwise(student, teacher)
    (reference_grad,) = torch.autograd.grad(reference, student)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(grad, reference_grad, rtol=1e-9, atol=1e-12)


def test_pairwise_loss_float32_matches_to_1e5():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(1, 300, 64, generator=g), torch.randn(1, 300, 64, generator=g)
    assert abs(pairwise_similarity_loss(student, teacher, 64).item() - naive_pairwise(student, teacher).item()) < 1e-5


def test_pairwise_loss_keeps_no_token_by_token_matrix_for_backward():
    """Everything autograd keeps for the backward pass is O(N·C), not O(N²): at 2048 tokens the full
    matrices alone would be 2 x 16 MiB."""
    tokens, width = 2048, 32
    student = torch.randn(1, tokens, width, requires_grad=True)
    teacher = torch.randn(1, tokens, width)
    storages = {}  # saved tensors are often views of one storage: count each storage once

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = pairwise_similarity_loss(student, teacher, chunk_size=256)
    token_bytes = tokens * width * 4
    assert max(storages.values()) <= token_bytes and sum(storages.values()) < 4 * token_bytes
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_pairwise_loss_is_zero_for_the_same_geometry():
    x = torch.randn(2, 50, 16)
    rotation = torch.linalg.qr(torch.randn(16, 16))[0]
    assert pairwise_similarity_loss(x, x @ rotation * 3.0).item() < 1e-10  # same cosines: rotated and scaled


def test_cosine_distillation_and_projection():
    student, teacher = torch.randn(2, 10, 8, requires_grad=True), torch.randn(2, 10, 8)
    expected = (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    assert cosine_distillation_loss(student, teacher).item() == pytest.approx(expected.item())
    assert cosine_distillation_loss(teacher * 2, teacher).item() == pytest.approx(0, abs=1e-6)
    same = FeatureDistillation(8, 8)
    assert isinstance(same.projection, torch.nn.Identity)
    wide = FeatureDistillation(8, 32)
    loss = wide(student, torch.randn(2, 10, 32))
    loss.backward()
    assert wide.projection.weight.grad is not None and student.grad is not None


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="same batch and token count"):
        pairwise_similarity_loss(torch.randn(1, 10, 4), torch.randn(1, 12, 4))
    with pytest.raises(ValueError, match=r"token features \(B, N, C\)"):
        pairwise_similarity_loss(torch.randn(10, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="use FeatureDistillation"):
        cosine_distillation_loss(torch.randn(1, 10, 4), torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match="chunk_size"):
        pairwise_similarity_loss(torch.randn(1, 10, 4), torch.randn(1, 10, 4), chunk_size=0)
