# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 09 — Augmentation and imbalance: where more (made-up) data pays, and where it lies
#
# **Source:** 《AI创业公司如何应对技术瓶颈?》 ("How AI start-ups deal with technical
# bottlenecks"), section 3.2.1 "数据增强" (data augmentation):
#
# > 数据增强是提升模型泛化能力的重要手段。具体步骤包括:1. 数据扩充:通过随机裁剪、旋转、缩放等方式,生成更多训练数据。
# > 2. 数据增强:使用数据增强技术,如SMOTE、Mixup等,进一步扩充数据集。3. 数据增广:引入噪声、变换等方式,增加数据多样性。
#
# > "Data augmentation is an important means of improving a model's generalisation. The steps:
# > 1. expand the data: generate more training data by random crops, rotations, scaling;
# > 2. augment it: use techniques such as SMOTE and Mixup to enlarge the data set further;
# > 3. diversify it: add noise and transformations."
#
# Its section 3.3.1 names the risk in the same breath: "生成数据的分布可能与真实数据有所差异,影响模型效果"
# ("the generated data's distribution may differ from the real data's, which hurts the model").
# The article gives no figure. Its section 5.2 gives a Keras `ImageDataGenerator`, which this lab
# maps to kornia and to plain torch and tests on digits.
#
# **What you will measure**, on real 8×8 handwritten digits:
#
# 1. what each augmentation in the article's list does to a digit, and the one that is wrong for
#    digits (the horizontal flip), measured;
# 2. with 50, 100 and 300 labels: no augmentation vs shifts and rotations vs **Mixup** (written in
#    this lab) vs both, over several seeds: where augmentation pays, and where it stops paying;
# 3. one digit made rare (5 training images): SMOTE vs random oversampling vs class weights vs
#    undersampling, scored on that digit's recall, the macro-F1 and the accuracy; and three errors
#    that the article's one-line mention of SMOTE does not prepare you for.
#
# **Objectives.** After this lab you can
#
# * translate an augmentation recipe between libraries (Keras → kornia → torch), with its units,
#   and say which transformations keep a label true for *your* data;
# * write Mixup's step (images and labels blended in the same share) and check it against a
#   reference;
# * measure an augmentation honestly: the same labelled images and training budget for every
#   variant, several seeds, the gain against the seed-to-seed spread;
# * handle a rare class with resampling or class weights inside an `imblearn` pipeline, and read
#   recall, macro-F1 and accuracy together.
#
# **Prerequisites.** Lab 00 (setup) and lab 01 (training a small CNN with `train.fit`); lab 05's
# weak and strong views help. Cross-entropy, recall and F1, what a scikit-learn pipeline is.
#
# **Time.** `smoke`: about 15 s; `cpu` (2 cores): about 1.5–2 min of computing; `gpu`: a few
# minutes (more steps and seeds). Reading and the exercises: 45–60 min.
#
# Answers to the open questions and exercises: `docs/answers/09_augmentation.md`.

# %%
import statistics

import kornia
import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
from imblearn.pipeline import make_pipeline
from imblearn.under_sampling import RandomUnderSampler
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline as sklearn_make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from lablib import table
from lablib.core import bench, checks, config, env, results, viz
from lablib.data import augment, datasets
from lablib.methods import imbalance, mixup
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(label_counts=(5,), seeds=1, steps=20, batch_size=32, lr=3e-3, alpha=0.4,
               rare=8, keep=5, imbalance_seeds=2),
    cpu=dict(label_counts=(5, 10, 30), seeds=3, steps=200, batch_size=32, lr=3e-3, alpha=0.4,
             rare=8, keep=5, imbalance_seeds=5),
    gpu=dict(label_counts=(5, 10, 30), seeds=5, steps=500, batch_size=32, lr=3e-3, alpha=0.4,
             rare=8, keep=5, imbalance_seeds=10),
)
device = config.device()
config.seed_everything(0)
print(env.line())
cfg

# %% [markdown]
# ## 1. The article's recipe, on a digit
#
# The article's augmentation, as it is written (Keras):
#
# ```python
# datagen = ImageDataGenerator(
#     rotation_range=20,
#     width_shift_range=0.1,
#     height_shift_range=0.1,
#     shear_range=0.1,
#     zoom_range=0.1,
#     horizontal_flip=True,
#     fill_mode='nearest')
# ```
#
# Each argument has a unit, and the units are not the same across libraries. Here is the list
# mapped to kornia (the augmentation library this curriculum uses on tensors) and to
# `lablib.data.augment.affine`, the same recipe in plain torch that the experiments below train
# with (section 2 says why). Every kornia entry but the flip is an argument of one
# `K.RandomAffine(...)`; a shift of 10 % is 0.8 pixel on these 8×8 digits.

