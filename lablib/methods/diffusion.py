"""Synthetic training data with diffusion models, built on `diffusers`.

Part A, a small class-conditional model trained in the lab (DDPM, Ho et al. 2020; sampled with
DDIM, Song et al. 2021):
  add_noise     the forward process q(x_t | x_0): blend an image with Gaussian noise
  ddpm_loss     the training objective: predict the noise that was added
  batches       endless seeded training batches (x0 in [-1, 1], labels with "no class" dropout)
  warmup_cosine the learning-rate schedule (a `schedule=` for train.fit)
  train_unet    ddpm_loss through the one training loop, train.fit
  sample        the reverse process with diffusers' DDIMScheduler, class by class
  ddim_step     one DDIM update written out by hand (tested equal to DDIMScheduler.step)
  quality checks: nearest-neighbour distances (memorisation) and per-class diversity
  save_unet / load_unet: checkpoints (save_pretrained / from_pretrained), written atomically

The Stable Diffusion pipeline itself is in stable_diffusion.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from lablib.core import cache, validate
from lablib.core.validate import integer, path, positive_int, real
from lablib.nets import train

# ---------------------------------------------------------------------------------------------
# Part A: a class-conditional DDPM on small grey images
# ---------------------------------------------------------------------------------------------


def make_unet(image_size: int = 16, channels: int = 1, num_classes: int = 10,
              widths: tuple[int, ...] = (32, 64, 64)) -> UNet2DModel:
    """A small UNet that predicts noise, told the class through a learned class embedding
    (`num_class_embeds`) added to the timestep embedding. One embedding more than there are
    classes: the last one means "no class", for classifier-free guidance (see `sample`).
    Self-attention only at the lowest resolution, where it is cheap. About 1.1M parameters."""
    positive_int("image_size", image_size)
    positive_int("channels", channels)
    positive_int("num_classes", num_classes)
    if (not isinstance(widths, (tuple, list)) or len(widths) < 2
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 8 or w % 8 for w in widths)):
        raise ValueError(f"widths must be 2 or more channel counts, each a multiple of 8 (GroupNorm), got {widths!r}")
    if image_size % 2 ** (len(widths) - 1):
        raise ValueError(f"image_size {image_size} must halve cleanly {len(widths) - 1} times (widths={widths})")
    down = ("DownBlock2D",) * (len(widths) - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (len(widths) - 1)
    return UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(widths), layers_per_block=1, norm_num_groups=8,
        down_block_types=down, up_block_types=up, num_class_embeds=num_classes + 1,
    )


def make_schedulers(num_train_timesteps: int = 1000, beta_schedule: str = "linear") -> tuple[DDPMScheduler, DDIMScheduler]:
    """The noise schedule for training (DDPM) and the sampler (DDIM) that shares it.

    The cosine schedule ("squaredcos_cap_v2") destroys a small image more gradually than the
    linear one, so fewer of the 1000 steps are wasted on pure noise. clip_sample keeps the
    model's estimate of the clean image within the data range [-1, 1].
    """
    positive_int("num_train_timesteps", num_train_timesteps)
    if beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        raise ValueError(f"beta_schedule must be linear, scaled_linear or squaredcos_cap_v2, got {beta_schedule!r}")
    train_sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                clip_sample=True)
    # steps_offset=1 is what the Stable Diffusion configs use; without it diffusers warns that
    # the schedule is "outdated" and the first sampling step lands one step too early.
    sampler = DDIMScheduler.from_config(train_sched.config, steps_offset=1, set_alpha_to_one=False)
    return train_sched, sampler


def num_classes(model: UNet2DModel) -> int:
    """The classes a make_unet model draws (its last class embedding is "no class")."""
    if not isinstance(model, UNet2DModel):
        raise TypeError(f"model must be a UNet2DModel (see make_unet), got {type(model).__name__}")
    if model.config.num_class_embeds is None:
        raise ValueError("model has no class embedding: build it with make_unet(num_classes=...)")
    return model.config.num_class_embeds - 1



def _check_scheduler(scheduler, kinds, which: str) -> None:
    if not isinstance(scheduler, kinds):
        raise TypeError(f"scheduler must be {which}, got {type(scheduler).__name__}")


def _check_labels(labels: torch.Tensor, n: int, *, with_null: bool = False) -> None:
    """Class ids in 0..n-1 (and n, "no class", where the training loss sees it)."""
    if len(labels) == 0:
        raise ValueError("labels must name at least one class id")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class ids, got {labels.dtype}")
    top = n + with_null
    if labels.min() < 0 or labels.max() >= top:
        bad = labels[(labels < 0) | (labels >= top)][0].item()
        null = f" ({n} = no class)" if with_null else ""
        raise ValueError(f"labels: class id {bad} is unknown; the model knows classes 0..{top - 1}{null}")


def _alpha_bar(name: str, value, like: torch.Tensor, *, positive: bool, device=None) -> torch.Tensor:
    """ᾱ (a number or a tensor) as a tensor of `like`'s dtype, each value in [0, 1]; in (0, 1]
    with positive=True, where a formula divides by sqrt(ᾱ)."""
    if isinstance(value, (bool, str)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__} {value!r}")
    try:
        a = torch.as_tensor(value, dtype=like.dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}") from None
    bad = a.isnan() | (a <= 0 if positive else a < 0) | (a > 1)
    if bad.any():
        raise ValueError(f"{name} must be in {'(0, 1]' if positive else '[0, 1]'}, got {a[bad].flatten()[0].item():g}")
    return a


def _broadcasts(name: str, a: torch.Tensor, x: torch.Tensor, x_name: str) -> None:
    try:
        fits = torch.broadcast_shapes(a.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} {tuple(a.shape)} must broadcast to {x_name} {tuple(x.shape)} (e.g. a number)")


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1], the range the noise schedule assumes (noise has std 1)."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a float tensor, got {getattr(images, 'dtype', type(images).__name__)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must be in [0, 1], got values up to {images.max():g} and down to {images.min():g}")
    return images * 2 - 1


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> images in [0, 1]."""
    validate.tensor("x", x)
    return ((x + 1) / 2).clamp(0, 1)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The forward process in one jump, q(x_t | x_0): x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 - ᾱ_t)·ε.

    alpha_bar holds ᾱ_t (the product of (1 - β) up to step t), one value per image; at ᾱ = 1 the
    image is untouched, at ᾱ → 0 it is pure noise. No loop over t is needed: that is what makes
    DDPM training cheap (any t, one line).
    """
    if validate.tensor("x0", x0).shape != validate.tensor("noise", noise).shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
    alpha_bar = _alpha_bar("alpha_bar", alpha_bar, x0, positive=False, device=x0.device)
    if alpha_bar.numel() not in (1, len(x0)):
        raise ValueError(f"alpha_bar must hold one value per image ({len(x0)}) or one for all, got {alpha_bar.numel()}")
    alpha_bar = alpha_bar.reshape(-1, *[1] * (x0.ndim - 1))
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def ddpm_loss(model: UNet2DModel, x0: torch.Tensor, labels: torch.Tensor, scheduler: DDPMScheduler,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The DDPM training loss for a batch of clean images x0 in [-1, 1] and their classes:
    pick a random step t per image, noise the image to x_t, and score how well the model
    recovers the noise ε that was added (mean squared error)."""
    null = num_classes(model)
    if validate.tensor("x0", x0).ndim != 4 or x0.shape[1] != model.config.in_channels:
        raise ValueError(f"x0 must be (N, {model.config.in_channels}, H, W) for this model, got {tuple(x0.shape)}")
    if validate.tensor("labels", labels).shape != x0.shape[:1]:
        raise ValueError(f"labels must have shape ({len(x0)},), got {tuple(labels.shape)}")
    _check_labels(labels, null, with_null=True)
    _check_scheduler(scheduler, (DDPMScheduler, DDIMScheduler), "the DDPMScheduler make_schedulers() returns first")
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    alpha_bar = scheduler.alphas_cumprod.to(x0.device)[t]
    x_t = add_noise(x0, noise, alpha_bar)
    noise_pred = model(x_t, t, class_labels=labels).sample
    return F.mse_loss(noise_pred, noise)


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64, p_uncond: float = 0.1, seed: int = 0,
            *, num_classes: int | None = None):
    """An endless generator of DDPM training batches (x0, y) for `train.fit(..., steps=N)`: images
    in [0, 1] drawn at random (with replacement) and mapped to [-1, 1], and their labels, a share
    `p_uncond` of them replaced by "no class" (id `num_classes`), so the same network also learns
    the unconditional model that classifier-free guidance needs. Seeded: the same seed gives the
    same batches. num_classes defaults to the largest label + 1 (pass it when a class may be
    missing from `labels`, e.g. make_unet's num_classes)."""
    positive_int("batch_size", batch_size)
    if validate.tensor("images", images).ndim != 4 or validate.tensor("labels", labels).shape != images.shape[:1]:
        raise ValueError(f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    if len(images) == 0:
        raise ValueError("images must hold at least one image")
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond!r}")
    integer("seed", seed, 0)
    null = int(labels.max()) + 1 if num_classes is None else positive_int("num_classes", num_classes)
    _check_labels(labels, null)
    x_all, labels = to_model_range(images), labels.long()

    def endless():
        gen = torch.Generator().manual_seed(seed)
        while True:
            idx = torch.randint(0, len(x_all), (batch_size,), generator=gen)
            y = torch.where(torch.rand(batch_size, generator=gen) < p_uncond, null, labels[idx])
            yield x_all[idx], y

    return endless()


