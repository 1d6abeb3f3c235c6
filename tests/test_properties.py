"""Property-based tests (hypothesis) over lablib's public API.

Two kinds of property:
- bad input: for any value a careless learner might pass to an argument, a function either
  accepts it (and then the value was valid) or raises ValueError/TypeError naming the argument;
  never a traceback from deep inside torch, never a silently wrong result;
- results: for generated valid inputs, what a function returns obeys the rule it stands for
  (a quantized value is on the grid, a mask prunes exactly the smallest weights, a split is
  disjoint and stratified...).
Every test runs with HOME and TMPDIR pointed at empty folders and checks afterwards that
nothing was written outside the project's data/ and results/.
"""

import json
import math
import os
import signal
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from lablib.core import bench, cache, checks, config, results, validate, viz
from lablib.data import augment, datasets, tables
from lablib.methods import (
    amp,
    continual,
    distill,
    distributed,
    efficient,
    fixmatch,
    imbalance,
    mixup,
    monitoring,
    pruning,
    quality,
    quantize,
    tuning,
)

# Reproducible in CI: the same examples every run, no example database written to the project.
settings.register_profile("lablib", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("lablib")


HANG_S = 120  # a whole test (all its examples) taking longer than this counts as a hang


@pytest.fixture(autouse=True)
def writes_stay_inside(tmp_path, monkeypatch):
    """HOME and TMPDIR are empty folders during the test and must still be empty after it; the
    project (LAB_ROOT, set by conftest.py) gains nothing but data/ and results/. A test that
    hangs fails after HANG_S seconds instead of blocking the suite."""
    home, tmp = tmp_path / "home", tmp_path / "tmpdir"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    before = set(os.listdir(tmp_path))

    def hung(signum, frame):
        raise TimeoutError(f"a call hung: no answer within {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not any(home.iterdir()), f"wrote into the home folder: {list(home.iterdir())}"
    assert not any(tmp.iterdir()), f"left files in TMPDIR: {list(tmp.iterdir())}"
    new = set(os.listdir(tmp_path)) - before
    assert new <= {"data", "results"}, f"wrote outside data/ and results/: {sorted(new)}"


# --- bad input -------------------------------------------------------------------------------

# Anything a learner might type: numbers of every kind (NaN, inf, huge, negative), bools,
# strings (digits too), None, containers.
anything = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=5), st.none(), st.lists(st.integers(0, 3), max_size=3),
    st.sampled_from(["3", "0.5", "nan", "", "-1", "²"]),
)

DS = datasets.ImageSet(torch.rand(12, 1, 4, 4), torch.arange(12) % 3, ["a", "b", "c"])
W = torch.randn(4, 8)
X = torch.rand(2, 3, 8, 8)
PERM = torch.tensor([1, 0])
MIX_MODEL = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
LABELS = np.arange(12) % 3  # three classes of four


def is_int(v, low=None, high=None) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)
            and (low is None or v >= low) and (high is None or v <= high))


def is_real(v, low=-math.inf, high=math.inf, low_open=False, high_open=False) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return False
    return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)