# %%
table([
    {"Keras": "rotation_range=20", "means": "angle in ±20°", "kornia": "RandomAffine(degrees=20)", "augment.affine": "rotation=20"},
    {"Keras": "width/height_shift_range=0.1", "means": "shift ±10 % of the side", "kornia": "translate=(0.1, 0.1)", "augment.affine": "shift=0.1"},
    {"Keras": "shear_range=0.1", "means": "shear ±0.1 degree (!)", "kornia": "shear=0.1", "augment.affine": "shear=0.1"},
    {"Keras": "zoom_range=0.1", "means": "each axis × [0.9, 1.1]", "kornia": "scale=(0.9, 1.1, 0.9, 1.1)", "augment.affine": "zoom=0.1"},
    {"Keras": "horizontal_flip=True", "means": "mirror half the images", "kornia": "RandomHorizontalFlip()", "augment.affine": "flip=True"},
    {"Keras": "fill_mode='nearest'", "means": "outside pixels copy the edge", "kornia": "padding_mode='border'", "augment.affine": "fill='nearest'"},
], title="The article's ImageDataGenerator, mapped")

# %% [markdown]
# Below, each row applies one of them to the same ten test digits (kornia, seeded), with `p=1`
# so that every image is transformed; the last rows add the article's third step, noise, and the
# whole list at once with the two fill modes.

# %%
splits = datasets.digits()
test_loader = datasets.loader(splits.test, batch_size=512)
sample = splits.test.x[:10]
nearest = dict(padding_mode="border", p=1.0)  # Keras's fill_mode='nearest'
recipe = {
    "original": lambda x: x,
    "rotation_range=20": K.RandomAffine(degrees=20, **nearest),
    "shift_range=0.1": K.RandomAffine(degrees=0, translate=(0.1, 0.1), **nearest),
    "shear_range=0.1 (degrees)": K.RandomAffine(degrees=0, shear=0.1, **nearest),
    "zoom_range=0.1": K.RandomAffine(degrees=0, scale=(0.9, 1.1, 0.9, 1.1), **nearest),  # x and y drawn apart, as Keras
    "horizontal_flip": K.RandomHorizontalFlip(p=1.0),
    "noise (σ = 0.1)": lambda x: (x + 0.1 * torch.randn_like(x)).clamp(0, 1),
    "all, fill 'nearest'": K.RandomAffine(degrees=20, translate=(0.1, 0.1), shear=0.1, scale=(0.9, 1.1, 0.9, 1.1), **nearest),
    "all, fill 'constant'": K.RandomAffine(degrees=20, translate=(0.1, 0.1), shear=0.1, scale=(0.9, 1.1, 0.9, 1.1), p=1.0),
}
config.seed_everything(0)
views = {name: aug(sample) for name, aug in recipe.items()}
shear_change = (views["shear_range=0.1 (degrees)"] - sample).abs().max().item()
print(f"largest change of any pixel from shear_range=0.1: {shear_change:.4f} (pixels are in [0, 1])")
viz.image_grid(torch.cat(list(views.values())), ncols=10, size=0.9,
               labels=[name if j == 0 else "" for name in views for j in range(len(sample))],  # each row named once
               title=f"The article's list on ten test digits, one row per transformation (kornia {kornia.__version__})")

# %% [markdown]
# Three things to read in the grid:
#
# * **Shear.** Keras's `shear_range` is an angle in *degrees* (kornia's `shear` too), so the
#   article's 0.1 shears by at most a tenth of a degree; the line above prints how much that
#   moves any pixel. Whoever wrote `0.1` probably meant a shear *factor* (about 6°).
# * **Fill mode.** A rotation brings in corners from outside the image. `'nearest'` copies the
#   edge pixel there, `'constant'` paints 0; on digits, whose edges are background, the two look
#   alike. On photos, `'nearest'` smears the border into streaks.
# * **The horizontal flip.** A mirrored 3 is not a 3, and a mirrored 2, 4, 7 or 9 is no digit at
#   all. `horizontal_flip=True` is right for photos of cats (a mirrored cat is a cat) and wrong for
#   symbols: it trains the model on images whose label is false. Section 4 measures what that
#   costs.
#
# ## 2. The same recipe in plain torch, and why the experiments use it
#
# `augment.affine` draws, for each image, its own angle, shifts, shear, zoom factors (and mirror,
# when asked) and applies them in one `affine_grid` + `grid_sample`, with Keras's units. kornia
# does the same with more machinery per call (argument checks, parameter samplers, a matrix built
# in several steps); on tiny 8×8 images that fixed cost can outweigh the sampling itself. The
# experiments below make thousands of calls, so here are both, timed on one training batch on
# your machine:

