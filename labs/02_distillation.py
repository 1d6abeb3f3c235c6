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
# 1. a teacher CNN and a student more than 20× smaller, in the article's terms: parameters in,
#    accuracy retained;
# 2. an errata: the article's `nn.KLDivLoss()` averages over the classes as well as the batch;
# 3. the honest part. On the *same labelled data* the teacher saw, distillation barely moves the
#    student. Its power shows when the teacher labels a **transfer set** of images nobody
#    labelled (and the teacher never saw): with 50 labels plus the teacher's soft labels on the
#    rest, the student closes most of the gap. Three seeds each, mean ± spread, and a comparison
#    with plain hard pseudo-labels.

# %%
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from lablib import checks, config, data, distill, env, models, results, show, train, viz

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
splits = data.digits()
train_loader = data.loader(splits.train, batch_size=64, shuffle=True)
val_loader = data.loader(splits.val, batch_size=256)
test_loader = data.loader(splits.test, batch_size=256)

def train_teacher(dataset, name):
    config.seed_everything(0)
    model = models.SmallCNN(width=cfg.teacher_width)
    train.fit(model, data.loader(dataset, batch_size=64, shuffle=True), val_loader, epochs=cfg.teacher_epochs,
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
x0 = splits.test.x[:1]
with torch.no_grad():
    logits0 = teacher(x0)
viz.lines(
    {f"T = {T:g}": (range(10), distill.soft_targets(logits0, T)[0].tolist()) for T in (1, 2, 5)},
    xlabel="class", ylabel="teacher probability",
    title=f"Teacher's soft targets for a test image of a {splits.test.y[0].item()}",
)

# %% [markdown]
# The loss mixes the two targets: `alpha` weights the soft term (KL divergence between the softened
# distributions, times `T²`), `1 - alpha` the ordinary cross-entropy on the labels.

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
article = nn.KLDivLoss()(log_p, q) * cfg.T**2
correct = F.kl_div(log_p, q, reduction="batchmean") * cfg.T**2
print(f"article's soft loss (reduction='mean'):  {article.item():.4f}")
print(f"true soft loss (reduction='batchmean'):   {correct.item():.4f}   ratio {correct.item() / article.item():.1f} = number of classes")
print(f"so alpha = {cfg.alpha} in the article's code weights the KL term like alpha = {cfg.alpha / 10 / (cfg.alpha / 10 + 1 - cfg.alpha):.2f} would in the correct one")

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
    loader = data.loader(dataset, batch_size=64, shuffle=True, seed=seed)
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
    memorised = (teacher(splits.train.x).argmax(dim=1) == splits.train.y).float().mean().item()
print(f"the teacher's labels for its own training images: {memorised:.1%} correct")

# %% [markdown]
# A transfer set drawn from those images would leak the labels into the experiment. So the training
# split is cut in two, stratified by class: a **teacher pool** (60 %) for a second teacher, and a
# **transfer pool** (40 %) that this teacher never sees, from which the student gets its 50 labels
# and its unlabelled images.

# %%
teacher_pool, transfer_pool = data.partition(splits.train, cfg.transfer_share, seed=0)
teacher_b = train_teacher(teacher_pool, "teacher B")
teacher_b_acc = train.evaluate(teacher_b, test_loader)["acc"]
print(f"teacher pool {len(teacher_pool)} images, transfer pool {len(transfer_pool)} images (disjoint)")
print(f"teacher B: test accuracy {teacher_b_acc:.3f}")

# %% [markdown]
# Three students, the same 50 labels each:
#
# * **alone**: cross-entropy on the 50 labelled images (as many optimizer steps as the others);
# * **hard pseudo-labels**: teacher B's top class as the label of every unlabelled image;
# * **KD**: teacher B's soft targets on every image, plus the true label on the 50 (label `-1`
#   marks the others, which get the soft term only).

# %%
for key in ("B: student alone (50 labels)", "B: + hard pseudo-labels", "B: + KD soft labels"):
    scores[key] = []
transfer_epochs = cfg.student_epochs * len(train_loader) // len(data.loader(transfer_pool, batch_size=64))
for seed in range(cfg.seeds):
    labelled, unlabelled = data.labelled_split(transfer_pool, per_class=cfg.labels_per_class, seed=seed)
    with torch.no_grad():
        pseudo = teacher_b(unlabelled.x).argmax(dim=1)
    images = torch.cat([labelled.x, unlabelled.x])
    with_pseudo = data.ImageSet(images, torch.cat([labelled.y, pseudo]), splits.classes)
    with_soft = data.ImageSet(images, torch.cat([labelled.y, torch.full_like(unlabelled.y, -1)]), splits.classes)

    # every student gets as many optimizer steps as in experiment A (50 images = one step per epoch)
    scores["B: student alone (50 labels)"].append(train_student(seed, labelled, cfg.student_epochs * len(train_loader)))
    scores["B: + hard pseudo-labels"].append(train_student(seed, with_pseudo, transfer_epochs))
    scores["B: + KD soft labels"].append(train_student(seed, with_soft, transfer_epochs, teacher_guided(teacher_b, cfg.T, cfg.alpha)))
    pseudo_acc = (pseudo == unlabelled.y).float().mean().item()
    print(f"seed {seed}: alone {scores['B: student alone (50 labels)'][-1]:.3f}, hard {scores['B: + hard pseudo-labels'][-1]:.3f}, "
          f"KD {scores['B: + KD soft labels'][-1]:.3f}  (teacher B's pseudo-labels {pseudo_acc:.1%} correct)")

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
# soft targets add little or nothing: compare the two A rows against their spread. In experiment B
# the teacher's knowledge reaches the student through images nobody labelled, and the gain is
# large. Whether soft labels beat hard pseudo-labels depends on the teacher: a teacher this accurate
# makes its top class a very good label already (see its pseudo-label accuracy above), and then
# the soft targets' extra information about the wrong classes has little left to add. The table
# says which won here.
#
# In the article's terms:

# %%
student_full = statistics.mean(scores["A: student + KD"])
kd_gain = statistics.mean(scores["B: + KD soft labels"]) - statistics.mean(scores["B: student alone (50 labels)"])
retained = student_full / teacher_acc
print("article: 230M -> 12M parameters (19x fewer) at 92 %")
print(f"here:    {teacher_params:,} -> {student_params:,} parameters ({teacher_params / student_params:.0f}x fewer), "
      f"student {student_full:.3f} vs teacher {teacher_acc:.3f}: {retained:.1%} of the accuracy retained")
print(f"transfer-set KD over the student alone on the same 50 labels: {kd_gain * 100:+.1f} points")

# %%
results.record(
    "02_distillation",
    {
        "teacher params": teacher_params,
        "student params": student_params,
        "teacher acc": teacher_acc,
        "teacher B acc (teacher pool)": teacher_b_acc,
        "A student alone acc": statistics.mean(scores["A: student alone"]),
        "A student KD acc": student_full,
        "accuracy retained": retained,
        "B alone 50 labels acc": statistics.mean(scores["B: student alone (50 labels)"]),
        "B hard pseudo-labels acc": statistics.mean(scores["B: + hard pseudo-labels"]),
        "B KD transfer acc": statistics.mean(scores["B: + KD soft labels"]),
        "B KD gain (points)": kd_gain * 100,
        "seeds": cfg.seeds,
    },
    claims={"student params": "230M -> 12M (19x fewer)", "A student KD acc": "92 %", "accuracy retained": "high (92 % student)"},
)

# %%
if cfg.scale != "smoke":
    assert teacher_params / student_params >= 20, "the student must be at least 20x smaller"
    assert retained >= 0.95, f"the student keeps only {retained:.1%} of the teacher's accuracy"
    assert kd_gain >= 0.05, f"transfer-set KD gained only {kd_gain * 100:.1f} points over the student alone"
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
# **Exercise 2: the distillation loss.** Write `my_distillation_loss(student_logits, teacher_logits,
# targets, T, alpha)` with the KL term in `batchmean` reduction, scaled by `T**2`, weighted by
# `alpha`, plus `(1 - alpha)` times the cross-entropy (all targets are labelled here). The check
# also compares the gradient that reaches the student's logits.

# %%
def my_distillation_loss(student_logits, teacher_logits, targets, T, alpha):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_function(
    my_distillation_loss,
    reference=distill.distillation_loss,
    make_inputs=lambda g: (torch.randn(16, 10, generator=g).requires_grad_(), torch.randn(16, 10, generator=g),
                           torch.randint(0, 10, (16,), generator=g), 2.0, 0.7),
    hint="F.kl_div takes the student's log-probabilities and the teacher's probabilities, reduction='batchmean'.",
)

# %% [markdown]
# Stuck? The reference answers are the tested code in lablib: uncomment to see them.

# %%
# show(distill.soft_targets); show(distill.distillation_loss)

# %% [markdown]
# **Exercise 3 (open).** Rerun experiment B with `T = 1` and `T = 5`, and with 1 or 10 labels per
# class (`cfg["labels_per_class"] = 1`). When does the transfer set matter most?
#
# ## Going further
#
# * **GPU scale.** `LAB_SCALE=gpu` trains a wider teacher for longer and runs five seeds.
# * **Your own images.** `data.image_folder("path", size=32)` loads a class-per-folder dataset; put a
#   few labelled images per class in one folder and many unlabelled ones in another, and use the
#   teacher to label the second, as in experiment B.
# * **A pretrained teacher.** The realistic version of this lab distils a large pretrained model
#   (e.g. a ConvNeXt or ViT fine-tuned on your data) into a small CNN; the loss and the transfer-set
#   recipe are the same.
# * **Read more.** Hinton, Vinyals & Dean (2015), *Distilling the Knowledge in a Neural Network*.
