import os

import numpy as np
import pytest
import torch
from PIL import Image

from lablib.data import datasets


def test_digits_split_is_fixed_disjoint_and_stratified():
    a, b = datasets.digits(), datasets.digits()
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.train.x.shape[1:] == (1, 8, 8) and a.train.x.dtype == torch.float32
    assert 0.0 <= a.train.x.min() and a.train.x.max() <= 1.0
    assert a.classes == [str(i) for i in range(10)]
    # no image appears in two splits
    flat = lambda s: {tuple(r.tolist()) for r in s.x.flatten(1)}  # noqa: E731
    assert not flat(a.train) & flat(a.test) and not flat(a.val) & flat(a.test)
    # stratified: every class is about 20 % of the test split's share
    counts = np.array(a.test.counts())
    assert counts.min() >= 33 and counts.max() <= 38
    other = datasets.digits(seed=1)
    assert not torch.equal(other.test.x, a.test.x)


def test_digits_resize():
    s = datasets.digits(size=16)
    assert s.train.x.shape[1:] == (1, 16, 16)
    with pytest.raises(ValueError, match="size"):
        datasets.digits(size=2)


def test_split_validates_fractions():
    ds = datasets.digits().train
    with pytest.raises(ValueError, match="val"):
        datasets.split(ds, val=1.2)
    with pytest.raises(ValueError, match="val \\+ test"):
        datasets.split(ds, val=0.5, test=0.5)


def test_partition_is_disjoint_and_stratified():
    train = datasets.digits().train
    rest, part = datasets.partition(train, 0.4, seed=0)
    assert len(rest) + len(part) == len(train)
    assert abs(len(part) - 0.4 * len(train)) <= 10
    flat = lambda s: {tuple(r.tolist()) for r in s.x.flatten(1)}  # noqa: E731
    assert not flat(rest) & flat(part)
    assert all(abs(p / t - 0.4) < 0.05 for p, t in zip(part.counts(), train.counts(), strict=True))
    with pytest.raises(ValueError, match="fraction"):
        datasets.partition(train, 1.0)


def test_labelled_split_counts_and_disjoint():
    train = datasets.digits().train
    lab, unl = datasets.labelled_split(train, per_class=5, seed=0)
    assert lab.counts() == [5] * 10
    assert len(lab) + len(unl) == len(train)
    flat = lambda s: {tuple(r.tolist()) for r in s.x.flatten(1)}  # noqa: E731
    assert not flat(lab) & flat(unl)
    lab2, _ = datasets.labelled_split(train, per_class=5, seed=0)
    assert torch.equal(lab.x, lab2.x)
    with pytest.raises(ValueError, match="per_class"):
        datasets.labelled_split(train, per_class=0)
    with pytest.raises(ValueError, match="leaves no unlabelled"):
        datasets.labelled_split(train, per_class=10_000)


def test_shapes_balanced_seeded_and_varied():
    ds = datasets.shapes(n=90, size=24, seed=0)
    assert ds.x.shape == (90, 3, 24, 24) and ds.classes == list(datasets.SHAPE_CLASSES)
    assert ds.counts() == [30, 30, 30]
    assert torch.equal(ds.x, datasets.shapes(n=90, size=24, seed=0).x)
    assert not torch.equal(ds.x, datasets.shapes(n=90, size=24, seed=1).x)
    # colours vary: many distinct background colours
    corners = {tuple((ds.x[i, :, 0, 0] * 255).round().int().tolist()) for i in range(90)}
    assert len(corners) > 60
    with pytest.raises(ValueError, match="unknown \\['hexagon'\\]"):
        datasets.shapes(classes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="n must"):
        datasets.shapes(n=0)


def _write_folder(root, spec, size=(12, 9)):
    for cls, n in spec.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            colour = (200, 30, 30) if cls == "red" else (30, 30, 200)
            Image.new("RGB", size, colour).save(root / cls / f"{i}.png")