# (what is called, the argument's name, call(value), is the value valid?)
ARGUMENTS = [
    ("validate.positive_int", "count", lambda v: validate.positive_int("count", v), lambda v: is_int(v, 1)),
    ("config.seed_everything", "seed", config.seed_everything, lambda v: is_int(v, 0)),
    ("datasets.loader", "batch_size", lambda v: datasets.loader(DS, batch_size=v), lambda v: is_int(v, 1)),
    ("datasets.split", "val", lambda v: datasets.split(DS, val=v, test=0.2), lambda v: is_real(v, 0, 0.8, high_open=True)),
    ("datasets.partition", "fraction", lambda v: datasets.partition(DS, fraction=v),
     lambda v: is_real(v, 0, 1, low_open=True, high_open=True)),
    ("datasets.shapes", "n", lambda v: datasets.shapes(n=v if not is_int(v) or v < 30 else 30, size=8),
     lambda v: is_int(v, 1)),
    ("augment.weak", "shift", lambda v: augment.weak(X, shift=v), lambda v: is_int(v, 0, 7)),
    ("augment.cutout", "size", lambda v: augment.cutout(X, size=v), lambda v: is_real(v, 0, 1, low_open=True)),
    ("quantize.quantize_tensor", "scale", lambda v: quantize.quantize_tensor(W, v),
     lambda v: is_real(v, torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max)),
    ("quantize.quantize_tensor", "bits", lambda v: quantize.quantize_tensor(W, 0.1, bits=v), lambda v: is_int(v, 2, 16)),
    ("quantize.quantize_tensor", "zero_point", lambda v: quantize.quantize_tensor(W, 0.1, zero_point=v),
     lambda v: is_int(v, -128, 127)),
    ("quantize.symmetric_scale", "bits", lambda v: quantize.symmetric_scale(W, bits=v), lambda v: is_int(v, 2, 16)),
    ("quantize.fake_quantize", "bits", lambda v: quantize.fake_quantize(W, bits=v), lambda v: is_int(v, 2, 16)),
    ("pruning.l1_mask", "amount", lambda v: pruning.l1_mask(W, v), lambda v: is_real(v, 0, 1)),
    ("pruning.nm_mask", "n", lambda v: pruning.nm_mask(W, n=v, m=4), lambda v: is_int(v, 0, 4)),
    ("distill.soft_targets", "T", lambda v: distill.soft_targets(W, T=v),
     lambda v: is_real(v, 0, math.inf, low_open=True, high_open=True)),
    ("distill.pseudo_labels", "threshold", lambda v: distill.pseudo_labels(W, v), lambda v: is_real(v, 0, 1)),
    ("fixmatch.check_tau", "tau", fixmatch.check_tau, lambda v: is_real(v, 0, 1, low_open=True)),
    ("fixmatch.check_mu", "mu", fixmatch.check_mu, lambda v: is_int(v, 1)),
    ("bench.verdict", "ratio", lambda v: bench.verdict(v), lambda v: is_real(v, 0, math.inf, low_open=True)),
    ("bench.verdict", "margin", lambda v: bench.verdict(2.0, margin=v), lambda v: is_real(v, 1, math.inf, low_open=True)),
    ("cache.cache_folder", "name", lambda v: cache.cache_folder(v, {}),
     lambda v: isinstance(v, str) and v.isprintable() and v != "" and Path(v).name == v and not v.startswith(".")),
    ("cache.write_atomic", "text", lambda v: cache.write_atomic(config.data_dir() / "t.txt", v), lambda v: isinstance(v, str)),
    ("augment.affine", "rotation", lambda v: augment.affine(X, rotation=v), lambda v: is_real(v, 0, 180)),
    ("augment.affine", "shift", lambda v: augment.affine(X, shift=v), lambda v: is_real(v, 0, 1)),
    ("augment.affine", "shear", lambda v: augment.affine(X, shear=v), lambda v: is_real(v, 0, 89)),
    ("augment.affine", "zoom", lambda v: augment.affine(X, zoom=v), lambda v: is_real(v, 0, 1, high_open=True)),
    ("augment.affine", "flip", lambda v: augment.affine(X, flip=v), lambda v: isinstance(v, bool)),
    ("augment.affine", "fill", lambda v: augment.affine(X, fill=v),
     lambda v: isinstance(v, str) and v in ("nearest", "constant", "reflect")),
    ("mixup.mixup_loss", "lam", lambda v: mixup.mixup_loss(MIX_MODEL, X, torch.tensor([0, 2]), v, PERM),
     lambda v: is_real(v, 0, 1)),
    ("mixup.mixup_targets", "lam", lambda v: mixup.mixup_targets(torch.tensor([0, 2]), PERM, v, 3),
     lambda v: is_real(v, 0, 1)),
    ("mixup.mixup_targets", "num_classes", lambda v: mixup.mixup_targets(torch.tensor([0, 0]), PERM, 0.5, v),
     lambda v: is_int(v, 1)),
    ("mixup.random_box", "height", lambda v: mixup.random_box(v, 8, 0.5), lambda v: is_int(v, 1)),
    ("mixup.random_box", "width", lambda v: mixup.random_box(8, v, 0.5), lambda v: is_int(v, 1)),
    ("mixup.random_box", "lam", lambda v: mixup.random_box(8, 8, v), lambda v: is_real(v, 0, 1)),
    ("mixup.cutmix", "box", lambda v: mixup.cutmix(X, PERM, v), lambda v: False),  # `anything` has no 4-long box
    ("imbalance.make_rare", "keep", lambda v: imbalance.make_rare(LABELS, LABELS, 0, v), lambda v: is_int(v, 1, 4)),
    ("imbalance.make_rare", "seed", lambda v: imbalance.make_rare(LABELS, LABELS, 0, 2, seed=v),
     lambda v: is_int(v, 0, 2**32 - 1)),
    ("imbalance.class_weights", "num_classes", lambda v: imbalance.class_weights(LABELS * 0, v), lambda v: is_int(v, 1)),
    ("imbalance.make_rare", "cls", lambda v: imbalance.make_rare(LABELS, LABELS, v, 1),
     lambda v: is_int(v) and v in set(LABELS.tolist())),
    ("imbalance.rare_class_scores", "cls", lambda v: imbalance.rare_class_scores(LABELS, LABELS, v),
     lambda v: is_int(v) and v in set(LABELS.tolist())),
]


