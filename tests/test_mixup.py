"""lablib.methods.mixup: Mixup's loss and soft targets, CutMix's box and paste."""

import math

import pytest
import torch
import torch.nn.functional as F

from lablib.methods import mixup


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _model(seed=0, features=12, classes=5):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, classes))


def _batch(seed=0, n=8, classes=5):
    g = _gen(seed)
    x = torch.rand(n, 3, 2, 2, generator=g)  # 12 features once flattened
    y = torch.randint(0, classes, (n,), generator=g)
    perm = torch.randperm(n, generator=g)
    return x, y, perm


# --- mixup_loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_mixup_loss_is_the_two_term_formula(lam):
    model = _model()
    x, y, perm = _batch()
    assert not torch.equal(y, y[perm])  # the two terms differ
    logits = model(lam * x + (1 - lam) * x[perm])
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    assert torch.allclose(mixup.mixup_loss(model, x, y, lam, perm), expected, atol=1e-6)


def test_mixup_loss_at_lam_1_is_plain_cross_entropy():
    model = _model()
    x, y, perm = _batch(1)
    assert torch.allclose(mixup.mixup_loss(model, x, y, 1.0, perm), F.cross_entropy(model(x), y), atol=1e-6)


def test_mixup_loss_at_lam_0_is_cross_entropy_on_the_partners():
    model = _model()
    x, y, perm = _batch(2)
    got = mixup.mixup_loss(model, x, y, 0.0, perm)
    assert torch.allclose(got, F.cross_entropy(model(x[perm]), y[perm]), atol=1e-6)
    # the batch mean does not depend on the order, so lam = 0 is plain cross-entropy too
    assert torch.allclose(got, F.cross_entropy(model(x), y), atol=1e-6)


def test_mixup_loss_accepts_a_one_element_tensor_lam():
    model = _model()
    x, y, perm = _batch(3)
    assert torch.allclose(mixup.mixup_loss(model, x, y, torch.tensor(0.3), perm),
                          mixup.mixup_loss(model, x, y, 0.3, perm))


def test_gradient_flows_to_x_and_the_model():
    model = _model()
    x, y, perm = _batch(4)
    x.requires_grad_()
    mixup.mixup_loss(model, x, y, 0.6, perm).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_cross_entropy_against_mixup_targets_equals_mixup_loss(lam):
    """Cross-entropy is linear in its target, so the soft-label form and the two-term form agree."""
    model = _model()
    x, y, perm = _batch(5)
    logits = model(lam * x + (1 - lam) * x[perm])
    soft = F.cross_entropy(logits, mixup.mixup_targets(y, perm, lam, 5))
    assert torch.allclose(soft, mixup.mixup_loss(model, x, y, lam, perm), atol=1e-6)


# --- mixup_targets ------------------------------------------------------------------------------


def test_mixup_targets_rows_are_the_blended_one_hots():
    y = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([1, 0, 3, 2])
    t = mixup.mixup_targets(y, perm, 0.7, 4)
    assert t.shape == (4, 4)
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert torch.allclose(t[0], torch.tensor([0.7, 0.3, 0.0, 0.0]))
    assert torch.allclose(t[3], torch.tensor([0.0, 0.0, 0.3, 0.7]))


def test_mixup_targets_with_identity_perm_is_one_hot():
    _, y, _ = _batch(6)
    for lam in (0.0, 0.4, 1.0):
        t = mixup.mixup_targets(y, torch.arange(len(y)), lam, 5)
        assert torch.equal(t, F.one_hot(y, 5).float())


def test_mixup_targets_same_label_pairs_stay_one_hot():
    y = torch.tensor([2, 2, 1])
    t = mixup.mixup_targets(y, torch.tensor([1, 0, 2]), 0.3, 3)
    assert torch.allclose(t, F.one_hot(y, 3).float())


# --- random_box ---------------------------------------------------------------------------------


def _inside(box, h, w):
    top, left, bh, bw = box
    return 0 <= top <= h and 0 <= left <= w and bh >= 0 and bw >= 0 and top + bh <= h and left + bw <= w


@pytest.mark.parametrize("h, w", [(8, 8), (7, 12), (1, 5)])
@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5, 0.75, 0.99])
def test_random_box_stays_inside_and_is_at_most_the_unclipped_box(h, w, lam):
    ratio = math.sqrt(1 - lam)
    full = round(h * ratio) * round(w * ratio)
    for seed in range(40):
        box = mixup.random_box(h, w, lam, _gen(seed))
        assert all(isinstance(v, int) for v in box)
        assert _inside(box, h, w)
        assert box[2] * box[3] <= full