def test_image_folder_loads_resizes_and_labels(tmp_path):
    _write_folder(tmp_path / "imgs", {"red": 3, "blue": 2})
    (tmp_path / "imgs" / "red" / "notes.txt").write_text("not an image")
    ds = datasets.image_folder(tmp_path / "imgs", size=16)
    assert ds.classes == ["blue", "red"] and ds.counts() == [2, 3]
    assert ds.x.shape == (5, 3, 16, 16)
    red = ds.x[ds.y == 1]
    assert torch.allclose(red[:, 0].mean(), torch.tensor(200 / 255), atol=0.01)
    grey = datasets.image_folder(tmp_path / "imgs", size=8, classes=["red"], channels=1)
    assert grey.x.shape == (3, 1, 8, 8) and grey.classes == ["red"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        datasets.image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        datasets.image_folder(tmp_path / "empty")
    _write_folder(tmp_path / "imgs", {"red": 1})
    (tmp_path / "imgs" / "blue").mkdir()
    with pytest.raises(ValueError, match="has no images"):
        datasets.image_folder(tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"classes \['green'\] are not subfolders"):
        datasets.image_folder(tmp_path / "imgs", classes=["green"])
    with pytest.raises(ValueError, match="size"):
        datasets.image_folder(tmp_path / "imgs", size=0)
    with pytest.raises(ValueError, match="channels"):
        datasets.image_folder(tmp_path / "imgs", classes=["red"], channels=2)


def test_loader_shuffles_reproducibly():
    ds = datasets.digits().val
    first = lambda: next(iter(datasets.loader(ds, 16, shuffle=True, seed=4)))[1]  # noqa: E731
    assert torch.equal(first(), first())
    assert torch.equal(next(iter(datasets.loader(ds, 16)))[1], ds.y[:16])
    with pytest.raises(ValueError, match="batch_size"):
        datasets.loader(ds, 0)


def test_imageset_validates_shapes_and_labels():
    with pytest.raises(ValueError, match="x must be a float tensor of shape"):
        datasets.ImageSet(torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="y must be an int64 tensor of shape"):
        datasets.ImageSet(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="y must be an int64"):
        datasets.ImageSet(torch.zeros(3, 1, 8, 8), torch.zeros(3), ["a"])
    # a label outside the classes: split() would silently drop that image
    with pytest.raises(ValueError, match="labels 0..2, but there are 2 classes"):
        datasets.ImageSet(torch.zeros(3, 1, 8, 8), torch.tensor([0, 1, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="labels -1..1"):
        datasets.ImageSet(torch.zeros(3, 1, 8, 8), torch.tensor([0, 1, -1]), ["a", "b"])
    with pytest.raises(ValueError, match="classes must be a non-empty list"):
        datasets.ImageSet(torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.long), "ab")


def test_image_folder_reads_16_bit_and_float_images_at_their_values(tmp_path):
    tmp_path = tmp_path / "imgs"
    (tmp_path / "deep").mkdir(parents=True)
    (tmp_path / "float").mkdir()
    ramp = np.linspace(0.0, 1.0, 64).reshape(8, 8)  # both ends of the range, exactly
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "deep" / "a.png")
    Image.fromarray(ramp.astype(np.float32), "F").save(tmp_path / "float" / "b.tiff")
    ds = datasets.image_folder(tmp_path, size=8, channels=1)
    for image in ds.x:  # not clipped to all-1 (16-bit) or all-0 (float), as convert("L") does
        assert torch.allclose(image[0], torch.tensor(ramp, dtype=torch.float32), atol=1e-4)
    rgb = datasets.image_folder(tmp_path, size=8, channels=3)
    assert torch.equal(rgb.x[:, 0], rgb.x[:, 2])
    Image.fromarray(np.full((8, 8), 3.0, np.float32), "F").save(tmp_path / "float" / "c.tiff")
    with pytest.raises(ValueError, match="c.tiff.*outside 0..1"):
        datasets.image_folder(tmp_path, size=8)


def test_image_folder_skips_fifos_and_names_unreadable_files(tmp_path):
    tmp_path = tmp_path / "imgs"
    (tmp_path / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a" / "red.png")
    os.mkfifo(tmp_path / "a" / "pipe.png")  # PIL would block on it forever
    assert len(datasets.image_folder(tmp_path, size=8)) == 1
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png.*cannot be read"):
        datasets.image_folder(tmp_path, size=8)


def _set(n=12, k=3):
    return datasets.ImageSet(torch.rand(n, 1, 8, 8), torch.arange(n) % k, [f"c{i}" for i in range(k)])


@pytest.mark.parametrize("make, word", [
    (lambda: datasets.ImageSet(torch.rand(3, 1, 4, 4) * 255, torch.zeros(3, dtype=torch.long), ["a"]), "x"),
    (lambda: datasets.ImageSet(torch.full((3, 1, 4, 4), float("nan")), torch.zeros(3, dtype=torch.long), ["a"]), "x"),
    (lambda: datasets.ImageSet(torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), ["a", "a"]), "classes"),
    (lambda: _set().subset([0.5]), "index"),
    (lambda: _set().subset("a"), "index"),
    (lambda: _set().subset([True, False]), "index"),
    (lambda: datasets.split(None), "ds"),
    (lambda: datasets.split(torch.utils.data.TensorDataset(torch.rand(4, 1, 4, 4))), "ds"),
    (lambda: datasets.split(_set(), seed=-1), "seed"),
    (lambda: datasets.labelled_split(None, 2), "ds"),
    (lambda: datasets.digits(seed=-1), "seed"),
    (lambda: datasets.shapes(n=6, size=None), "size"),
    (lambda: datasets.shapes(n=6, size=8, classes=("circle", "circle")), "classes"),
    (lambda: datasets.shapes(n=6, size=8, seed=-1), "seed"),
    (lambda: datasets.image_folder(None), "root"),
    (lambda: datasets.loader(None), "ds"),
    (lambda: datasets.loader(torch.utils.data.TensorDataset(torch.rand(0, 2)), shuffle=True), "ds"),
    (lambda: datasets.loader(_set(), shuffle=True, seed=-1), "seed"),
])
def test_bad_arguments_are_named(make, word):
    with pytest.raises((ValueError, TypeError), match=word):
        make()


def test_subset_takes_a_bool_mask_and_an_empty_index():
    ds = _set()
    mask = torch.arange(12) % 2 == 0
    assert torch.equal(ds.subset(mask).x, ds.x[::2]) and torch.equal(ds.subset(mask.tolist()).y, ds.y[::2])
    assert len(ds.subset([])) == 0 and len(ds.subset(np.array([1, 2]))) == 2


def test_image_folder_rejects_an_empty_class_list(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(ValueError, match="classes"):
        datasets.image_folder(tmp_path, size=8, classes=[])