@pytest.mark.parametrize("what, arg, call, valid", ARGUMENTS, ids=[f"{a[0]}:{a[1]}" for a in ARGUMENTS])
@settings(max_examples=40)
@given(value=anything)
def test_bad_input_is_refused_by_name(what, arg, call, valid, value):
    try:
        call(value)
    except (ValueError, TypeError) as e:
        assert not valid(value), f"{what} refused the valid {arg}={value!r}: {e}"
        assert arg in str(e), f"{what}({arg}={value!r}) raised an error that does not name {arg}: {e}"
        return
    assert valid(value), f"{what} silently accepted {arg}={value!r}"


# --- results ---------------------------------------------------------------------------------

floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@given(st.lists(floats32, min_size=1, max_size=64))
def test_round_to_bf16_is_the_bf16_cast(values):
    x = torch.tensor(values, dtype=torch.float32)
    got, want = amp.round_to_bf16(x), x.to(torch.bfloat16).float()
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got[~got.isnan()], want[~want.isnan()])


@given(st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=64),
       st.floats(1e-3, 10), st.integers(2, 16), st.data())
def test_quantize_lands_on_the_grid_and_round_trips_within_half_a_step(values, scale, bits, data):
    zero_point = data.draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    x = torch.tensor(values)
    q = quantize.quantize_tensor(x, scale, zero_point, bits)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert torch.equal(q, q.round()) and q.min() >= lo and q.max() <= hi
    back = quantize.dequantize(q, scale, zero_point)
    inside = (x >= (lo - zero_point) * scale) & (x <= (hi - zero_point) * scale)  # not clipped
    assert ((back - x)[inside].abs() <= scale / 2 * (1 + 1e-5) + 1e-6).all()


@given(st.integers(1, 40), st.floats(0, 0.99))
def test_l1_mask_prunes_exactly_the_smallest_weights(n, amount):
    w = torch.randn(n, generator=torch.Generator().manual_seed(n))
    mask = pruning.l1_mask(w, amount)
    pruned = mask == 0
    assert pruned.sum().item() == round(amount * n)
    if pruned.any() and (~pruned).any():
        assert w[pruned].abs().max() <= w[~pruned].abs().min()


@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_nm_mask_keeps_n_in_every_group_of_m(rows, groups, data):
    m = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(0, m))
    w = torch.randn(rows, groups * m, generator=torch.Generator().manual_seed(rows * 31 + m))
    mask = pruning.nm_mask(w, n=n, m=m)
    assert (mask.reshape(rows, groups, m).sum(-1) == n).all()


@given(st.lists(st.integers(0, 2), min_size=3, max_size=60), st.floats(0, 0.45), st.floats(0, 0.45), st.integers(0, 9))
def test_split_is_disjoint_complete_and_keeps_every_label(labels, val, test, seed):
    y = torch.tensor(labels)
    x = torch.arange(len(y), dtype=torch.float32).reshape(-1, 1, 1, 1) / 64  # each image: its index / 64

    def index(part):
        return (part.x.flatten() * 64).round().long()

    parts = datasets.split(datasets.ImageSet(x, y, ["a", "b", "c"]), val=val, test=test, seed=seed)
    ids = [index(p).tolist() for p in (parts.train, parts.val, parts.test)]
    assert sorted(sum(ids, [])) == list(range(len(y))), "an image was lost or duplicated"
    for p in (parts.train, parts.val, parts.test):
        assert torch.equal(p.y, y[index(p)]), "an image changed label"


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=50))
def test_confusion_counts_every_pair_once(pairs):
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    m = viz.confusion(y_true, y_pred, list("abcd")).matrix
    assert m.sum().item() == len(pairs)
    assert m.trace().item() == sum(t == p for t, p in pairs)
    for t, p in set(pairs):
        assert m[t, p].item() == pairs.count((t, p))