@pytest.mark.parametrize("lam", [0.5, 0.7, 0.8, 0.95])
def test_unclipped_box_area_is_about_one_minus_lam(lam):
    h = w = 32
    unclipped = 0
    for seed in range(300):
        top, left, bh, bw = mixup.random_box(h, w, lam, _gen(seed))
        if top > 0 and left > 0 and top + bh < h and left + bw < w:  # centre well inside: no clipping
            unclipped += 1
            assert abs(bh - math.sqrt(1 - lam) * h) <= 0.5 and abs(bw - math.sqrt(1 - lam) * w) <= 0.5
            assert abs(bh * bw / (h * w) - (1 - lam)) < 0.05
    assert unclipped >= 5  # the check above ran


def test_random_box_at_lam_1_is_empty():
    for seed in range(20):
        _, _, bh, bw = mixup.random_box(9, 6, 1.0, _gen(seed))
        assert bh * bw == 0


def test_random_box_at_lam_0_covers_a_quarter_to_all_of_the_image():
    """The box is the image's size, centred at a random pixel and clipped: it covers at least the
    quarter around its centre, and all of it when the centre is the middle pixel."""
    areas = [(lambda b: b[2] * b[3])(mixup.random_box(4, 4, 0.0, _gen(seed))) for seed in range(100)]
    assert min(areas) >= 4 and max(areas) == 16


def test_random_box_seeded_is_repeatable_and_seeds_differ():
    assert mixup.random_box(16, 16, 0.5, _gen(3)) == mixup.random_box(16, 16, 0.5, _gen(3))
    assert len({mixup.random_box(16, 16, 0.5, _gen(s)) for s in range(10)}) > 1


# --- cutmix -------------------------------------------------------------------------------------


def _images(seed=0, n=6, c=2, h=8, w=10):
    return torch.rand(n, c, h, w, generator=_gen(seed))


def test_cutmix_pastes_the_box_from_the_partner_and_keeps_the_rest():
    x = _images()
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    box = (2, 3, 4, 5)
    out, lam = mixup.cutmix(x, perm, box)
    inside = torch.zeros(8, 10, dtype=torch.bool)
    inside[2:6, 3:8] = True
    assert torch.equal(out[:, :, inside], x[perm][:, :, inside])
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
    assert lam == pytest.approx(1 - 20 / 80)


@pytest.mark.parametrize("box", [(0, 0, 8, 10), (0, 0, 0, 0), (7, 9, 1, 1), (8, 10, 0, 0), (1, 0, 3, 10)])
def test_cutmix_lam_is_the_uncovered_share(box):
    x = _images(1)
    perm = torch.arange(6).roll(1)
    out, lam = mixup.cutmix(x, perm, box)
    assert lam == pytest.approx(1 - box[2] * box[3] / 80)
    own = (out == x).all(dim=1).all(dim=0)  # pixels every image kept (random images: no ties)
    assert own.sum().item() == 80 - box[2] * box[3]


def test_cutmix_with_identity_perm_leaves_x_unchanged():
    x = _images(2)
    out, _ = mixup.cutmix(x, torch.arange(6), (1, 1, 5, 5))
    assert torch.equal(out, x)


def test_cutmix_does_not_modify_its_input():
    x = _images(3)
    before = x.clone()
    out, _ = mixup.cutmix(x, torch.arange(6).flip(0), (0, 0, 4, 4))
    assert torch.equal(x, before) and not torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


def test_cutmix_with_a_random_box_gives_lam_of_that_box():
    x = _images(4, h=16, w=16)
    perm = torch.randperm(6, generator=_gen(4))
    side = round(math.sqrt(1 - 0.6) * 16)
    for seed in range(10):
        box = mixup.random_box(16, 16, 0.6, _gen(seed))
        _, lam = mixup.cutmix(x, perm, box)
        assert lam == pytest.approx(1 - box[2] * box[3] / 256)
        assert 1 - side * side / 256 <= lam <= 1  # clipping only ever uncovers more


def test_cutmix_gradient_flows_to_x():
    x = _images(5).requires_grad_()
    out, _ = mixup.cutmix(x, torch.arange(6).roll(2), (0, 0, 3, 3))
    out.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # every pixel lands in exactly one output pixel


# --- bad input ----------------------------------------------------------------------------------

X, Y = _images(n=4, c=3, h=2, w=2), torch.tensor([0, 1, 2, 3])
GOOD = torch.tensor([1, 0, 3, 2])


