"""Reference answers for lab 06 (synthetic training data with diffusion)."""

import torch


def my_predict_x0(x_t, noise_pred, alpha_bar):
    """Solve x_t = sqrt(ᾱ)·x_0 + sqrt(1 - ᾱ)·ε for x_0."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=x_t.dtype)
    return (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()


def my_ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
    """Deterministic DDIM (eta = 0): estimate x_0, then noise it to ᾱ_prev with the same ε."""
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype)
    alpha_bar_prev = torch.as_tensor(alpha_bar_prev, dtype=x_t.dtype)
    x0_hat = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return alpha_bar_prev.sqrt() * x0_hat + (1 - alpha_bar_prev).sqrt() * eps
