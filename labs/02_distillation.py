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
# # Lab 02 — Knowledge distillation
#
# **The claim** (the source article): train a small *student* to imitate a large *teacher* with
# `distillation_loss(student_logits, teacher_logits, labels, T=2, alpha=0.7)` and you keep most of the
# accuracy at a fraction of the size: "230M → 12M parameters at 92 %".
#
# **What you will measure**, on real handwritten digits:
#
# 1. a teacher CNN and a student more than 20× smaller: how much of the teacher's accuracy the
#    student keeps (the article's headline);
# 2. an errata: the article's `nn.KLDivLoss()` averages over the classes as well as the batch;
# 3. the honest part. On the *same labelled data* the teacher saw, distillation barely moves the
#    student. What helps is the teacher labelling a **transfer set** of images nobody labelled
#    (and the teacher never saw): with 50 labels plus the teacher's labels on the rest, the
#    student closes most of the gap. Are the teacher's *soft* targets better than its plain top
#    class (hard pseudo-labels)? Three seeds each, mean ± spread, and you will see.

# %%
import math
import statistics
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lablib import show
from lablib.core import checks, config, env, results, viz
from lablib.data import datasets
from lablib.methods import distill
from lablib.nets import models, train

cfg = config.profile(
    smoke=dict(teacher_width=8, teacher_epochs=1, student_width=8, student_epochs=1, seeds=1, transfer_share=0.4, labels_per_class=5, T=2.0, alpha=0.7),
    cpu=dict(teacher_width=48, teacher_epochs=40, student_width=8, student_epochs=40, seeds=3, transfer_share=0.4, labels_per_class=5, T=2.0, alpha=0.7),
    gpu=dict(teacher_width=64, teacher_epochs=60, student_width=8, student_epochs=60, seeds=5, transfer_share=0.4, labels_per_class=5, T=2.0, alpha=0.7),
)
device = config.device()
config.seed_everything(0)
print(env.line())
cfg

# %% [markdown]
# ## 1. Teacher and student
#
# The data: scikit-learn's 1,797 real 8×8 digits (bundled, nothing downloaded), fixed seeded split.
# Teacher and student are the same `SmallCNN` design (three convolutions, a linear head), the
# student with so few channels that it has more than 20× fewer parameters.

# %%
splits = datasets.digits()
train_loader = datasets.loader(splits.train, batch_size=64, shuffle=True)
val_loader = datasets.loader(splits.val, batch_size=256)
test_loader = datasets.loader(splits.test, batch_size=256)

def train_teacher(dataset, name):
    config.seed_everything(0)
    model = models.SmallCNN(width=cfg.teacher_width)
    train.fit(model, datasets.loader(dataset, batch_size=64, shuffle=True), val_loader, epochs=cfg.teacher_epochs,
              lr=3e-3, schedule="cosine", device=device, desc=name)
    return model.eval()


teacher = train_teacher(splits.train, "teacher")
teacher_acc = train.evaluate(teacher, test_loader)["acc"]


def new_student(seed):
    config.seed_everything(seed)
    return models.SmallCNN(width=cfg.student_width)


teacher_params, student_params = models.count_params(teacher), models.count_params(new_student(0))
print(f"teacher: {teacher_params:,} parameters, test accuracy {teacher_acc:.3f}")
print(f"student: {student_params:,} parameters ({teacher_params / student_params:.0f}x fewer)")

# %% [markdown]
# ## 2. The distillation loss
#
# The teacher's output, softened by a temperature `T`, is the student's target: not just "this is
# a 3" but "a 3, somewhat like a 5, nothing like a 1". That ranking of the wrong classes is the
# extra information a hard label does not carry. Here is what `T` does to the teacher's
# probabilities for one test image:

# %%
with torch.no_grad():
    test_logits = teacher(splits.test.x)
probs = F.softmax(test_logits, dim=1)
right = probs.argmax(dim=1) == splits.test.y
runner_up = probs.topk(2, dim=1).values[:, 1]
i = int(torch.where(right, runner_up, torch.zeros_like(runner_up)).argmax())  # correct, least sure
viz.grouped_bars(
    {str(c): {f"T = {T:g}": distill.soft_targets(test_logits[i : i + 1], T)[0, c].item() for T in (1, 2, 5)} for c in range(10)},
    ylabel="teacher probability",
    title=f"Teacher's soft targets for a test image of a {splits.test.y[i].item()} (classified correctly)",
)

# %%
viz.image_grid(splits.test.x[i : i + 1], labels=[f"label {splits.test.y[i].item()}"], size=2.0)

