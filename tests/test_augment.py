import math

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


# --- affine (Keras's ImageDataGenerator) ----------------------------------------------------------


def _exact_angle_seed(degrees):
    """A seed and a rotation range for which the first image's angle is exactly +-degrees: the
    angle is (2u - 1) * rotation for a uniform u, so pick a seed with |2u - 1| >= degrees / 180."""
    for seed in range(100):
        u = torch.rand(1, generator=_gen(seed)).item()
        if abs(2 * u - 1) >= degrees / 180:
            return seed, degrees / abs(2 * u - 1)
    raise AssertionError("no seed found")


def _disc(h, w, radius=4.0):
    ys = torch.arange(h) + 0.5 - h / 2
    xs = torch.arange(w) + 0.5 - w / 2
    return ((ys[:, None] ** 2 + xs[None, :] ** 2) <= radius**2).float()[None, None]


def test_affine_with_nothing_drawn_is_the_identity():
    for c in (1, 3):
        x = _images(c, size=9)
        assert torch.allclose(augment.affine(x, generator=_gen()), x, atol=1e-6)
        for fill in augment.FILL_MODES:
            assert torch.allclose(augment.affine(x, fill=fill), x, atol=1e-6)


def test_affine_flip_mirrors_each_image_or_keeps_it_and_both_happen():
    x = _images(1, n=200)
    out = augment.affine(x, flip=True, generator=_gen())
    mirrored = torch.tensor([torch.allclose(o, i.flip(2), atol=1e-6) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.allclose(o, i, atol=1e-6) for o, i in zip(out, x, strict=True)])
    assert torch.all(mirrored ^ kept)
    assert 60 < mirrored.sum() < 140


def test_affine_seeded_is_repeatable_and_seeds_differ():
    x = _images(3)
    kw = {"rotation": 20, "shift": 0.1, "shear": 10, "zoom": 0.1, "flip": True}
    assert torch.equal(augment.affine(x, generator=_gen(1), **kw), augment.affine(x, generator=_gen(1), **kw))
    assert not torch.allclose(augment.affine(x, generator=_gen(1), **kw), augment.affine(x, generator=_gen(2), **kw))


def test_affine_draws_one_transform_per_image_shared_by_its_channels():
    x = _images(1, n=8).expand(-1, 3, -1, -1).contiguous()
    out = augment.affine(x, rotation=30, shift=0.2, zoom=0.2, generator=_gen(4))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 0], out[:, 2])
    same = augment.affine(x[:1].expand(8, -1, -1, -1), rotation=30, shift=0.2, generator=_gen(4))
    assert not torch.allclose(same[0], same[1])  # the same image, drawn differently in each slot