@given(st.lists(st.integers(-3, 6), min_size=1, max_size=10))
def test_confusion_refuses_labels_outside_the_classes(labels):
    assume(min(labels) < 0 or max(labels) >= 4)
    with pytest.raises(ValueError, match="y_true"):
        viz.confusion(labels, [0] * len(labels), list("abcd"))


@given(st.lists(st.floats(-50, 50), min_size=2, max_size=10), st.floats(0.1, 20))
def test_soft_targets_are_probabilities_ordered_like_the_logits(logits, T):
    p = distill.soft_targets(torch.tensor([logits]), T=T)[0]
    assert torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-5) and (p >= 0).all()
    order = torch.tensor(logits).argsort()
    assert (p[order].diff() >= -1e-7).all()


@given(st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(math.nan)), min_size=1, max_size=8), st.floats(0, 1e-2))
def test_difference_says_none_exactly_when_the_values_are_close(values, nudge):
    expected = torch.tensor(values, dtype=torch.float64)
    got = expected + nudge
    close = torch.allclose(got, expected, atol=1e-5, rtol=1e-4, equal_nan=True)
    assert (checks.difference(got, expected) is None) == close


@given(st.text(max_size=200))
def test_write_atomic_round_trips_any_text_and_leaves_nothing_behind(text):
    path = config.data_dir() / "note.txt"
    cache.write_atomic(path, text)
    assert path.read_text(encoding="utf-8") == text
    assert [p.name for p in path.parent.iterdir()] == ["note.txt"]


@given(st.text(min_size=1, max_size=20))
def test_cache_folder_names_never_leave_the_cache(name):
    try:
        folder = cache.cache_folder(name, {"k": 1})
    except ValueError as e:
        assert "name" in str(e)
        return
    root = (config.data_dir() / "cache").resolve()
    assert folder.resolve().parent == root


metric_values = st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=False, allow_infinity=False),
                          st.booleans(), st.text(max_size=10))


@given(st.dictionaries(st.text(min_size=1, max_size=8), metric_values, min_size=1, max_size=5))
def test_record_round_trips_its_metrics(metrics):
    results.record(metrics, lab="99_probe", scale="smoke")
    saved = results.load_records("smoke")["99_probe"]
    assert saved["metrics"] == json.loads(json.dumps(metrics))


@given(st.integers(0, 10**6), st.floats(0.01, 1.0), st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "F"]))
def test_image_folder_reads_every_mode_at_its_values(seed, level, mode):
    rng = np.random.default_rng(seed)
    root = config.data_dir() / "imgs"
    (root / "c").mkdir(parents=True, exist_ok=True)
    grey = (rng.random((6, 6)) * level).astype(np.float32)  # values in [0, level]
    if mode == "F":
        img, want = Image.fromarray(grey, "F"), grey
    elif mode == "I;16":
        raw = np.round(grey * 65535).astype(np.uint16)
        img, want = Image.fromarray(raw), raw / 65535
    else:
        raw = np.round(grey * 255).astype(np.uint8)
        img, want = Image.fromarray(raw, "L").convert(mode), raw / 255
    img.save(root / "c" / ("x.tiff" if mode == "F" else "x.png"))
    ds = datasets.image_folder(root, size=6, channels=1)
    assert np.allclose(ds.x[0, 0].numpy(), want, atol=1.5 / 255), f"mode {mode} read wrongly"
    for f in (root / "c").iterdir():
        f.unlink()