# %% [markdown]
# At `T = 1` nearly all the mass sits on the right class; raising `T` reveals which other digits
# the teacher finds similar. (The image shown is the correctly classified test image the teacher is
# least sure about, so the runner-up is visible.)
#
# %% [markdown]
# The loss mixes the two targets. `alpha` weights the soft term: the KL divergence
# `Σ q · log(q / p)` between the teacher's softened distribution `q` and the student's `p`, which is
# 0 when they agree. Dividing logits by `T` shrinks the gradients of that term by `1/T²`, so it is
# multiplied by `T²` to keep its weight against the hard term the same whatever `T` is.
# `1 - alpha` weights the ordinary cross-entropy on the labels.

# %%
show(distill.distillation_loss)

# %% [markdown]
# ### Errata: `nn.KLDivLoss()` versus `reduction="batchmean"`
#
# The article builds the soft term with `nn.KLDivLoss()`. Its default reduction, `"mean"`, averages
# over every element, the batch **and the classes**, so it returns the true KL divergence divided by
# the number of classes. PyTorch's documentation says so and recommends `"batchmean"`.

# %%
x, _ = next(iter(train_loader))
with torch.no_grad():
    s_logits, t_logits = new_student(0)(x), teacher(x)
log_p, q = F.log_softmax(s_logits / cfg.T, dim=1), F.softmax(t_logits / cfg.T, dim=1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    article = nn.KLDivLoss()(log_p, q) * cfg.T**2
correct = F.kl_div(log_p, q, reduction="batchmean") * cfg.T**2
print(f"article's soft loss (reduction='mean'):  {article.item():.4f}")
print(f"true soft loss (reduction='batchmean'):   {correct.item():.4f}   ratio {correct.item() / article.item():.1f} = number of classes")
for w in caught:
    print("PyTorch's own warning:", str(w.message).split(".")[0] + ".")

# %% [markdown]
# The soft term is 10× too small, so the article's `alpha` does not mean what it says. The weight
# the soft term really gets, relative to the hard one, is `(alpha / 10) / (alpha / 10 + 1 - alpha)`:

# %%
print(f"alpha = {cfg.alpha} in the article's code weights the KL term like alpha = "
      f"{cfg.alpha / 10 / (cfg.alpha / 10 + 1 - cfg.alpha):.2f} would with the correct reduction")

# %% [markdown]
# ## 3. Experiment A: the same labelled data
#
# The student trains on the full labelled training split, once alone (cross-entropy) and once with
# the distillation loss. Same epochs, same seeds.

# %%
def teacher_guided(teacher, T, alpha):
    """The loss `fit` calls each step: the teacher's logits come from a forward pass without
    gradients; -1 in y marks an image without a label (used in experiment B)."""
    def compute_loss(student, x, y):
        with torch.no_grad():
            teacher_logits = teacher(x)
        return distill.distillation_loss(student(x), teacher_logits, y, T=T, alpha=alpha)
    return compute_loss


def train_student(seed, dataset, epochs, compute_loss=None, name="student"):
    student = new_student(seed)
    loader = datasets.loader(dataset, batch_size=64, shuffle=True, seed=seed)
    train.fit(student, loader, epochs=epochs, lr=3e-3, schedule="cosine", compute_loss=compute_loss,
              device=device, desc=name, progress=False)
    return train.evaluate(student, test_loader)["acc"]


scores = {"A: student alone": [], "A: student + KD": []}
for seed in range(cfg.seeds):
    scores["A: student alone"].append(train_student(seed, splits.train, cfg.student_epochs))
    scores["A: student + KD"].append(train_student(seed, splits.train, cfg.student_epochs, teacher_guided(teacher, cfg.T, cfg.alpha)))
    print(f"seed {seed}: alone {scores['A: student alone'][-1]:.3f}, KD {scores['A: student + KD'][-1]:.3f}")

# %% [markdown]
# ## 4. Experiment B: a transfer set the teacher labels
#
# Now the realistic case for distillation: the teacher was trained elsewhere, and the student has
# only **5 labelled images per class** plus a pile of images *without* labels.
#
# One trap first. The teacher above was trained on every training image, so it has memorised their
# labels: ask it to "pseudo-label" its own training images and it simply hands back the true labels.

# %%
with torch.no_grad():
    own = F.softmax(teacher(splits.train.x), dim=1)
memorised = (own.argmax(dim=1) == splits.train.y).float().mean().item()
print(f"the teacher's labels for its own training images: {memorised:.1%} correct, "
      f"mean confidence {own.max(dim=1).values.mean().item():.1%}")

# %% [markdown]
# A transfer set drawn from those images would leak the labels into the experiment. So the training
# split is cut in two, stratified by class: a **teacher pool** (60 %) for a second teacher, and a
# **transfer pool** (40 %) that this teacher never sees, from which the student gets its 50 labels
# and its unlabelled images.

# %%
teacher_pool, transfer_pool = datasets.partition(splits.train, cfg.transfer_share, seed=0)
teacher_b = train_teacher(teacher_pool, "teacher B")
teacher_b_acc = train.evaluate(teacher_b, test_loader)["acc"]
print(f"teacher pool {len(teacher_pool)} images, transfer pool {len(transfer_pool)} images (disjoint)")
print(f"teacher B: test accuracy {teacher_b_acc:.3f}")

# %% [markdown]
# Three students, the same labelled images each (5 per class at `cpu` scale):
#
# * **alone**: cross-entropy on the labelled images only (as many optimizer steps as the others);
# * **hard pseudo-labels**: teacher B's top class as the label of every unlabelled image;
# * **KD**: teacher B's soft targets on every image, plus the true label on the labelled ones
#   (label `-1` marks the others, which get the soft term only).

# %%
n_labels = cfg.labels_per_class * 10
ALONE, HARD, SOFT = f"B: student alone ({n_labels} labels)", "B: + hard pseudo-labels", "B: + KD soft labels"
for key in (ALONE, HARD, SOFT):
    scores[key] = []
steps = cfg.student_epochs * len(train_loader)  # every student gets as many optimizer steps as in A


def epochs_for(dataset):
    return math.ceil(steps / len(datasets.loader(dataset, batch_size=64)))



for seed in range(cfg.seeds):
    labelled, unlabelled = datasets.labelled_split(transfer_pool, per_class=cfg.labels_per_class, seed=seed)
    with torch.no_grad():
        pseudo = distill.pseudo_labels(teacher_b(unlabelled.x))  # the top class of every image
    images = torch.cat([labelled.x, unlabelled.x])
    with_pseudo = datasets.ImageSet(images, torch.cat([labelled.y, pseudo]), splits.classes)
    with_soft = datasets.ImageSet(images, torch.cat([labelled.y, torch.full_like(unlabelled.y, -1)]), splits.classes)

    scores[ALONE].append(train_student(seed, labelled, epochs_for(labelled)))
    scores[HARD].append(train_student(seed, with_pseudo, epochs_for(with_pseudo)))
    scores[SOFT].append(train_student(seed, with_soft, epochs_for(with_soft), teacher_guided(teacher_b, cfg.T, cfg.alpha)))
    pseudo_acc = (pseudo == unlabelled.y).float().mean().item()
    print(f"seed {seed}: alone {scores[ALONE][-1]:.3f}, hard {scores[HARD][-1]:.3f}, KD {scores[SOFT][-1]:.3f}"
          f"  (teacher B's pseudo-labels {pseudo_acc:.1%} correct)")

# %% [markdown]
# ## 5. Measurement

# %%
def mean_spread(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


print(f"teacher ({teacher_params:,} params): {teacher_acc:.3f};  teacher B (teacher pool only): {teacher_b_acc:.3f}\n")
print(f"{'student (' + format(student_params, ',') + ' params)':<34}{'test accuracy':>18}")
for name, values in scores.items():
    m, sd = mean_spread(values)
    print(f"{name:<34}{m:>11.3f} ± {sd:.3f}")

viz.bars({name.replace(": ", ":\n"): statistics.mean(v) for name, v in scores.items()} | {"teacher": teacher_acc, "teacher B": teacher_b_acc},
         ylabel=f"test accuracy (mean of {cfg.seeds} seeds)", title="Students: same labels (A) vs transfer set (B)")

# %% [markdown]
# **Reading the table.** In experiment A the student already has every label, and the teacher's
# soft targets add little or nothing: compare the two A rows against their spread. One reason was
# measured in section 4: on its own training images the teacher is right every time and very sure,
# so its soft targets there are close to the one-hot labels the student already has.
#
# In experiment B the teacher's knowledge reaches the student through images nobody labelled, and
# the gain over the student alone is large. But compare the two ways of passing it on: a teacher
# this accurate makes its top class a very good label already (see its pseudo-label accuracy
# above), and the soft targets' extra information about the wrong classes then has little left to
# add. Most of the gain comes from *the teacher labelling unlabelled data*, hard or soft.
#
# The headline, in the article's terms, and what each part is owed to:

# %%
def mean(key):
    return statistics.mean(scores[key])


student_kd = mean("A: student + KD")
retained = student_kd / teacher_acc
kd_gain = mean(SOFT) - mean(ALONE)
print("article: 230M -> 12M parameters (19x fewer), student at 92 % (on the article's own task)")
print(f"here:    {teacher_params:,} -> {student_params:,} parameters ({teacher_params / student_params:.0f}x fewer), "
      f"distilled student {student_kd:.3f} vs teacher {teacher_acc:.3f}: {retained:.1%} of the accuracy retained")
print(f"         (the student trained alone keeps {mean('A: student alone') / teacher_acc:.1%}: on the same labels, "
      f"KD adds {100 * (student_kd - mean('A: student alone')):+.1f} points)")
print(f"transfer set: KD soft labels over the student alone: {100 * kd_gain:+.1f} points; "
      f"hard pseudo-labels: {100 * (mean(HARD) - mean(ALONE)):+.1f}; soft minus hard: {100 * (mean(SOFT) - mean(HARD)):+.1f}")

# %%
results.record(
    "02_distillation",
    {
        "teacher params": teacher_params,
        "student params": student_params,
        "teacher acc": teacher_acc,
        "A student alone acc": mean("A: student alone"),
        "A student KD acc": student_kd,
        "accuracy retained (KD student)": retained,
        "A KD minus alone (points)": 100 * (student_kd - mean("A: student alone")),
        "teacher B acc (teacher pool)": teacher_b_acc,
        "B alone acc": mean(ALONE),
        "B hard pseudo-labels acc": mean(HARD),
        "B KD transfer acc": mean(SOFT),
        "B KD gain over alone (points)": 100 * kd_gain,
        "B soft minus hard (points)": 100 * (mean(SOFT) - mean(HARD)),
        "labels per class (B)": cfg.labels_per_class,
        "seeds": cfg.seeds,
    },
    claims={
        "student params": "230M -> 12M (19x fewer)",
        "accuracy retained (KD student)": "student at 92 % on the article's task (no teacher figure given)",
    },
)

# %%
if cfg.scale != "smoke":
    assert teacher_params / student_params >= 20, "the student must be at least 20x smaller"
    assert retained >= 0.95, f"the student keeps only {retained:.1%} of the teacher's accuracy"
    assert kd_gain >= 0.05, f"transfer-set KD gained only {kd_gain * 100:.1f} points over the student alone"
    # soft vs hard is reported, not asserted: which wins depends on the teacher (see above)
    print("Effect confirmed: >= 20x smaller, >= 95 % of the accuracy retained, transfer-set KD >= +5 points")

# %% [markdown]
# ## Exercises
#
# **Exercise 1: soft targets.** Write `my_soft_targets(teacher_logits, T)`: the teacher's class
# probabilities at temperature `T`, one row per example.

# %%
def my_soft_targets(teacher_logits, T):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_soft_targets,
    reference=distill.soft_targets,
    make_inputs=lambda g: (torch.randn(8, 10, generator=g) * 3, 2.0),
    grads=False,
    hint="divide the logits by T before the softmax over dim=1.",
)

# %% [markdown]
# **Exercise 2: confident pseudo-labels.** Experiment B gave every unlabelled image the teacher's
# top class, however unsure the teacher was. Write `my_pseudo_labels(teacher_logits, threshold)`:
# the top class where the teacher's softmax probability for it is at least `threshold`, and `-1`
# (no label) elsewhere. (Lab 05, FixMatch, is built on this idea.)

# %%
def my_pseudo_labels(teacher_logits, threshold):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_pseudo_labels,
    reference=distill.pseudo_labels,
    make_inputs=lambda g: (torch.randn(32, 10, generator=g) * 3, 0.8),
    hint="F.softmax(logits, dim=1).max(dim=1) gives each row's confidence and class; torch.where picks -1 below the threshold.",
)