# %%
article = dict(rotation=20, shift=0.1, shear=0.1, zoom=0.1, fill="nearest")  # the article's list, no flip
kornia_recipe = K.RandomAffine(degrees=20, translate=(0.1, 0.1), shear=0.1, scale=(0.9, 1.1, 0.9, 1.1), **nearest)
batch = splits.train.x[: cfg.batch_size]
times = bench.compare({"augment.affine": lambda: augment.affine(batch, **article),
                       "kornia RandomAffine": lambda: kornia_recipe(batch)}, rounds=2, warmup=2, repeats=10)
table({name: {"ms per batch": t.median_ms, "images": len(batch)} for name, t in times.items()})
ratio = times["kornia RandomAffine"].median_ms / times["augment.affine"].median_ms
word = bench.compared(ratio, margin=1.5)
print(f"augment.affine is {word} kornia here (kornia / ours = {ratio:.1f}x; 'faster' or 'slower' only beyond 1.5x)")
viz.image_grid(torch.cat([sample, augment.affine(sample, **article, generator=torch.Generator().manual_seed(0))]),
               ncols=10, size=0.9, title="augment.affine with the article's list (no flip): originals, then augmented")

# %% [markdown]
# ## 3. Mixup, written in the lab
#
# Mixup (Zhang et al. 2018) trains on blends of two images. For a batch, draw one share
# **λ ~ Beta(α, α)** and a random pairing `perm` of the batch; each image becomes
# `λ·x + (1 − λ)·x[perm]`, and its target becomes the same blend of the two labels. With one-hot
# labels, the cross-entropy against that blended target is `λ·CE(y) + (1 − λ)·CE(y[perm])`
# (cross-entropy is linear in the target), which is how the step below computes it. With α = 0.4,
# most λ lie near 0 or 1 (mild blends); α = 1 makes every share equally likely.
#
# This is the step every Mixup run of this lab trains with: edit it, and the experiments below
# run your version.

# %%
def mixup_loss(model, x, y, lam, perm):
    mixed = lam * x + (1 - lam) * x[perm]  # each image blended with its partner
    logits = model(mixed)
    # the labels are blended in the same share
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


def mixup_step(model, batch):
    x, y = batch
    lam = torch.distributions.Beta(cfg.alpha, cfg.alpha).sample().item()
    perm = torch.randperm(len(x), device=x.device)
    return mixup_loss(model, x, y, lam, perm)


# %% [markdown]
# The check runs `mixup_loss` and lablib's tested `mixup.mixup_loss` on random small models and
# batches, and compares the loss and its gradient with respect to the images:

# %%
def mixup_inputs(g):
    model = models.SmallCNN(width=4)
    x = torch.rand(8, 1, 8, 8, generator=g).requires_grad_()
    y = torch.randint(0, 10, (8,), generator=g)
    return model, x, y, torch.rand(1, generator=g).item(), torch.randperm(8, generator=g)


checks.agrees(mixup_loss, reference=mixup.mixup_loss, make_inputs=mixup_inputs, trials=8)

# %% [markdown]
# What a Mixup batch looks like: each title is the blended target, "label: share".

# %%
config.seed_everything(1)
x8, y8 = splits.train.x[:8], splits.train.y[:8]
perm8 = torch.randperm(8)
lams = torch.distributions.Beta(cfg.alpha, cfg.alpha).sample((8,))
blends = torch.stack([lam * x8[i] + (1 - lam) * x8[perm8[i]] for i, lam in enumerate(lams)])
viz.image_grid(blends, labels=[f"{y8[i].item()}:{lam:.2f} {y8[perm8[i]].item()}:{1 - lam:.2f}" for i, lam in enumerate(lams)],
               ncols=8, size=1.1, title=f"Mixup with α = {cfg.alpha} (one λ per image here, to show the range)")

# %% [markdown]
# ## 4. Few labels: where augmentation pays
#
# Four ways to train the same SmallCNN, with the same labelled images (chosen per seed), batch
# size, learning rate and number of steps (`cfg.steps`, Adam), tested on the same held-out test
# digits:
#
# * **none**: plain cross-entropy;
# * **shift/rotate**: the article's list (without the flip) by `augment.affine`, a fresh draw at
#   every step;
# * **Mixup**: the step of section 3;
# * **both**: the article's list, then Mixup on the augmented batch.
#
# At the smallest label count a fifth variant trains on the article's list *as written*, with
# `horizontal_flip=True`. The first cell defines the steps and the variants; the second trains
# them all (rerun it after changing a step or `variants`).

