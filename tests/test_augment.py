import pytest
import torch

from lablib.data import augment


def _images(c=1, n=16, size=8, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("fn", [augment.weak, augment.strong, augment.cutout])
def test_shape_dtype_and_range_kept(fn, c):
    x = _images(c)
    for dtype in (torch.float32, torch.float64):
        out = fn(x.to(dtype), generator=_gen())
        assert out.shape == x.shape and out.dtype == dtype
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("fn", [augment.weak, augment.strong])
def test_seeded_reproducible_and_different_across_seeds(fn):
    x = _images(3)
    assert torch.equal(fn(x, generator=_gen(1)), fn(x, generator=_gen(1)))
    assert not torch.equal(fn(x, generator=_gen(1)), fn(x, generator=_gen(2)))


def test_weak_is_a_shift_of_at_most_one_pixel():
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0  # one bright pixel away from the border
    out = augment.weak(x, shift=1, generator=_gen())
    assert torch.all(out.flatten(1).sum(1) == 1)  # still exactly one bright pixel (moved, not blurred)
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1], (out[:, 0] == 1).nonzero()[:, 2]
    assert (rows - 3).abs().max() <= 1 and (cols - 4).abs().max() <= 1
    assert len({(r.item(), c.item()) for r, c in zip(rows, cols, strict=True)}) > 3  # images move differently
    assert torch.equal(augment.weak(x, shift=0), x)


def test_flip_mirrors_about_half_the_images():
    x = _images(1, n=200)
    out = augment.weak(x, shift=0, flip=True, generator=_gen())
    mirrored = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert torch.all(mirrored ^ kept) and 60 < mirrored.sum() < 140


def test_strong_changes_images_each_differently():
    x = _images(1, n=32)
    out = augment.strong(x, generator=_gen())
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert changed.all()
    assert not torch.allclose(out[0] - x[0], out[1] - x[1])


def test_strong_with_no_ops_and_no_cutout_is_the_weak_view():
    x = _images(1)
    assert torch.allclose(augment.strong(x, n=0, cutout_size=0.0, generator=_gen(5)),
                          augment.weak(x, generator=_gen(5)))


def test_cutout_paints_one_square_per_image():
    x = torch.zeros(50, 1, 8, 8)
    out = augment.cutout(x, size=0.5, fill=1.0, generator=_gen())
    painted = out[:, 0] == 1.0
    for img in painted:
        ys, xs = img.nonzero(as_tuple=True)
        assert len(ys) >= 1 and len(ys) <= 16  # at most a 4x4 square on 8x8
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a filled rectangle


@pytest.mark.parametrize("c", [1, 3])
def test_kornia_rand_augment_on_1_and_3_channels(c):
    x = _images(c, n=8)
    for seed in range(40):  # enough calls that kornia draws its 3-channel-only "color" op
        out = augment.rand_augment(x, n=2, m=10, seed=seed)
        assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(augment.rand_augment(x, seed=3), augment.rand_augment(x, seed=3))


def test_kornia_rand_augment_1_channel_matches_grey_rgb():
    """The 1-channel path is exactly RandAugment on the grey image as RGB, and RandAugment keeps
    a grey RGB image grey (so handing back one channel loses nothing)."""
    x = _images(1, n=8)
    for seed in range(30):
        grey = augment.rand_augment(x, seed=seed)
        rgb = augment.rand_augment(x.expand(-1, 3, -1, -1).contiguous(), seed=seed)
        assert torch.allclose(grey[:, 0], rgb[:, 0])
        assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-5) and torch.allclose(rgb[:, 0], rgb[:, 2], atol=1e-5)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: augment.weak(torch.rand(2, 8, 8)), "x must"),
        (lambda: augment.weak([1, 2]), "x must"),
        (lambda: augment.weak(torch.zeros(2, 1, 8, 8, dtype=torch.long)), "x must"),
        (lambda: augment.weak(_images(), shift=-1), "shift"),
        (lambda: augment.weak(_images(), shift=8), "shift"),
        (lambda: augment.strong(_images(), n=99), "n must"),
        (lambda: augment.strong(_images(), cutout_size=2), "cutout_size"),
        (lambda: augment.cutout(_images(), size=0), "size"),
        (lambda: augment.rand_augment(_images(2)), "channels"),
    ],
)
def test_bad_input(call, word):
    with pytest.raises((ValueError, TypeError), match=word):
        call()


@pytest.mark.parametrize("fn, kwargs, word", [
    (augment.weak, {"flip": "yes"}, "flip"),
    (augment.rand_augment, {"n": "x"}, "n"),
    (augment.rand_augment, {"n": 0}, "n"),
    (augment.rand_augment, {"m": float("nan")}, "m"),
    (augment.rand_augment, {"m": 30}, "m"),
    (augment.rand_augment, {"seed": "1"}, "seed"),
])
def test_bad_arguments_are_named(fn, kwargs, word):
    with pytest.raises((ValueError, TypeError), match=word):
        fn(_images(), **kwargs)