# %% [markdown]
# Stuck? The reference answers are the tested code in lablib: uncomment to see them.

# %%
# show(distill.soft_targets); show(distill.pseudo_labels)

# %% [markdown]
# **Exercise 3 (open).** Rerun experiment B with `T = 1` and `T = 5`, with 1 or 10 labels per class
# (`cfg["labels_per_class"] = 1`), and with your confident pseudo-labels (threshold 0.9) in place of
# the hard ones. When does the transfer set matter most, and when do soft targets beat hard ones?
#
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` trains a wider teacher for longer and runs five seeds.
# * **Your own images.** `data.image_folder("path", size=32)` loads a class-per-folder dataset; put a
#   few labelled images per class in one folder and many unlabelled ones in another, and use the
#   teacher to label the second, as in experiment B.
# * **A pretrained teacher.** The realistic version of this lab distils a large pretrained model into
#   a small CNN. With downloads allowed, e.g. `torchvision.models.convnext_tiny(weights="DEFAULT")`
#   fine-tuned on your folder is a teacher: `teacher_guided(teacher, T, alpha)` and
#   `distill.distillation_loss` work unchanged, as long as teacher and student see the same images
#   (resize for the teacher inside `compute_loss` if their input sizes differ).
# * **Read more.** Hinton, Vinyals & Dean (2015), *Distilling the Knowledge in a Neural Network*.