@pytest.mark.parametrize("h, w, shift", [(16, 16, 0.1), (16, 16, 0.25), (12, 20, 0.15)])
def test_affine_shift_moves_a_bright_pixel_by_at_most_shift_of_the_side(h, w, shift):
    x = torch.zeros(64, 1, h, w)
    x[:, 0, h // 2, w // 2] = 1.0
    out = augment.affine(x, shift=shift, fill="constant", generator=_gen())
    lit = (out[:, 0] > 1e-6).nonzero()
    assert (lit[:, 1] - h // 2).abs().max() <= math.ceil(shift * h)
    assert (lit[:, 2] - w // 2).abs().max() <= math.ceil(shift * w)
    assert torch.allclose(out.flatten(1).sum(1), torch.ones(64), atol=1e-5)  # moved, not lost
    centre_of_mass = (out[:, 0].sum(1) * torch.arange(w)).sum(1)  # per image, along x
    assert len(set(centre_of_mass.round(decimals=3).tolist())) > 10  # images move differently


def test_affine_shift_zero_keeps_the_mass_exactly_and_a_large_shift_loses_some():
    x = torch.zeros(32, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    assert torch.allclose(augment.affine(x, fill="constant").flatten(1).sum(1), torch.ones(32))
    out = augment.affine(x, shift=0.9, fill="constant", generator=_gen())
    mass = out.flatten(1).sum(1)
    assert (mass <= 1 + 1e-5).all() and (mass < 0.5).any()  # some pixels shifted out of the frame


def test_affine_fill_modes_differ_at_the_border():
    ones = torch.ones(16, 1, 12, 12)
    kw = {"rotation": 90, "generator": _gen(2)}
    assert torch.allclose(augment.affine(ones, fill="nearest", **kw), ones)
    assert torch.allclose(augment.affine(ones, fill="reflect", **kw), ones)
    constant = augment.affine(ones, fill="constant", **kw)
    assert constant.min() >= 0 and (constant.flatten(1).amin(1) < 0.5).sum() > 8  # zeros came in
    centre = constant[:, :, 5:7, 5:7]
    assert torch.allclose(centre, torch.ones_like(centre))  # the middle never leaves the frame


def test_affine_rotation_by_exactly_90_degrees_is_rot90():
    seed, rotation = _exact_angle_seed(90)
    x = _images(1, n=1, size=8)
    out = augment.affine(x, rotation=rotation, generator=_gen(seed))
    quarter = [torch.allclose(out, x.rot90(k, (2, 3)), atol=1e-5) for k in (1, -1)]
    assert sum(quarter) == 1


def test_affine_rotation_keeps_a_centred_square():
    seed, rotation = _exact_angle_seed(90)
    square = torch.zeros(1, 1, 10, 10)
    square[:, :, 3:7, 3:7] = 1.0
    out = augment.affine(square, rotation=rotation, fill="constant", generator=_gen(seed))
    assert torch.allclose(out, square, atol=1e-5)


def test_affine_rotation_keeps_a_centred_disc_approximately():
    disc = _disc(24, 24, radius=6).expand(16, -1, -1, -1)
    out = augment.affine(disc, rotation=180, fill="constant", generator=_gen(3))
    assert torch.allclose(out.flatten(1).sum(1), disc.flatten(1).sum(1), rtol=0.05)
    assert ((out - disc).abs().flatten(1).mean(1) < 0.05).all()


@pytest.mark.parametrize("h, w", [(16, 32), (32, 16)])
def test_affine_rotation_keeps_a_centred_disc_on_a_non_square_image(h, w):
    seed, rotation = _exact_angle_seed(90)
    disc = _disc(h, w, radius=4)
    out = augment.affine(disc, rotation=rotation, fill="constant", generator=_gen(seed))
    assert torch.allclose(out, disc, atol=1e-4)


def test_affine_zoom_and_shear_change_a_centred_square_but_keep_it_centred():
    square = torch.zeros(32, 1, 16, 16)
    square[:, :, 5:11, 5:11] = 1.0
    for kw in ({"zoom": 0.4}, {"shear": 30}):
        out = augment.affine(square, fill="constant", generator=_gen(5), **kw)
        mass = out.flatten(1).sum(1)
        assert (mass - 36).abs().max() > 1  # it changed size or shape
        ys = (out[:, 0].sum(2) * (torch.arange(16) + 0.5)).sum(1) / mass
        xs = (out[:, 0].sum(1) * (torch.arange(16) + 0.5)).sum(1) / mass
        assert torch.allclose(ys, torch.full_like(ys, 8.0), atol=0.05)
        assert torch.allclose(xs, torch.full_like(xs, 8.0), atol=0.05)
    zoomed = augment.affine(square, zoom=0.4, fill="constant", generator=_gen(5)).flatten(1).sum(1)
    assert (zoomed < 30).any() and (zoomed > 42).any()  # both smaller and larger


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1, 3])
def test_affine_keeps_shape_dtype_device_and_range(c, dtype):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = torch.rand(5, c, 9, 7, generator=_gen()).to(device=device, dtype=dtype)
        out = augment.affine(x, rotation=40, shift=0.2, shear=20, zoom=0.3, flip=True, generator=_gen())
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_affine_on_an_empty_batch():
    x = torch.zeros(0, 3, 8, 8)
    out = augment.affine(x, rotation=30, flip=True, generator=_gen())
    assert out.shape == (0, 3, 8, 8) and out.dtype == x.dtype


@pytest.mark.parametrize("kwargs, word", [
    ({"rotation": -1}, "rotation"),
    ({"rotation": 181}, "rotation"),
    ({"rotation": float("nan")}, "rotation"),
    ({"rotation": "30"}, "rotation"),
    ({"shift": -0.1}, "shift"),
    ({"shift": 1.5}, "shift"),
    ({"shift": None}, "shift"),
    ({"shear": -5}, "shear"),
    ({"shear": 90}, "shear"),
    ({"zoom": -0.1}, "zoom"),
    ({"zoom": 1.0}, "zoom"),
    ({"zoom": True}, "zoom"),
    ({"flip": "yes"}, "flip"),
    ({"flip": 1}, "flip"),
    ({"fill": "wrap"}, "fill"),
    ({"fill": "Nearest"}, "fill"),
    ({"fill": None}, "fill"),
    ({"fill": 0}, "fill"),
])
def test_affine_bad_arguments_are_named(kwargs, word):
    with pytest.raises((ValueError, TypeError), match=word):
        augment.affine(_images(), **kwargs)


@pytest.mark.parametrize("fill", [["nearest"], {"constant": 0}])
def test_affine_unhashable_fill_is_refused_by_name(fill):
    with pytest.raises((ValueError, TypeError), match="fill"):
        augment.affine(_images(), fill=fill)


def test_affine_bad_images_are_refused():
    for bad in (torch.rand(2, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [[0.0]]):
        with pytest.raises((ValueError, TypeError), match="x must"):
            augment.affine(bad)