def warmup_cosine(k: int, total: int) -> float:
    """The learning-rate factor at step k of `total` (a `schedule=` for train.fit): a linear
    warm-up over the first 5 % of the steps, then cosine decay towards 0."""
    positive_int("total", total)
    integer("k", k, 0, total)
    warmup = max(1, total // 20)
    return min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * k / total))


def train_unet(model: UNet2DModel, images: torch.Tensor, labels: torch.Tensor, scheduler: DDPMScheduler, *,
               steps: int, batch_size: int = 64, lr: float = 2e-3, p_uncond: float = 0.1, seed: int = 0,
               device=None, progress: bool = True, desc: str = "diffusion", log_every: int = 10) -> train.History:
    """Train `model` with ddpm_loss for `steps` optimizer steps on images in [0, 1], through the
    one training loop, train.fit: `batches(...)` feeds it, AdamW (weight decay 1e-4) with
    `warmup_cosine`, gradients clipped to norm 1. Returns fit's History (train_loss is the mean
    loss of each `log_every` steps). `seed` seeds the batches; seed + 1 the step's t and noise."""
    positive_int("steps", steps)
    null = num_classes(model)
    _check_scheduler(scheduler, (DDPMScheduler, DDIMScheduler), "the DDPMScheduler make_schedulers() returns first")
    data = batches(images, labels, batch_size, p_uncond, seed, num_classes=null)
    gen = torch.Generator().manual_seed(seed + 1)

    def step(m, batch):
        x0, y = batch
        return ddpm_loss(m, x0, y, scheduler, gen)

    return train.fit(model, data, steps=steps, step=step, lr=lr, optimizer="adamw", weight_decay=1e-4,
                     schedule=warmup_cosine, grad_clip=1.0, log_every=min(log_every, steps), device=device,
                     progress=progress, desc=desc)