@pytest.mark.parametrize("kwargs, word", [
    ({"perm": torch.tensor([0, 0, 1, 2])}, "perm"),  # a repeat
    ({"perm": torch.tensor([0, 1, 2])}, "perm"),  # wrong length
    ({"perm": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "perm"),  # float
    ({"perm": torch.tensor([1, 2, 3, 4])}, "perm"),  # out of range
    ({"perm": [1, 0, 3, 2]}, "perm"),  # not a tensor
    ({"lam": -0.1}, "lam"),
    ({"lam": 1.5}, "lam"),
    ({"lam": float("nan")}, "lam"),
    ({"lam": "0.5"}, "lam"),
    ({"lam": True}, "lam"),
    ({"lam": torch.tensor([0.2, 0.3])}, "lam"),
    ({"y": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "y"),  # float labels
    ({"y": torch.tensor([0, 1, 2])}, "y"),  # wrong length
    ({"x": torch.zeros(0, 3, 2, 2), "y": torch.zeros(0, dtype=torch.long), "perm": torch.zeros(0, dtype=torch.long)}, "x"),
    ({"x": torch.zeros(4, 3, 2, 2, dtype=torch.long)}, "x"),
    ({"x": X.numpy()}, "x"),
    ({"model": lambda t: t}, "model"),
])
def test_mixup_loss_bad_input_is_named(kwargs, word):
    args = {"model": _model(), "x": X, "y": Y, "lam": 0.5, "perm": GOOD} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        mixup.mixup_loss(**args)


@pytest.mark.parametrize("bad", [5, -1, -100])
def test_mixup_loss_refuses_labels_outside_the_models_classes(bad):
    y = torch.tensor([0, 1, 2, bad])
    with pytest.raises(ValueError, match="y"):
        mixup.mixup_loss(_model(), X, y, 0.5, GOOD)


@pytest.mark.parametrize("kwargs, word", [
    ({"y": torch.tensor([0, 1, 2, 5])}, "y"),  # label >= num_classes
    ({"y": torch.tensor([0, 1, -1, 2])}, "y"),
    ({"y": torch.tensor([[0, 1], [2, 3]])}, "y"),
    ({"y": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "y"),
    ({"y": [0, 1, 2, 3]}, "y"),
    ({"y": torch.zeros(0, dtype=torch.long), "perm": torch.zeros(0, dtype=torch.long)}, "y"),
    ({"perm": torch.tensor([0, 1, 1, 2])}, "perm"),
    ({"perm": torch.tensor([0, 1, 2, 3, 4])}, "perm"),
    ({"perm": torch.tensor([0.0, 1.0, 2.0, 3.0])}, "perm"),
    ({"lam": 2}, "lam"),
    ({"lam": -1e-9}, "lam"),
    ({"lam": float("nan")}, "lam"),
    ({"lam": None}, "lam"),
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 4.0}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
])
def test_mixup_targets_bad_input_is_named(kwargs, word):
    args = {"y": Y, "perm": GOOD, "lam": 0.5, "num_classes": 4} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        mixup.mixup_targets(**args)


@pytest.mark.parametrize("kwargs, word", [
    ({"height": 0}, "height"),
    ({"height": 8.0}, "height"),
    ({"width": -3}, "width"),
    ({"width": "8"}, "width"),
    ({"lam": 1.01}, "lam"),
    ({"lam": float("nan")}, "lam"),
    ({"lam": float("inf")}, "lam"),
])
def test_random_box_bad_input_is_named(kwargs, word):
    args = {"height": 8, "width": 8, "lam": 0.5} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        mixup.random_box(**args)


@pytest.mark.parametrize("kwargs, word", [
    ({"box": (0, 0, 9, 1)}, "box height"),  # taller than the image
    ({"box": (5, 0, 4, 1)}, "box height"),  # hangs over the bottom
    ({"box": (0, 7, 1, 4)}, "box width"),  # hangs over the right
    ({"box": (-1, 0, 1, 1)}, "box top"),
    ({"box": (0, 11, 0, 0)}, "box left"),
    ({"box": (0, 0, -1, 1)}, "box height"),
    ({"box": (0, 0, 1.5, 1)}, "box height"),
    ({"box": (0, 0, 1)}, "box"),
    ({"box": None}, "box"),
    ({"box": "0001"}, "box"),
    ({"perm": torch.tensor([0, 1, 2, 2, 4, 5])}, "perm"),
    ({"perm": torch.arange(5)}, "perm"),
    ({"x": torch.rand(6, 80)}, "x"),  # not images
    ({"x": torch.zeros(6, 2, 8, 10, dtype=torch.uint8)}, "x"),
    ({"x": torch.zeros(0, 2, 8, 10), "perm": torch.zeros(0, dtype=torch.long)}, "x"),
])
def test_cutmix_bad_input_is_named(kwargs, word):
    args = {"x": _images(), "perm": torch.arange(6), "box": (0, 0, 2, 2)} | kwargs
    with pytest.raises((ValueError, TypeError), match=word):
        mixup.cutmix(**args)
