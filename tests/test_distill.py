import pytest
import torch
import torch.nn.functional as F

from lablib.methods.distill import distillation_loss, pseudo_labels, soft_targets


def _logits(seed=0, n=16, c=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def test_alpha_limits_reduce_to_hard_and_soft():
    s, t, y = _logits()
    assert torch.allclose(distillation_loss(s, t, y, T=3.0, alpha=0.0), F.cross_entropy(s, y))
    kl = (soft_targets(t, 3.0) * (soft_targets(t, 3.0).log() - F.log_softmax(s / 3.0, 1))).sum(1).mean()
    assert torch.allclose(distillation_loss(s, t, y, T=3.0, alpha=1.0), kl * 9, atol=1e-6)
    assert torch.allclose(distillation_loss(s, t, None, T=3.0, alpha=1.0), kl * 9, atol=1e-6)


def test_unlabelled_examples_get_the_soft_term_only():
    s, t, y = _logits()
    y_part = y.clone()
    y_part[4:] = -1  # only the first four are labelled
    soft = distillation_loss(s, t, None, T=2.0, alpha=1.0)
    expected = 0.7 * soft + 0.3 * F.cross_entropy(s[:4], y[:4])
    assert torch.allclose(distillation_loss(s, t, y_part, T=2.0, alpha=0.7), expected)
    none = torch.full_like(y, -1)
    assert torch.allclose(distillation_loss(s, t, none, T=2.0, alpha=0.7), 0.7 * soft)


def test_hard_term_is_cross_entropy_that_ignores_unlabelled_rows():
    """-1 means "no label": the hard term is cross-entropy with ignore_index=-1 (the mean over the
    labelled rows), which is what a learner's F.cross_entropy(..., ignore_index=-1) computes."""
    s, t, y = _logits()
    y = y.clone()
    y[::3] = -1
    assert torch.allclose(distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y, ignore_index=-1))
    with pytest.raises(IndexError):  # the plain cross-entropy cannot take -1 as a class
        F.cross_entropy(s, y)


def test_confident_pseudo_labels_feed_the_distillation_loss():
    """Thresholded pseudo-labels contain -1; the loss takes them as unlabelled rows."""
    s, t, _ = _logits()
    t = 3 * t  # a teacher sure of some rows and unsure of others
    pseudo = pseudo_labels(t, threshold=0.5)
    assert (pseudo == -1).any() and (pseudo >= 0).any()
    keep = pseudo >= 0
    expected = 0.5 * distillation_loss(s, t, None, alpha=1.0) + 0.5 * F.cross_entropy(s[keep], pseudo[keep])
    assert torch.allclose(distillation_loss(s, t, pseudo, alpha=0.5), expected)


def test_identical_logits_give_zero_soft_loss():
    s, _, y = _logits()
    assert distillation_loss(s, s.clone(), y, alpha=1.0).abs().item() < 1e-6


def test_gradient_matches_hand_derivation_and_scales_with_T_squared():
    """d(soft)/d(student logits) = T * (softmax(s/T) - softmax(t/T)) / N: the T^2 factor turns
    the 1/T from the softened softmax into T. Without it the gradient would shrink as 1/T."""
    s, t, y = _logits()
    for T in (1.0, 2.0, 5.0):
        sg = s.clone().requires_grad_()
        distillation_loss(sg, t, y, T=T, alpha=1.0).backward()
        expected = T * (F.softmax(s / T, 1) - F.softmax(t / T, 1)) / len(s)
        assert torch.allclose(sg.grad, expected, atol=1e-6)
    # High-T regime (logits small relative to T): softmax(x/T) ~ (1 + x/T)/C, so the raw soft
    # gradient shrinks as 1/T^2 and the T^2-scaled one stays the same size whatever T is.
    norms = []
    for T in (10.0, 20.0):
        sg = (0.1 * s).requires_grad_()
        distillation_loss(sg, 0.1 * t, y, T=T, alpha=1.0).backward()
        norms.append(sg.grad.norm().item())
    assert norms[1] == pytest.approx(norms[0], rel=0.05)


def test_teacher_gets_no_gradient():
    s, t, y = _logits()
    t = t.clone().requires_grad_()
    distillation_loss(s.requires_grad_(), t, y).backward()
    assert t.grad is None


def test_batchmean_vs_the_articles_mean():
    """nn.KLDivLoss() averages over classes too: exactly num_classes times smaller."""
    s, t, _ = _logits(c=10)
    log_p, q = F.log_softmax(s / 2, 1), F.softmax(t / 2, 1)
    article = torch.nn.KLDivLoss()(log_p, q)
    assert torch.allclose(article * 10, F.kl_div(log_p, q, reduction="batchmean"))


@pytest.mark.parametrize(
    "kwargs, word",
    [({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"T": 0}, "T must"), ({"T": -1}, "T must"),
     ({"targets": None, "alpha": 0.5}, "targets")],
)
def test_bad_input(kwargs, word):
    s, t, y = _logits()
    args = {"targets": y} | kwargs
    with pytest.raises(ValueError, match=word):
        distillation_loss(s, t, **args)


def test_shape_mismatch():
    s, t, y = _logits()
    with pytest.raises(ValueError, match="student_logits and teacher_logits"):
        distillation_loss(s, t[:, :5], y)


def test_pseudo_labels_threshold():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 9.0]])
    assert pseudo_labels(logits).tolist() == [0, 0, 2]
    assert pseudo_labels(logits, threshold=0.9).tolist() == [0, -1, 2]
    assert pseudo_labels(logits, threshold=1.0).tolist() == [-1, -1, -1]  # softmax never reaches 1 exactly
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(logits, threshold=1.5)
    with pytest.raises(ValueError, match="teacher_logits"):
        pseudo_labels(torch.zeros(3))


def test_bad_tensors_name_the_argument():
    s, t, y = _logits(n=4, c=3)
    cases = [
        (lambda: soft_targets(None), "teacher_logits"),
        (lambda: soft_targets(t.tolist()), "teacher_logits"),
        (lambda: soft_targets(t[0]), "teacher_logits"),
        (lambda: distillation_loss(None, t, y), "student_logits"),
        (lambda: distillation_loss(s, t.tolist(), y), "teacher_logits"),
        (lambda: distillation_loss(s, t, torch.zeros(5, dtype=torch.long)), "targets"),
        (lambda: distillation_loss(s, t, y.float()), "targets"),
        (lambda: distillation_loss(s, t, y + 5), "targets"),
        (lambda: distillation_loss(s, t, torch.tensor([0, -2, 1, 2])), "targets"),  # -1 = no label; -2: nothing
        (lambda: distillation_loss(s[:0], t[:0], y[:0]), "empty"),
        (lambda: pseudo_labels(None), "teacher_logits"),
    ]
    for call, word in cases:
        with pytest.raises((ValueError, TypeError), match=word):
            call()