# %%
def plain_step(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def shift_rotate_step(model, batch):
    x, y = batch
    return F.cross_entropy(model(augment.affine(x, **article)), y)


def both_step(model, batch):
    x, y = batch
    return mixup_step(model, (augment.affine(x, **article), y))


def flip_step(model, batch):  # the article's list as written, horizontal_flip=True
    x, y = batch
    return F.cross_entropy(model(augment.affine(x, **article, flip=True)), y)


variants = {"none": plain_step, "shift/rotate": shift_rotate_step, "Mixup": mixup_step, "both": both_step}
FLIP = "article's list with flip"


def run(step, per_class, seed):
    """Train a fresh SmallCNN with `step` on seed's labelled images; its model and test accuracy."""
    labelled, _ = datasets.labelled_split(splits.train, per_class=per_class, seed=seed)
    config.seed_everything(seed)  # the model's initial weights, the batches' order, the augmentations' draws
    model = models.SmallCNN().to(device)
    train.fit(model, datasets.loader(labelled, batch_size=cfg.batch_size, shuffle=True, seed=seed),
              steps=cfg.steps, step=step, lr=cfg.lr, progress=False)
    return model, train.evaluate(model, test_loader)["acc"]


# %%
steps_of = variants | {FLIP: flip_step}  # here, so that a change to `variants` since the cell above counts
jobs = [(k, name, seed) for k in cfg.label_counts for name in variants for seed in range(cfg.seeds)]
jobs += [(cfg.label_counts[0], FLIP, seed) for seed in range(cfg.seeds)]
acc = {}
for k, name, seed in tqdm(jobs, desc="training runs"):
    model, acc[k, name, seed] = run(steps_of[name], k, seed)
    if (k, name, seed) == (cfg.label_counts[-1], "none", 0):
        plain_model = model  # kept for the mirror test below
summary = {(k, name): results.mean_sd(acc[k, name, s] for s in range(cfg.seeds))
           for k in cfg.label_counts for name in variants}
summary[cfg.label_counts[0], FLIP] = results.mean_sd(acc[cfg.label_counts[0], FLIP, s] for s in range(cfg.seeds))

# %% figure="accuracy-vs-labels-by-augmentation"
rows = []
for k in cfg.label_counts:
    row = {"labels": 10 * k}
    row |= {name: f"{100 * summary[k, name][0]:.1f} ± {100 * summary[k, name][1]:.1f}" for name in variants}
    best = max(list(variants)[1:], key=lambda n: summary[k, n][0])
    row["best augmentation"] = best
    row["its gain (points)"] = round(100 * (summary[k, best][0] - summary[k, "none"][0]), 1)
    rows.append(row)
table(rows, title=f"Test accuracy (%), mean ± sd over {cfg.seeds} seed(s), {cfg.steps} steps")
counts = [10 * k for k in cfg.label_counts]
viz.lines({name: (counts, [summary[k, name][0] for k in cfg.label_counts]) for name in variants},
          xlabel="labelled images", ylabel="test accuracy",
          spread={name: [summary[k, name][1] for k in cfg.label_counts] for name in variants},
          title=f"Augmentation vs labels (band: ± 1 sd over {cfg.seeds} seeds)")

# %% [markdown]
# **The claim.** The article promises better generalisation and gives no figure. What your run
# says, at the fewest labels, for the best of the three augmentations:

# %%
fewest, most = cfg.label_counts[0], cfg.label_counts[-1]


def best_gain(k):
    best = max(list(variants)[1:], key=lambda n: summary[k, n][0])
    return best, 100 * (summary[k, best][0] - summary[k, "none"][0])


best_few, gain_few = best_gain(fewest)
best_most, gain_most = best_gain(most)
results.claim("the best augmentation gains >= 3 points at the fewest labels", gain_few, holds=gain_few >= 3,
              condition=">= +3 points over no augmentation", source="数据增强是提升模型泛化能力的重要手段 (no figure)")
results.claim("augmentation pays less as labels grow", gain_most, holds=gain_most < gain_few, asserted=False,
              condition=f"gain at {10 * most} labels < gain at {10 * fewest} labels",
              source="(not claimed by the article)")
for k in dict.fromkeys((fewest, most)):
    print(f"at {10 * k} labels, points gained over no augmentation: "
          + ", ".join(f"{n} {100 * (summary[k, n][0] - summary[k, 'none'][0]):+.1f}" for n in list(variants)[1:]))
sd_none = 100 * summary[fewest, "none"][1]
if cfg.seeds > 1:
    print(f"seed-to-seed sd of the plain model at {10 * fewest} labels: {sd_none:.1f} points: "
          + ("the gain is more than twice that" if gain_few > 2 * sd_none else "the gain is within two sd: more seeds needed"))

# %% [markdown]
# **Reading the table.** With few labels the model sees each image many times, and memorises it;
# every augmentation makes each step's images new, which the plain model cannot have. As labels
# grow, the real data already covers more of the variation, and two costs show: a distortion the
# test digits never show (a 20° rotation on an 8×8 grid blurs as much as it rotates), and a
# harder training set. Every variant here gets the same `cfg.steps` steps; an augmented set takes
# longer to fit, so at the same short budget an augmented model may simply be less trained. If
# the shift/rotate column falls below the plain one at the most labels in your run, exercise 4(e)
# gives both four times the steps: see whether the order changes. Mixup changes no digit's shape,
# only how confident the model may be between two of them.
#
# **The flip, measured.** The fifth variant, at the fewest labels:

# %%
flip_m, flip_sd = summary[fewest, FLIP]
sr_m, sr_sd = summary[fewest, "shift/rotate"]
flip_cost = 100 * (sr_m - flip_m)
table([{"variant": "article's list without flip", "test acc": f"{100 * sr_m:.1f} ± {100 * sr_sd:.1f}"},
       {"variant": "article's list as written (with flip)", "test acc": f"{100 * flip_m:.1f} ± {100 * flip_sd:.1f}"}],
      title=f"{10 * fewest} labels, {cfg.seeds} seed(s)")
results.claim("the article's horizontal flip costs accuracy on digits (points)", flip_cost, holds=flip_cost > 0,
              condition="> 0 points lost against the same list without the flip",
              source="horizontal_flip=True (article's ImageDataGenerator)")

# %% [markdown]
# Why it costs: the flip teaches the model that a mirrored 3 is a 3. Which digits survive a
# mirror at all? The plain model trained on the most labels (seed 0), on the test digits as they
# are and mirrored:

# %% figure="mirrored-digits-recognised"
with torch.no_grad():
    plain_model.eval()
    pred = plain_model(splits.test.x.to(device)).argmax(1).cpu()
    pred_mirror = plain_model(splits.test.x.flip(-1).to(device)).argmax(1).cpu()
per_digit = {str(d): {"as they are": (pred[splits.test.y == d] == d).float().mean().item(),
                      "mirrored": (pred_mirror[splits.test.y == d] == d).float().mean().item()} for d in range(10)}
survivors = [d for d, v in per_digit.items() if v["mirrored"] >= 0.5]
print(f"digits still recognised at least half the time when mirrored: {', '.join(survivors) or 'none'}")
viz.grouped_bars(per_digit, ylabel="recognised as themselves",
                 title="Test digits, as they are and mirrored (plain model, seed 0)")

# %% [markdown]
# Nearly symmetric digits (0, 1, 8) are expected to survive a mirror; any other digit in the
# printed list survives through the model's tolerance on 8×8 pixels, not through symmetry, and
# the digits missing from it become another digit or none. An augmentation must keep the label
# true; that depends on the data, not on the library's default list.
#
# ## 5. One rare digit: SMOTE, resampling, class weights
#
# The article lists SMOTE beside Mixup as augmentation. SMOTE (Chawla et al. 2002) is for a
# different problem: a class with few examples. It makes new rows of the rare class by
# interpolating between a rare example and one of its `k` nearest rare neighbours. Here digit
# `cfg.rare` keeps only `cfg.keep` of its training images (every other digit keeps all of
# them); the pixels are the 64 features of a logistic regression, the classical home of these
# samplers. Four remedies and the baseline, each a pipeline that resamples the training data only:
#
# * **none**; **weights**: class weights (`class_weight="balanced"`: each class's errors weigh
#   n / (classes · count));
# * **oversample**: random oversampling (the rare images repeated); **SMOTE** (new rare rows
#   interpolated); **undersample**: random undersampling (every other class cut to the rare
#   class's count).
#
# First, three errors that wait on the way (printed as your installed library versions word them):

# %%
X, y = splits.train.x.flatten(1).numpy(), splits.train.y.numpy()
X_test, y_test = splits.test.x.flatten(1).numpy(), splits.test.y.numpy()
X_rare, y_rare = imbalance.make_rare(X, y, cls=cfg.rare, keep=cfg.keep, seed=0)
print(f"training images per digit: {np.bincount(y_rare).tolist()} (digit {cfg.rare} made rare)")


def show_error(what, fn):
    try:
        fn()
        print(f"{what}: no error with your versions")
    except Exception as exc:  # shown, not hidden: these are the lesson
        print(f"{what}:\n    {type(exc).__name__}: {str(exc)[:300]}")


with threadpool_limits(1, user_api="blas"):  # see the note below
    show_error(f"1. SMOTE with its default k_neighbors=5 on {cfg.keep} rare images",
               lambda: SMOTE(random_state=0).fit_resample(X_rare, y_rare))
    show_error("2. SMOTE inside scikit-learn's Pipeline",
               lambda: sklearn_make_pipeline(SMOTE(k_neighbors=cfg.keep - 1), LogisticRegression()).fit(X_rare, y_rare))
    show_error(f"3. ADASYN (n_neighbors={cfg.keep - 1})",
               lambda: ADASYN(n_neighbors=cfg.keep - 1, random_state=0).fit_resample(X_rare, y_rare))

# %% [markdown]
# 1. SMOTE looks for `k_neighbors` neighbours *plus the image itself* among the rare images: with
#    `cfg.keep` rare images it can use at most `cfg.keep - 1` (`k_neighbors=cfg.keep - 1` below).
# 2. A sampler changes the number of rows, which scikit-learn's `Pipeline` does not allow of its
#    steps (they must `transform`). `imblearn.pipeline.make_pipeline` does: it resamples at `fit`
#    and passes test data through untouched at `predict`, so no synthetic row ever reaches the
#    test score.
# 3. ADASYN generates more samples where a rare image's neighbourhood holds *other* classes (the
#    hard cases). When the rare digit's images are surrounded only by each other (well separated,
#    as digits are in pixel space), it has no hard case to weigh and refuses, rather than divide
#    by zero. SMOTE has no such weighting.
#
# (**The `threadpool_limits` note.** scikit-learn's solvers call a BLAS library that starts its
# own threads; next to torch's threads on 2 cores they can wait on each other and run many times
# slower. One BLAS thread is plenty for these small fits.)

# %% figure="rare-digit-remedies"
def classifier(balanced=False):
    return LogisticRegression(max_iter=1000, class_weight="balanced" if balanced else None)


remedies = {
    "none": lambda s: make_pipeline(StandardScaler(), classifier()),
    "weights": lambda s: make_pipeline(StandardScaler(), classifier(balanced=True)),
    "oversample": lambda s: make_pipeline(StandardScaler(), RandomOverSampler(random_state=s), classifier()),
    "SMOTE": lambda s: make_pipeline(StandardScaler(), SMOTE(k_neighbors=cfg.keep - 1, random_state=s), classifier()),
    "undersample": lambda s: make_pipeline(StandardScaler(), RandomUnderSampler(random_state=s), classifier()),
}
scores = {name: [] for name in remedies}
with threadpool_limits(1, user_api="blas"):
    for seed in tqdm(range(cfg.imbalance_seeds), desc="rare-digit seeds"):
        X_s, y_s = imbalance.make_rare(X, y, cls=cfg.rare, keep=cfg.keep, seed=seed)  # which 5 images stay
        for name, make in remedies.items():
            predicted = make(seed).fit(X_s, y_s).predict(X_test)
            scores[name].append(imbalance.rare_class_scores(y_test, predicted, cls=cfg.rare))
metrics_of = ("rare recall", "rare precision", "macro-F1", "accuracy")
imb = {name: {m: statistics.mean(s[m] for s in runs) for m in metrics_of} for name, runs in scores.items()}
table(imb, title=f"Digit {cfg.rare} with {cfg.keep} training images; test scores, mean over {cfg.imbalance_seeds} seeds")
viz.grouped_bars({name: {m: v[m] for m in ("rare recall", "macro-F1", "accuracy")} for name, v in imb.items()},
                 ylabel="score", title=f"Digit {cfg.rare} made rare ({cfg.keep} images): what each remedy buys")

# %%
smote_gain = imb["SMOTE"]["rare recall"] - imb["none"]["rare recall"]
results.claim("SMOTE raises the rare digit's recall", smote_gain, holds=smote_gain >= 0.1,
              condition=">= +0.10 recall over no remedy",
              source="使用数据增强技术,如SMOTE、Mixup等,进一步扩充数据集 (no figure)")
weights_gap = imb["SMOTE"]["rare recall"] - imb["weights"]["rare recall"]
results.claim("SMOTE does no better than class weights (recall difference)", weights_gap,
              holds=weights_gap <= 0.05, asserted=False, condition="SMOTE's recall at most 0.05 above class weights'",
              source="(the article names SMOTE, not the simpler remedies)")
under, best_other = imb["undersample"], max(("weights", "oversample", "SMOTE"), key=lambda n: imb[n]["accuracy"])
print(f"undersampling: rare recall {under['rare recall']:.2f}, accuracy {under['accuracy']:.3f}; "
      f"{best_other}: rare recall {imb[best_other]['rare recall']:.2f}, accuracy {imb[best_other]['accuracy']:.3f}")
print("undersampling " + ("buys the most recall and pays for it in accuracy" if under["rare recall"] > imb[best_other]["rare recall"]
                          and under["accuracy"] < imb[best_other]["accuracy"] else "did not trade recall for accuracy in this run"))

# %% [markdown]
# **Reading it.** Without a remedy the classifier rarely predicts the rare digit: its recall is
# low while the accuracy barely notices (one digit in ten). Class weights, random oversampling
# and SMOTE all tell the loss the same thing (the rare class matters as much as the others), so
# expect them to land close to each other; SMOTE's interpolated images add little that five real
# images did not already say to a *linear* model. Undersampling throws away most of the other
# digits' images to balance the classes: watch its accuracy and macro-F1 column. Which remedy is
# "best" depends on what an error costs you: a missed rare case (recall) or a false alarm
# (precision, accuracy).
#
# ## Exercises
#
# Answers and what to look for: `docs/answers/09_augmentation.md`.
#
# **Exercise 1: Mixup's soft labels.** Section 3 computes the loss in two terms. The same thing,
# as a target: write `my_mixup_targets(y, perm, lam, num_classes)`, the (N, num_classes) tensor
# whose row i is `lam · one_hot(y[i]) + (1 − lam) · one_hot(y[perm[i]])`.
#
# <details><summary>Hint</summary>
#
# `F.one_hot(y, num_classes).float()` gives the one-hot rows; indexing them with `perm` gives the
# partners' rows.
# </details>

# %%
@checks.exercise
def my_mixup_targets(y, perm, lam, num_classes):
    # YOUR CODE HERE
    raise NotImplementedError


def target_inputs(g):
    n = int(torch.randint(2, 12, (1,), generator=g))
    return (torch.randint(0, 10, (n,), generator=g), torch.randperm(n, generator=g),
            torch.rand(1, generator=g).item(), 10)


checks.check_function(my_mixup_targets, reference=mixup.mixup_targets, make_inputs=target_inputs, trials=8,
                      hint="one_hot = F.one_hot(y, num_classes).float(); lam * one_hot + (1 - lam) * one_hot[perm]")
# checks.show_solution("my_mixup_targets")

# %% [markdown]
# **Train with your targets.** `F.cross_entropy` accepts probabilities as the target. The step
# below trains on your soft labels; to rerun section 4 with it, run
# `variants["Mixup"] = soft_mixup_step` in a new cell, then section 4's second cell (the one
# that trains) and the cells after it. Since cross-entropy is
# linear in the target, expect the same results as the two-term loss (up to floating point).

# %%
def soft_mixup_step(model, batch):
    x, y = batch
    lam = torch.distributions.Beta(cfg.alpha, cfg.alpha).sample().item()
    perm = torch.randperm(len(x), device=x.device)
    return F.cross_entropy(model(lam * x + (1 - lam) * x[perm]), my_mixup_targets(y, perm, lam, 10))


# %% [markdown]
# **Exercise 2: CutMix.** CutMix (Yun et al. 2019) pastes a box cut from the partner image
# instead of blending whole images, and λ becomes the share of the image that is still its own.
# Write `my_cutmix(x, perm, box)`: `box = (top, left, height, width)` in pixels; return the new
# images (the box of each image replaced by the same box of `x[perm]`, the rest unchanged, `x`
# itself not modified) and `lam = 1 − box area / image area`.
#
# <details><summary>Hint</summary>
#
# Clone `x`, then assign `out[:, :, top:top + height, left:left + width]` from the same slice of
# `x[perm]`. The area comes from the box and `x.shape[-2:]`.
# </details>

# %%
@checks.exercise
def my_cutmix(x, perm, box):
    # YOUR CODE HERE
    raise NotImplementedError


def cutmix_inputs(g):
    n = int(torch.randint(2, 9, (1,), generator=g))
    lam = torch.rand(1, generator=g).item()
    return torch.rand(n, 1, 8, 8, generator=g), torch.randperm(n, generator=g), mixup.random_box(8, 8, lam, generator=g)


checks.check_function(my_cutmix, reference=mixup.cutmix, make_inputs=cutmix_inputs, trials=10,
                      hint="out = x.clone(); out[:, :, t:t+h, l:l+w] = x[perm][:, :, t:t+h, l:l+w]; lam = 1 - h*w/(H*W)")
# checks.show_solution("my_cutmix")

# %% [markdown]
# **Train with CutMix.** Once your function passes, the cell below trains with it at the fewest
# labels, over the same seeds, beside section 4's Mixup row (`mixup.random_box` draws the box for
# a λ ~ Beta(α, α), as the paper does with α = 1; the box is clipped at the border, which is why
# `my_cutmix` returns the λ it really used).

# %%
def cutmix_step(model, batch, alpha=1.0):
    x, y = batch
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(len(x), device=x.device)
    mixed, lam = my_cutmix(x, perm, mixup.random_box(x.shape[-2], x.shape[-1], lam))
    logits = model(mixed)
    return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])