def sample(model: UNet2DModel, labels, scheduler: DDIMScheduler, *, steps: int = 25, guidance_scale: float = 1.0,
           seed: int = 0, batch_size: int = 500, trajectory: bool = False, progress: bool = False):
    """Generate one image per entry of `labels` (class ids) by running the reverse process:
    start from pure noise and let the DDIM scheduler step it towards an image, `steps` times,
    using the model's noise prediction each time. Returns images in [0, 1], (N, C, H, W).

    guidance_scale w > 1 is classifier-free guidance, the `guidance_scale` of Stable Diffusion:
    the noise estimate becomes ε_none + w·(ε_class − ε_none), pushed further in the direction
    the class makes, at the price of two forward passes per step and less variety.

    With trajectory=True also returns the intermediate x_t of every step, (steps + 1, N, C, H, W).
    """
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    integer("seed", seed, 0)
    # DDPMScheduler.step has no eta: sampling needs the DDIM sampler
    _check_scheduler(scheduler, DDIMScheduler, "a DDIMScheduler (the sampler make_schedulers() returns second)")
    try:
        labels = torch.as_tensor(labels).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"labels must be class ids (a list or tensor of ints), got {type(labels).__name__}") from None
    real("guidance_scale", guidance_scale, 1, math.inf, high_open=True)  # 1 = no guidance
    null = num_classes(model)
    _check_labels(labels, null)
    labels = labels.long()
    device = next(model.parameters()).device
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    c, size = model.config.in_channels, model.config.sample_size
    scheduler.set_timesteps(steps)  # picks `steps` of the 1000 training steps, evenly spaced
    out, path = [], []
    for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
        y = labels[start : start + batch_size].to(device)
        x = torch.randn((len(y), c, size, size), generator=gen).to(device)  # x_T: pure noise
        states = [x.cpu()]
        for t in scheduler.timesteps:
            with torch.no_grad():
                if guidance_scale == 1:
                    noise_pred = model(x, t, class_labels=y).sample
                else:  # one batch holds both passes: with the class, and with "no class"
                    both = model(torch.cat([x, x]), t, class_labels=torch.cat([y, torch.full_like(y, null)])).sample
                    cond, uncond = both.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
            x = scheduler.step(noise_pred, t, x, eta=0.0).prev_sample  # eta=0: deterministic DDIM
            if trajectory:
                states.append(x.cpu())
        out.append(to_image_range(x).cpu())
        if trajectory:
            path.append(torch.stack([to_image_range(s) for s in states]))
    images = torch.cat(out)
    return (images, torch.cat(path, dim=1)) if trajectory else images