@given(st.integers(1, 8), st.floats(0, 1), st.integers(0, 2**16))
def test_cross_entropy_against_mixup_targets_equals_mixup_loss(n, lam, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    perm = torch.randperm(n, generator=g)
    logits = MIX_MODEL(lam * x + (1 - lam) * x[perm])
    soft = torch.nn.functional.cross_entropy(logits, mixup.mixup_targets(y, perm, lam, 3))
    assert torch.allclose(soft, mixup.mixup_loss(MIX_MODEL, x, y, lam, perm), atol=1e-5)


@given(st.integers(1, 64), st.integers(1, 64), st.floats(0, 1), st.integers(0, 2**16))
def test_random_box_stays_inside_and_covers_at_most_its_unclipped_size(h, w, lam, seed):
    top, left, bh, bw = mixup.random_box(h, w, lam, torch.Generator().manual_seed(seed))
    assert 0 <= top and 0 <= left and 0 <= bh and 0 <= bw and top + bh <= h and left + bw <= w
    ratio = math.sqrt(1 - lam)
    assert bh * bw <= round(ratio * h) * round(ratio * w)


@given(st.integers(1, 6), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**16), st.data())
def test_cutmix_keeps_exactly_the_pixels_outside_its_box(n, h, w, seed, data):
    g = torch.Generator().manual_seed(seed)
    x, perm = torch.rand(n, 2, h, w, generator=g), torch.randperm(n, generator=g)
    box = mixup.random_box(h, w, data.draw(st.floats(0, 1)), g)
    out, lam = mixup.cutmix(x, perm, box)
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[box[0] : box[0] + box[2], box[1] : box[1] + box[3]] = True
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside]) and torch.equal(out[:, :, inside], x[perm][:, :, inside])
    assert lam == pytest.approx(1 - inside.sum().item() / (h * w))


@given(st.lists(st.integers(0, 5), min_size=1, max_size=80), st.integers(6, 9))
def test_class_weights_give_every_present_class_the_same_total(labels, num_classes):
    y = np.array(labels)
    w = imbalance.class_weights(y, num_classes)
    counts = np.bincount(y, minlength=num_classes)
    assert np.allclose((w * counts)[counts > 0], len(y) / num_classes)
    assert (w[counts == 0] == 0).all()


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.integers(0, 3), st.integers(0, 2**32 - 1), st.data())
def test_make_rare_keeps_keep_of_the_class_and_all_the_others_in_order(labels, cls, seed, data):
    y = np.array(labels)
    assume((y == cls).any())
    keep = data.draw(st.integers(1, int((y == cls).sum())))
    idx, ry = imbalance.make_rare(np.arange(len(y)), y, cls, keep, seed)
    assert (ry == cls).sum() == keep and np.array_equal(ry, y[idx])
    assert np.all(np.diff(idx) > 0)  # a subsequence: order kept, nothing repeated
    assert np.array_equal(idx[ry != cls], np.flatnonzero(y != cls))


# Lab 10 (data quality), from its module's developer.


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=4, max_size=60), st.floats(0, 10))
def test_iqr_outliers_flags_exactly_the_values_outside_the_fences(values, k):
    x = np.array(values)[:, None]
    flags = quality.iqr_outliers(x, k)[:, 0]
    q1, q3 = np.quantile(x[:, 0], [0.25, 0.75])
    outside = (x[:, 0] < q1 - k * (q3 - q1)) | (x[:, 0] > q3 + k * (q3 - q1))
    assert (flags == outside).all()
    assert not (quality.iqr_outliers(x, k + 1.0)[:, 0] & ~flags).any()  # a wider fence flags a subset


@given(st.integers(1, 12), st.integers(1, 6), st.floats(0, 0.5), st.floats(0, 0.3), st.floats(0, 0.2),
       st.integers(0, 2**32 - 1))
def test_inject_faults_changes_only_the_cells_it_reports(rows, cols, missing, unit, sentinel, seed):
    df = pd.DataFrame(np.random.default_rng(0).uniform(1, 2, (rows, cols)))
    f = tables.inject_faults(df, missing=missing, unit=unit, sentinel=sentinel, seed=seed)
    kind, dirty, clean = f.kind.to_numpy(), f.dirty.to_numpy(), df.to_numpy()
    counts = f.counts()
    assert sum(counts.values()) == round((missing + unit + sentinel) * df.size) <= df.size
    assert all(abs(counts[k] - r * df.size) <= 1 for k, r in (("missing", missing), ("unit", unit), ("sentinel", sentinel)))
    assert np.array_equal(dirty[kind == 0], clean[kind == 0])
    assert np.isnan(dirty[kind == 1]).all() and (dirty[kind == 3] == -999).all()
    assert np.isin(np.round(dirty[kind == 2] / clean[kind == 2]), [10, 100, 1000]).all()


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=1, max_size=40), st.booleans())
def test_best_so_far_is_monotone_and_made_of_seen_values(values, maximize):
    best = tuning.best_so_far(values, maximize=maximize)
    assert len(best) == len(values)
    seen = [v for v in best if not math.isnan(v)]
    assert seen == sorted(seen, reverse=not maximize)  # never gets worse
    assert all(v in values for v in seen)
    finite = [v for v in values if not math.isnan(v)]
    if finite:
        assert best[-1] == (max(finite) if maximize else min(finite))