try:
    my_cutmix(sample, torch.arange(len(sample)), (0, 0, 1, 1))
    cutmix_acc = results.mean_sd(run(cutmix_step, fewest, seed)[1] for seed in tqdm(range(cfg.seeds), desc="CutMix runs"))
    table([{"variant": name, "test acc": f"{100 * m:.1f} ± {100 * s:.1f}"}
           for name, (m, s) in {"none": summary[fewest, "none"], "Mixup": summary[fewest, "Mixup"], "CutMix (yours)": cutmix_acc}.items()],
          title=f"{10 * fewest} labels, {cfg.seeds} seed(s)")
except NotImplementedError:
    cutmix_acc = None
    print("my_cutmix is not written yet: CutMix skipped")

# %% [markdown]
# **Exercise 3: class weights.** Write `my_class_weights(y, num_classes)`, scikit-learn's
# `class_weight="balanced"`: class c weighs `len(y) / (num_classes · count of c)`, and a class
# with no sample weighs 0 (scikit-learn refuses that case; we need an answer for it). `y` is a
# numpy array of labels; return a numpy array of `num_classes` weights.
#
# <details><summary>Hint</summary>
#
# `np.bincount(y, minlength=num_classes)` counts every class; divide where the count is not 0.
# </details>

# %%
@checks.exercise
def my_class_weights(y, num_classes):
    # YOUR CODE HERE
    raise NotImplementedError