def predict_x0(x_t: torch.Tensor, noise_pred: torch.Tensor, alpha_bar) -> torch.Tensor:
    """The clean image the model's noise estimate implies: add_noise solved for x_0."""
    if validate.tensor("x_t", x_t).shape != validate.tensor("noise_pred", noise_pred).shape:
        raise ValueError(f"x_t {tuple(x_t.shape)} and noise_pred {tuple(noise_pred.shape)} must have the same shape")
    alpha_bar = _alpha_bar("alpha_bar", alpha_bar, x_t, positive=True)  # divided by below
    _broadcasts("alpha_bar", alpha_bar, x_t, "x_t")
    return (x_t - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()


def ddim_step(x_t: torch.Tensor, noise_pred: torch.Tensor, alpha_bar_t, alpha_bar_prev) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0), t -> the previous sampled step: estimate the clean
    image x̂_0 from x_t, then re-noise it to the *lower* noise level ᾱ_prev with the same noise
    direction: x_prev = sqrt(ᾱ_prev)·x̂_0 + sqrt(1 - ᾱ_prev)·ε̂. (diffusers' DDIMScheduler.step
    does this, plus optional clipping of x̂_0 and the stochastic eta > 0 variant.)"""
    if validate.tensor("x_t", x_t).shape != validate.tensor("noise_pred", noise_pred).shape:
        raise ValueError(f"x_t {tuple(x_t.shape)} and noise_pred {tuple(noise_pred.shape)} must have the same shape")
    alpha_bar_t = _alpha_bar("alpha_bar_t", alpha_bar_t, x_t, positive=True)  # predict_x0 divides by it
    _broadcasts("alpha_bar_t", alpha_bar_t, x_t, "x_t")
    alpha_bar_prev = _alpha_bar("alpha_bar_prev", alpha_bar_prev, x_t, positive=False)
    _broadcasts("alpha_bar_prev", alpha_bar_prev, x_t, "x_t")
    x0_hat = predict_x0(x_t, noise_pred, alpha_bar_t)
    return alpha_bar_prev.sqrt() * x0_hat + (1 - alpha_bar_prev).sqrt() * noise_pred


# --- quality checks ---------------------------------------------------------------------------


def nearest_distance(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each image, the Euclidean (pixel) distance to its nearest neighbour in `reference`.
    Generated images much closer to the training set than fresh real images are is the sign of
    a model that memorised (copied) its training data."""
    validate.tensor("images", images)
    validate.tensor("reference", reference)
    if images.ndim != 4 or reference.ndim != 4 or images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} must be (N, C, H, W) of one size")
    if len(reference) == 0:
        raise ValueError("reference must hold at least one image")
    return torch.cdist(images.flatten(1).double(), reference.flatten(1).double()).min(dim=1).values.float()


