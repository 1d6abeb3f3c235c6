import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lablib.core import config
from lablib.methods import pruning
from lablib.nets import models, train


def _mlp(hidden=(32, 16), seed=0):
    config.seed_everything(seed)
    return models.MLP(64, hidden=hidden, num_classes=10)


def _weights(model):
    return sum(m.weight.numel() for m, _ in pruning.prunable(model))


def _zeros(model):
    return sum((m.weight == 0).sum().item() for m, _ in pruning.prunable(model))


def test_prunable_finds_linear_and_conv_weights():
    mlp = _mlp()
    assert [m for m, _ in pruning.prunable(mlp)] == [mlp.net[1], mlp.net[3], mlp.net[5]]
    assert {name for _, name in pruning.prunable(mlp)} == {"weight"}
    cnn = models.SmallCNN(width=4)
    kinds = [type(m).__name__ for m, _ in pruning.prunable(cnn)]
    assert kinds == ["Conv2d", "Conv2d", "Conv2d", "Linear"]


def test_sparsity_of_tensor_and_model():
    assert pruning.sparsity(torch.tensor([0.0, 1.0, 0.0, -2.0])) == 0.5
    m = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[0].weight[0].zero_()  # 4 of its 8 weights
        m[1].weight.fill_(1.0)
        m[0].bias.zero_()  # biases do not count
    assert pruning.sparsity(m) == pytest.approx(4 / 12)
    assert pruning.layer_sparsity(m) == {"0": 0.5, "1": 0.0}


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.9, 1.0])
def test_global_prune_hits_the_requested_sparsity_exactly(amount):
    model = pruning.global_magnitude_prune(_mlp(), amount)
    total = _weights(model)
    assert _zeros(model) == round(amount * total)
    assert pruning.sparsity(model) == pytest.approx(round(amount * total) / total)