def label_arrays(g):
    n = int(torch.randint(1, 40, (1,), generator=g))
    k = int(torch.randint(2, 8, (1,), generator=g))
    return torch.randint(0, k, (n,), generator=g).numpy(), k + int(torch.randint(0, 2, (1,), generator=g))


checks.check_function(my_class_weights, reference=imbalance.class_weights, make_inputs=label_arrays, trials=10,
                      hint="counts = np.bincount(y, minlength=num_classes); len(y) / (num_classes * counts) where counts > 0, else 0")
# checks.show_solution("my_class_weights")

# %% [markdown]
# **Exercise 4 (open).** Each part changes a setting in a new cell and reruns section 4's second
# cell (or section 5's cells) and what follows.
# (a) Milder magnitudes (`article["rotation"] = 10`, `article["shift"] = 0.125`, one pixel), and
# `cfg["alpha"] = 1.0`: which changes the 300-label row, which the 50-label row? (b) Add the
# article's noise (`x + 0.1 * torch.randn_like(x)`) as a fifth entry of `variants`. (c) In
# section 5, keep 2 rare images (`cfg["keep"] = 2`): `k_neighbors` follows as `cfg.keep - 1`;
# what value is it now, what can SMOTE make from two images, and does it still match class
# weights? (d) The article puts SMOTE and Mixup in one sentence. After this lab, what is each one
# for? (e) Give the runs at the most labels four times the steps (`cfg["steps"] = 4 * cfg["steps"]`,
# `cfg["label_counts"] = (30,)`): does augmentation pay at 300 labels now? (About four times
# section 4's time for that row.)
#
# The claims then judge your modified run, and the Record cell fails at `cpu` scale if an
# asserted one no longer holds: use Kernel → Restart & Run All before recording.
#
# ## Record
#
# This cell saves the claims above with the other figures worth keeping and your exercises'
# verdicts.