def diversity(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the mean pixel distance between two different images of that class (NaN for
    a class with fewer than two). A model that draws one "average 3" every time scores low."""
    positive_int("num_classes", num_classes)
    if validate.tensor("labels", labels).shape != validate.tensor("images", images).shape[:1]:
        raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    if len(labels):  # no images: every class is NaN
        _check_labels(labels, num_classes)
    out = torch.full((num_classes,), float("nan"))
    for c in range(num_classes):
        x = images[labels == c].flatten(1).double()
        if len(x) >= 2:
            d = torch.cdist(x, x)
            out[c] = (d.sum() / (len(x) * (len(x) - 1))).float()  # the diagonal is 0
    return out


# --- checkpoints -------------------------------------------------------------------------------


def save_unet(model: UNet2DModel, folder, extra: dict | None = None) -> Path:
    """save_pretrained (config.json + safetensors weights) and `extra` (e.g. the loss curve,
    as extra.json), written atomically by cache.write_folder: an interrupted save never leaves a
    half-written checkpoint that a later run would trust."""
    if not isinstance(model, UNet2DModel):
        raise TypeError(f"model must be a UNet2DModel (see make_unet), got {type(model).__name__}")
    folder = path("folder", folder)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    try:
        text = json.dumps(extra or {})
    except (TypeError, ValueError) as e:  # a tensor, a set, a circular reference...
        raise TypeError(f"extra must hold only JSON values (numbers, strings, lists, dicts): {e}") from None

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "extra.json").write_text(text, encoding="utf-8")
    return cache.write_folder(folder, write)


def has_checkpoint(folder) -> bool:
    """Whether save_unet finished writing `folder` (a killed save never marks it complete)."""
    folder = path("folder", folder)
    return cache.is_complete(folder) and (folder / "diffusion_pytorch_model.safetensors").is_file()


def load_unet(folder) -> tuple[UNet2DModel, dict]:
    """The UNet saved by save_unet (from_pretrained reads the safetensors file: no pickle), and
    its extra.json."""
    folder = path("folder", folder)
    if not has_checkpoint(folder):
        raise FileNotFoundError(f"folder {str(folder)!r} holds no saved UNet (config.json + "
                                "diffusion_pytorch_model.safetensors); train one and save_unet it first")
    # low_cpu_mem_usage=False: the default wants the `accelerate` package (and warns without it);
    # a model this small gains nothing from it
    model = UNet2DModel.from_pretrained(folder, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False)
    extra_file = folder / "extra.json"
    extra = json.loads(extra_file.read_text(encoding="utf-8")) if extra_file.is_file() else {}
    return model.eval(), extra