def test_global_prune_removes_the_smallest_magnitudes_across_layers():
    m = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[0.1, -5.0], [3.0, -0.2]]))
        m[1].weight.copy_(torch.tensor([[-0.05, 4.0]]))
    pruning.global_magnitude_prune(m, 0.5)  # 3 of 6: |0.05|, |0.1|, |-0.2|
    assert torch.equal(m[0].weight_mask, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(m[1].weight_mask, torch.tensor([[0.0, 1.0]]))
    assert torch.equal(m[0].weight, torch.tensor([[0.0, -5.0], [3.0, -0.0]]))
    assert pruning.layer_sparsity(m) == {"0": 0.5, "1": 0.5}


def test_l1_mask_matches_torch_and_hand_example():
    w = torch.tensor([[0.3, -0.1], [2.0, -0.5]])
    assert torch.equal(pruning.l1_mask(w, 0.5), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # |0.3|, |-0.1| go
    assert torch.equal(pruning.l1_mask(w, 0.25), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert torch.equal(pruning.l1_mask(w, 0.0), torch.ones(2, 2))
    g = torch.Generator().manual_seed(0)
    for amount in (0.1, 0.37, 0.8):
        w = torch.randn(12, 7, generator=g)
        layer = nn.Linear(7, 12)
        with torch.no_grad():
            layer.weight.copy_(w)
        torch_prune.l1_unstructured(layer, "weight", amount=amount)
        assert torch.equal(pruning.l1_mask(w, amount), layer.weight_mask)
        assert torch.equal(pruning.l1_mask(w.t(), amount), layer.weight_mask.t())  # any layout


def test_global_l1_masks_hand_example():
    a = torch.tensor([[0.1, -5.0], [3.0, -0.2]])
    b = torch.tensor([[-0.05, 4.0]])
    masks = pruning.global_l1_masks([a, b], 0.5)  # 3 of 6 go: |-0.05|, |0.1|, |-0.2|
    assert torch.equal(masks[0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(masks[1], torch.tensor([[0.0, 1.0]]))
    assert [m.sum().item() for m in pruning.global_l1_masks([a, b], 0.0)] == [4.0, 2.0]
    assert [m.sum().item() for m in pruning.global_l1_masks([a, b], 1.0)] == [0.0, 0.0]


def test_global_l1_masks_match_torch_global_unstructured_and_l1_mask():
    g = torch.Generator().manual_seed(1)
    for amount in (0.1, 0.5, 0.93):
        model = _mlp(hidden=(24, 12), seed=3)
        weights = [m.weight.detach().clone() for m, _ in pruning.prunable(model)]
        masks = pruning.global_l1_masks(weights, amount)
        pruning.global_magnitude_prune(model, amount)
        for (m, _), mask, w in zip(pruning.prunable(model), masks, weights, strict=True):
            assert mask.shape == w.shape and mask.dtype == w.dtype
            assert torch.equal(mask, m.weight_mask)
        w = torch.randn(9, 5, generator=g)
        assert torch.equal(pruning.global_l1_masks([w], amount)[0], pruning.l1_mask(w, amount))  # one tensor


def test_global_l1_masks_ranks_across_tensors_not_within():
    small, large = torch.full((10,), 0.01), torch.full((10,), 1.0)
    small[0], large[0] = 0.02, 2.0
    masks = pruning.global_l1_masks([small, large], 0.5)
    assert masks[0].sum() == 0 and masks[1].sum() == 10  # all of the small tensor goes, none of the large


def test_nm_mask_hand_example_and_pattern():
    w = torch.tensor([[0.1, -3.0, 0.5, 2.0, -1.0, 0.2, 0.3, -0.4]])
    assert torch.equal(pruning.nm_mask(w), torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]]))
    assert torch.equal(pruning.nm_mask(w, 1, 4), torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(pruning.nm_mask(w, 4, 4), torch.ones(1, 8))
    assert torch.equal(pruning.nm_mask(w, 0, 8), torch.zeros(1, 8))
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 16, generator=g)
    for n, m in ((2, 4), (1, 4), (3, 8)):
        mask = pruning.nm_mask(w, n, m)
        assert mask.shape == w.shape and mask.dtype == w.dtype
        groups, kept = w.abs().reshape(-1, m), mask.reshape(-1, m).bool()
        assert torch.all(kept.sum(1) == n)  # exactly n kept in every group
        smallest_kept = torch.where(kept, groups, torch.inf).min(1).values
        largest_dropped = torch.where(kept, -torch.inf, groups).max(1).values
        assert torch.all(largest_dropped <= smallest_kept)  # the largest ones are the kept ones
        assert pruning.sparsity(w * mask) == pytest.approx(1 - n / m)


def test_nm_mask_attaches_with_custom_from_mask():
    layer = nn.Linear(8, 3)
    torch_prune.custom_from_mask(layer, "weight", pruning.nm_mask(layer.weight))
    assert pruning.sparsity(layer.weight) == 0.5
    assert torch.all((layer.weight.reshape(-1, 4) != 0).sum(1) == 2)


def test_masks_keep_pruned_weights_at_zero_through_fine_tuning():
    model = pruning.global_magnitude_prune(_mlp(), 0.7)
    zero_before = [(m.weight == 0).clone() for m, _ in pruning.prunable(model)]
    orig_before = model.net[3].weight_orig.detach().clone()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    train.fit(model, [(x, y)], epochs=3, lr=1e-2, progress=False)
    assert not torch.equal(model.net[3].weight_orig, orig_before)  # training did update weights
    model(x)  # the forward pre-hook recomputes weight = weight_orig * weight_mask
    for (m, _), zero in zip(pruning.prunable(model), zero_before, strict=True):
        assert torch.all(m.weight[zero] == 0)
    assert _zeros(model) == round(0.7 * _weights(model))


def test_make_permanent_removes_orig_and_mask_and_keeps_outputs():
    model = pruning.global_magnitude_prune(_mlp(), 0.8)
    x = torch.randn(5, 1, 8, 8)
    out = model(x)
    pruning.make_permanent(model)
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert not any("orig" in n or "mask" in n for n in names)
    assert isinstance(model.net[1].weight, nn.Parameter)
    assert not torch_prune.is_pruned(model)
    assert torch.allclose(model(x), out)
    assert pruning.sparsity(model) == pytest.approx(0.8, abs=1e-3)
    pruning.make_permanent(model)  # a second call (nothing left to remove) is harmless


def test_structured_keep_all_is_an_exact_copy():
    model = _mlp()
    same = pruning.structured_prune_mlp(model, 1.0)
    assert same is not model
    x = torch.randn(7, 1, 8, 8)
    assert torch.allclose(same(x), model(x))
    assert models.count_params(same) == models.count_params(model)


def test_structured_prune_shrinks_the_layers():
    model = _mlp(hidden=(40, 20))
    small = pruning.structured_prune_mlp(model, 0.25)
    shapes = [tuple(m.weight.shape) for m, _ in pruning.prunable(small)]
    assert shapes == [(10, 64), (5, 10), (10, 5)]
    assert models.count_params(small) == 64 * 10 + 10 + 10 * 5 + 5 + 5 * 10 + 10
    assert models.count_params(small) < models.count_params(model)
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert models.count_params(model) == 64 * 40 + 40 + 40 * 20 + 20 + 20 * 10 + 10  # original untouched


def test_structured_prune_keeps_the_strongest_neurons():
    model = _mlp(hidden=(4,))
    with torch.no_grad():
        model.net[1].weight.copy_(torch.ones(4, 64) * torch.tensor([[1.0], [5.0], [0.1], [3.0]]))
    small = pruning.structured_prune_mlp(model, 0.5)  # neurons 1 and 3 have the largest norms
    assert torch.equal(small.net[1].weight, model.net[1].weight[[1, 3]])
    assert torch.equal(small.net[1].bias, model.net[1].bias[[1, 3]])
    assert torch.equal(small.net[3].weight, model.net[3].weight[:, [1, 3]])
    assert torch.equal(small.net[3].bias, model.net[3].bias)


def test_clone_copies_a_pruned_model():
    """copy.deepcopy refuses a freshly pruned model (its weight is computed from weight_orig);
    clone works, and the copy keeps the masks and trains on its own."""
    model = pruning.global_magnitude_prune(_mlp(), 0.6)
    with pytest.raises(RuntimeError):
        copy.deepcopy(model)
    twin = pruning.clone(model)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(twin(x), model(x))
    assert torch.equal(twin.net[1].weight_mask, model.net[1].weight_mask)
    with torch.no_grad():
        twin.net[1].weight_orig.add_(1.0)
    assert not torch.equal(twin.net[1].weight_orig, model.net[1].weight_orig)
    assert pruning.sparsity(twin) == pytest.approx(pruning.sparsity(model))


def test_structured_prune_of_a_masked_model_uses_the_masked_weights():
    model = pruning.global_magnitude_prune(_mlp(), 0.5)
    x = torch.randn(4, 1, 8, 8)
    copy_ = pruning.structured_prune_mlp(model, 1.0)
    assert not torch_prune.is_pruned(copy_)
    assert torch_prune.is_pruned(model)  # the original keeps its masks
    assert torch.allclose(copy_(x), model(x))


def test_size_bytes_zeros_only_shrink_once_compressed():
    model = _mlp(hidden=(256, 256))
    dense = pruning.size_bytes(model)
    sparse_model = pruning.make_permanent(pruning.global_magnitude_prune(copy.deepcopy(model), 0.9))
    sparse = pruning.size_bytes(sparse_model)
    assert set(dense) == {"raw", "compressed"}
    assert abs(sparse["raw"] - dense["raw"]) < 0.01 * dense["raw"]  # raw: the same size
    assert sparse["compressed"] < 0.5 * dense["compressed"]
    assert sparse["compressed"] < 0.5 * sparse["raw"]
    masked = pruning.size_bytes(pruning.global_magnitude_prune(copy.deepcopy(model), 0.9))
    assert masked["raw"] > 1.8 * dense["raw"]  # weight_orig and weight_mask both saved
    small = pruning.size_bytes(pruning.structured_prune_mlp(model, 0.25))
    assert small["raw"] < 0.2 * dense["raw"]


def test_bad_input_is_refused_with_the_argument_named():
    model = _mlp()
    for amount in (-0.1, 1.5):
        with pytest.raises(ValueError, match="amount"):
            pruning.global_magnitude_prune(model, amount)
    for amount in ("0.5", True, None):
        with pytest.raises(TypeError, match="amount"):
            pruning.global_magnitude_prune(model, amount)
    with pytest.raises(ValueError, match="amount"):
        pruning.l1_mask(torch.ones(3), 2.0)
    with pytest.raises(ValueError, match="amount"):
        pruning.global_l1_masks([torch.ones(3)], -0.5)
    with pytest.raises(TypeError, match="weights"):
        pruning.global_l1_masks(torch.ones(3), 0.5)
    with pytest.raises(TypeError, match=r"weights\[1\]"):
        pruning.global_l1_masks([torch.ones(3), [1.0]], 0.5)
    with pytest.raises(ValueError, match="weights"):
        pruning.global_l1_masks([], 0.5)
    with pytest.raises(ValueError, match="multiple of m"):
        pruning.nm_mask(torch.ones(3, 6))
    with pytest.raises(ValueError, match="n and m"):
        pruning.nm_mask(torch.ones(3, 8), 5, 4)
    with pytest.raises(TypeError, match="n must"):
        pruning.nm_mask(torch.ones(3, 8), 0.5)
    with pytest.raises(TypeError, match="weight"):
        pruning.nm_mask([1.0, 2.0, 3.0, 4.0])
    for keep in (0.0, -1.0, 1.01):
        with pytest.raises(ValueError, match="keep"):
            pruning.structured_prune_mlp(model, keep)
    with pytest.raises(TypeError, match="keep"):
        pruning.structured_prune_mlp(model, "half")
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        pruning.global_magnitude_prune(nn.Sequential(nn.ReLU(), nn.Flatten()), 0.5)
    with pytest.raises(ValueError, match="no Linear or Conv2d"):
        pruning.sparsity(nn.ReLU())
    with pytest.raises(TypeError, match="MLP"):
        pruning.structured_prune_mlp(models.SmallCNN(width=4), 0.5)
    with pytest.raises(TypeError, match="model"):
        pruning.prunable("not a model")
    with pytest.raises(TypeError, match="model_or_tensor"):
        pruning.sparsity([0.0, 1.0])
    with pytest.raises(TypeError, match="model"):
        pruning.size_bytes({"w": torch.zeros(2)})
    assert not torch_prune.is_pruned(model)  # failed calls left the model alone


def test_sparsity_names_its_argument():
    with pytest.raises(ValueError, match="model_or_tensor has no Linear or Conv2d"):
        pruning.sparsity(nn.ReLU())