@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**16))
def test_train_many_member_does_not_depend_on_its_neighbours(k, epochs, seed):
    """Member 0 trained alone or beside k others ends identically (its own weights, batches, loss)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(24, 5, generator=g), torch.randint(0, 3, (24,), generator=g)
    lrs = [0.1] + torch.rand(k, generator=g).mul(3).tolist()
    widths = [4] + torch.randint(1, 12, (k,), generator=g).tolist()
    alone = tuning.train_many(x, y, {"t": (x, y)}, lr=0.1, hidden=4, seed=seed, epochs=epochs, batch_size=8)
    crowd = tuning.train_many(x, y, {"t": (x, y)}, lr=lrs, hidden=widths, seed=[seed] + list(range(k)),
                              epochs=epochs, batch_size=8)
    torch.testing.assert_close(crowd["t_loss"][0], alone["t_loss"][0], atol=1e-5, rtol=1e-4)


@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=40), st.floats(1, 50), st.integers(1, 10), st.integers(-10, 10))
def test_first_explosion_is_the_first_norm_over_factor_times_the_median_and_scale_free(norms, factor, window, k):
    got = monitoring.first_explosion(norms, factor, window)
    fires = [i for i in range(window, len(norms)) if norms[i] > factor * statistics.median(norms[i - window:i])]
    assert got == (fires[0] if fires else None)
    assert monitoring.first_explosion([2.0**k * n for n in norms], factor, window) == got  # units do not matter


@given(st.lists(st.floats(0, 10), max_size=40), st.integers(1, 8))
def test_early_stopping_restores_the_first_minimum_and_stops_patience_after_it(losses, patience):
    best, stop = monitoring.early_stopping(losses, patience)
    if not losses:
        assert (best, stop) == (None, None)
        return
    seen = losses if stop is None else losses[: stop + 1]
    assert best == seen.index(min(seen))
    assert (len(losses) - 1 - best < patience) if stop is None else (stop - best == patience)


@given(st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True)), max_size=30))
def test_series_round_trips_numbers_and_refuses_nonfinite_only_when_asked(values):
    assert validate.series("xs", values) == [float(v) for v in values] or any(math.isnan(v) for v in values)
    assert validate.series("xs", torch.tensor([float(v) for v in values], dtype=torch.float64)) == \
        validate.series("xs", [float(v) for v in values]) or any(math.isnan(v) for v in values)
    if all(math.isfinite(v) for v in values):
        assert validate.series("xs", values, finite=True) == [float(v) for v in values]
    else:
        with pytest.raises(ValueError, match=r"xs\[\d+\]"):
            validate.series("xs", values, finite=True)
    for bad in ("12", None, [1.0, "2"], [True]):
        with pytest.raises(TypeError, match="xs"):
            validate.series("xs", bad)


@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2), st.sampled_from([1, 3, 5]),
       st.integers(0, 10**6))
def test_separable_conv_is_a_grouped_then_pointwise_convolution_and_its_counts_add_up(c, c_out, n, padding, k, seed):
    g = torch.Generator().manual_seed(seed)
    side = k + 2  # big enough for any kernel without padding
    x, dw, pw = torch.randn(n, c, side, side, generator=g), torch.randn(c, 1, k, k, generator=g), torch.randn(c_out, c, 1, 1, generator=g)
    want = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, dw, padding=padding, groups=c), pw)
    torch.testing.assert_close(efficient.separable_conv(x, dw, pw, padding=padding), want, atol=1e-4, rtol=1e-4)
    layer = torch.nn.Sequential(torch.nn.Conv2d(c, c, k, padding=padding, groups=c, bias=False),
                                torch.nn.Conv2d(c, c_out, 1, bias=False))
    assert sum(p.numel() for p in layer.parameters()) == efficient.conv_params(c, c_out, k, separable=True)
    h = side + 2 * padding - k + 1
    assert efficient.count_flops(layer, x)["total"] == efficient.conv_flops(n, c, c_out, h, h, k, separable=True)
    share = efficient.conv_params(c, c_out, k, separable=True) / efficient.conv_params(c, c_out, k)
    assert share == pytest.approx(1 / c_out + 1 / (k * k))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.floats(0, 1e4), st.floats(-3, 3), st.integers(0, 2**16))
def test_ewc_penalty_is_a_nonnegative_quadratic_with_gradient_lambda_f_delta(rows, cols, lam, t, seed):
    g = torch.Generator().manual_seed(seed)
    anchor = {"w": torch.randn(rows, cols, generator=g, dtype=torch.float64), "b": torch.randn(rows, generator=g, dtype=torch.float64)}
    fisher = {k: torch.rand(v.shape, generator=g, dtype=torch.float64) for k, v in anchor.items()}
    delta = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in anchor.items()}
    params = {k: (anchor[k] + t * delta[k]).requires_grad_() for k in anchor}
    value = continual.ewc_penalty(params, fisher, anchor, lam)
    unit = continual.ewc_penalty({k: anchor[k] + delta[k] for k in anchor}, fisher, anchor, lam)
    assert value.item() >= 0
    assert abs(value.item() - t * t * unit.item()) <= 1e-9 * max(1.0, unit.item() * t * t)
    value.backward()
    for k in anchor:
        assert torch.allclose(params[k].grad, lam * fisher[k] * t * delta[k], rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(2, 5), st.booleans(), st.integers(0, 2**16))
def test_fisher_of_a_linear_softmax_model_is_its_closed_form(n, d, k, empirical, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(d, k).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    with torch.no_grad():
        p = model(x).softmax(1)
    r2 = (torch.nn.functional.one_hot(y, k) - p) ** 2 if empirical else p * (1 - p)
    f = continual.fisher_diagonal(model, x, y if empirical else None, batch_size=int(torch.randint(1, 13, (1,), generator=g)))
    assert torch.allclose(f["weight"], (r2[:, :, None] * x[:, None, :] ** 2).mean(0), atol=1e-10)
    assert torch.allclose(f["bias"], r2.mean(0), atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.lists(st.integers(0, 5), max_size=3), st.booleans(), st.integers(0, 2**16))
def test_ring_allreduce_is_the_sum_on_every_rank_for_any_ranks_and_shape(n, shape, integers, seed):
    g = torch.Generator().manual_seed(seed)
    ts = ([torch.randint(-10**6, 10**6, shape, generator=g) for _ in range(n)] if integers
          else [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(n)])
    ring, total = distributed.ring_allreduce(ts), sum(ts[1:], ts[0])
    assert len(ring) == n
    for r in ring:  # integers exactly; floats up to the order of the additions
        assert r.shape == total.shape and r.dtype == total.dtype
        assert torch.equal(r, total) if integers else torch.allclose(r, total, rtol=1e-12, atol=1e-12)
    chunks = distributed.reduce_scatter_sum(ts)  # ...and its first half hands rank r chunk r of the sum
    assert torch.equal(torch.cat(chunks), distributed.allreduce_sum(ts)[0].reshape(-1))


@given(st.integers(1, 10**12), st.integers(1, 4096), st.sampled_from([distributed.FP32_ADAM, distributed.MIXED_ADAM]))
def test_zero_bytes_never_grow_with_the_stage_and_the_shards_add_up_to_at_least_the_whole(n_params, n_ranks, precision):
    per_stage = [distributed.zero_bytes(n_params, n_ranks, s, precision=precision) for s in range(4)]
    for before, after in zip(per_stage[:-1], per_stage[1:], strict=True):
        assert all(after[k] <= before[k] for k in before)
    full = per_stage[0]
    assert full["total"] == n_params * precision.total
    for stage, held in enumerate(per_stage):
        assert held["total"] == held["params"] + held["grads"] + held["optimizer"]
        assert n_ranks * held["total"] >= full["total"]  # sharding spreads the bytes, never loses any
        saving = distributed.zero_saving(n_params, n_ranks, stage, precision=precision)
        assert 0 <= saving <= 1 - 1 / n_ranks + 1e-12
    if n_ranks == 1:
        assert all(held == full for held in per_stage)