# %%
metrics = {"seeds": cfg.seeds, "steps": cfg.steps, "imbalance seeds": cfg.imbalance_seeds}
for (k, name), (m, s) in summary.items():
    metrics[f"acc {10 * k} labels, {name} (mean)"] = m
    metrics[f"acc {10 * k} labels, {name} (sd)"] = s
metrics |= {f"{name}: {m}": v[m] for name, v in imb.items() for m in ("rare recall", "macro-F1", "accuracy")}
metrics["augment.affine vs kornia (x faster)"] = ratio
if cutmix_acc is not None:
    metrics[f"acc {10 * fewest} labels, CutMix (mean)"] = cutmix_acc[0]
results.record(metrics, notes=f"Digits, SmallCNN, {cfg.steps} Adam steps per run; imbalance: logistic regression on pixels, digit {cfg.rare} cut to {cfg.keep}.")

# %% [markdown]
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` trains 500 steps per run over 5 seeds and scores the rare
#   digit over 10 seeds; `augment.affine` runs on the GPU with the batch.
# * **Policies learned or drawn.** RandAugment (lab 05's strong view) and TrivialAugment draw the
#   operations and magnitudes per image instead of fixing a list; AutoAugment searches for the
#   list. On your own data, start with the transformations that keep labels true.
# * **Imbalance in deep models.** Class-weighted cross-entropy (`F.cross_entropy(..., weight=)`),
#   a balanced sampler (`torch.utils.data.WeightedRandomSampler`), or the focal loss; and a
#   threshold moved after training, which costs nothing to try.
# * **Read more.** Zhang et al. (2018), *mixup: Beyond Empirical Risk Minimization*; Yun et al.
#   (2019), *CutMix*; Chawla et al. (2002), *SMOTE*; He et al. (2008), *ADASYN*; the
#   imbalanced-learn user guide.
