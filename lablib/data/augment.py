"""Weak and strong image augmentation on batches of tensors (N, C, H, W) in [0, 1].

* `weak`: a random shift of up to `shift` pixels (pad, then crop back), as in FixMatch.
* `strong`: RandAugment-style: each image gets `n` operations drawn at random from `OPS`
  (rotate, shear, translate, brightness, contrast, sharpness, solarize, posterize,
  autocontrast, identity) at a random magnitude, then a Cutout square. Plain torch, one
  draw per image, fast on a CPU, seeded by a torch.Generator.
* `rand_augment`: kornia's own RandAugment, made to work on 1-channel images (see there).
* `affine`: Keras's `ImageDataGenerator` list (rotation, shifts, shear, zoom, flip, fill mode)
  with its units, one draw per image, in one `grid_sample`.

Every function keeps the shape, dtype and device of its input, and works on 1 and 3 channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lablib.core.validate import integer, real

# The strong operations and their largest magnitude (FixMatch's RandAugment list, Sohn et al.
# 2020, table 12, less Equalize and Color: Color does nothing to a grey image).
OPS = {
    "identity": 0.0,
    "rotate": 30.0,  # degrees, either way
    "shear_x": 0.3,  # shear factor, either way
    "shear_y": 0.3,
    "translate_x": 0.3,  # share of the image width, either way
    "translate_y": 0.3,
    "brightness": 0.9,  # factor 1 ± 0.9
    "contrast": 0.9,
    "sharpness": 0.9,
    "solarize": 1.0,  # invert the pixels above a threshold in [0, 1]
    "posterize": 4.0,  # keep 4..8 bits
    "autocontrast": 0.0,
}
_AFFINE = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _check_images(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")


def _uniform(n: int, low: float, high: float, generator, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(n, generator=generator)  # drawn on the CPU, so a CPU generator seeds any device
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def weak(x: torch.Tensor, shift: int = 1, flip: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-shift, shift] pixels: reflect-pad by
    `shift`, then crop the original size at a random offset (FixMatch's "pad and crop").
    flip=True also mirrors half the images left-right, as the paper does for natural images
    (not for digits: a mirrored digit is another symbol)."""
    _check_images(x)
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"shift must be a non-negative int (pixels), got {shift!r}")
    if not isinstance(flip, bool):  # flip="no" would be truthy
        raise TypeError(f"flip must be True or False, got {flip!r}")
    if flip:
        mirrored = torch.rand(len(x), generator=generator).to(x.device) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    if shift == 0 or len(x) == 0:
        return x.clone()
    n, _, h, w = x.shape
    if shift >= min(h, w):
        raise ValueError(f"shift={shift} must be smaller than the image ({h}x{w})")
    padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, size: float = 0.5, fill: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Paint one square per image with `fill`: a random side of 1 pixel up to `size` of the
    image side, at a random centre (it may hang over the edge). FixMatch uses size 0.5, grey."""
    _check_images(x)
    real("size", size, 0, 1, low_open=True)  # a share of the image side
    real("fill", fill, 0, 1)
    n, _, h, w = x.shape
    side = 1 + torch.floor(torch.rand(n, generator=generator) * size * min(h, w)).to(x.device)
    cy = torch.randint(0, h, (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator).to(x.device)
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    top, left = cy - torch.div(side, 2, rounding_mode="floor"), cx - torch.div(side, 2, rounding_mode="floor")
    inside_y = (ys[None] >= top[:, None]) & (ys[None] < (top + side)[:, None])  # (N, H)
    inside_x = (xs[None] >= left[:, None]) & (xs[None] < (left + side)[:, None])  # (N, W)
    box = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (N, 1, H, W)
    return torch.where(box, torch.full_like(x, fill), x)


def _affine(x: torch.Tensor, chosen: dict[str, torch.Tensor], generator) -> torch.Tensor:
    """Rotate, shear and translate each image (only where its op was chosen) with one
    affine_grid + grid_sample; the corners that come in from outside are 0 (background)."""
    n = len(x)
    mags = {}
    for name in _AFFINE:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        mags[name] = (sign * torch.rand(n, generator=generator) * OPS[name]) * chosen[name].cpu()
    angle = mags["rotate"] * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    one = torch.ones(n)
    shear = torch.stack([torch.stack([one, mags["shear_x"]], 1), torch.stack([mags["shear_y"], one], 1)], 1)
    shift = 2 * torch.stack([mags["translate_x"], mags["translate_y"]], 1)  # grid units: the image spans 2
    theta = torch.cat([rot @ shear, shift[:, :, None]], 2).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def strong(x: torch.Tensor, n: int = 2, shift: int = 1, flip: bool = False, cutout_size: float = 0.5,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """FixMatch's strong view: the weak shift, then `n` operations per image drawn from OPS
    (each image its own, each at a random magnitude up to OPS[name]), then a Cutout square
    (grey, up to `cutout_size` of the side; 0 leaves it out). Like RandAugment in the paper's
    "random magnitude" variant; the affine operations are applied together, then the others."""
    _check_images(x)
    integer("n", n, 0, len(OPS))  # operations per image
    real("cutout_size", cutout_size, 0, 1)
    out = weak(x, shift, flip, generator)
    if len(x) == 0:
        return out
    names = list(OPS)
    picks = torch.rand(len(x), len(names), generator=generator).argsort(dim=1)[:, :n]  # n distinct ops each
    chosen = {name: (picks == i).any(dim=1).to(x.device) for i, name in enumerate(names)}
    out = _affine(out, chosen, generator)

    def blend(base, name):  # PIL's ImageEnhance: base + factor * (image - base)
        f = _uniform(len(x), 1 - OPS[name], 1 + OPS[name], generator, out)[:, None, None, None]
        return torch.where(chosen[name][:, None, None, None], (base + f * (out - base)).clamp(0, 1), out)

    out = blend(torch.zeros_like(out), "brightness")
    out = blend(out.mean(dim=(1, 2, 3), keepdim=True).expand_as(out), "contrast")
    c = out.shape[1]
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=out.dtype, device=out.device) / 13
    smooth = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    out = blend(smooth, "sharpness")
    threshold = _uniform(len(x), 0.0, 1.0, generator, out)[:, None, None, None]
    out = torch.where(chosen["solarize"][:, None, None, None] & (out >= threshold), 1 - out, out)
    levels = 2 ** torch.randint(4, 9, (len(x),), generator=generator).to(out)[:, None, None, None]
    out = torch.where(chosen["posterize"][:, None, None, None], torch.floor(out * (levels - 1) + 0.5) / (levels - 1), out)
    lo, hi = out.amin(dim=(2, 3), keepdim=True), out.amax(dim=(2, 3), keepdim=True)
    stretched = torch.where(hi > lo, (out - lo) / (hi - lo).clamp_min(1e-8), out)
    out = torch.where(chosen["autocontrast"][:, None, None, None], stretched, out)
    if cutout_size > 0:
        out = cutout(out, cutout_size, 0.5, generator)
    return out


def rand_augment(x: torch.Tensor, n: int = 2, m: int = 10, seed: int | None = None) -> torch.Tensor:
    """kornia's RandAugment (all images in a call share the same `n` operations, at magnitude
    `m` of 30), on 1-channel images too.

    kornia 0.9's RandAugment fails on grey images whenever it draws its "color" operation
    (adjust_saturation needs 3 channels: "Input size must have a shape of (*, 3, H, W)").
    A grey image is an RGB image with three equal channels, and every operation in the policy
    keeps them equal (a grey image has no saturation to adjust), so we run it on three copies
    of the channel and hand back the first. `seed` makes a call repeatable (kornia draws from
    torch's global generator; a seeded call leaves that generator as it found it)."""
    _check_images(x)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 1 or 3 channels, got {x.shape[1]}")
    integer("n", n, 1)  # operations per call; kornia checks the top end
    real("m", m, 0, 30, low_open=True, high_open=True)  # kornia's range
    if seed is not None:
        integer("seed", seed)
    from kornia.augmentation.auto import RandAugment

    aug = RandAugment(n=n, m=m)
    grey = x.shape[1] == 1
    rgb = x.expand(-1, 3, -1, -1).contiguous() if grey else x
    if seed is None:
        out = aug(rgb)
    else:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = aug(rgb)
    out = out[:, :1] if grey else out
    return out.to(x.dtype).contiguous()


# Keras's fill_mode names -> grid_sample's padding_mode
FILL_MODES = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}


def affine(x: torch.Tensor, rotation: float = 0.0, shift: float = 0.0, shear: float = 0.0, zoom: float = 0.0,
           flip: bool = False, fill: str = "nearest", generator: torch.Generator | None = None) -> torch.Tensor:
    """Keras's `ImageDataGenerator(rotation_range, width/height_shift_range, shear_range,
    zoom_range, horizontal_flip, fill_mode)` on a batch, each image with its own draw:

    rotation: degrees, an angle drawn in [-rotation, rotation];
    shift: share of the image side, each axis in [-shift, shift];
    shear: degrees (Keras's unit: shear_range=0.1 is a tenth of a degree), in [-shear, shear];
    zoom: each axis scaled by its own factor in [1 - zoom, 1 + zoom] (as Keras: > 1 zooms out);
    flip: mirror half the images left-right;
    fill: how pixels that come in from outside are filled: "nearest" (Keras's default: the edge
          pixel), "constant" (0) or "reflect".
    """
    _check_images(x)
    rotation, shift = real("rotation", rotation, 0, 180), real("shift", shift, 0, 1)
    shear, zoom = real("shear", shear, 0, 89), real("zoom", zoom, 0, 1, high_open=True)
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be True or False, got {flip!r}")
    if not isinstance(fill, str) or fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {', '.join(FILL_MODES)} (Keras's fill_mode), got {fill!r}")
    n = len(x)
    if n == 0:
        return x.clone()

    def draw(limit: float) -> torch.Tensor:  # uniform in [-limit, limit], on the CPU so a CPU generator seeds any device
        return (2 * torch.rand(n, generator=generator) - 1) * limit

    angle, slant = draw(math.radians(rotation)), draw(math.radians(shear))
    zx, zy = 1 + draw(zoom), 1 + draw(zoom)
    tx, ty = 2 * draw(shift), 2 * draw(shift)  # grid units: the image spans [-1, 1]
    cos, sin, zero, one = torch.cos(angle), torch.sin(angle), torch.zeros(n), torch.ones(n)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shr = torch.stack([torch.stack([one, -torch.sin(slant)], 1), torch.stack([zero, torch.cos(slant)], 1)], 1)
    scale = torch.diag_embed(torch.stack([zx, zy], 1))
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else one
    flipper = torch.diag_embed(torch.stack([mirror, one], 1))
    # grid_sample maps each output pixel to where it reads from: rotate, shear, zoom, then mirror.
    # Grid units run [-1, 1] along each side, so a non-square image is rotated in pixels (as
    # Keras does) by going to pixel units and back; otherwise it would also be stretched.
    h, w = x.shape[-2:]
    aspect = torch.diag(torch.tensor([float(w), float(h)]))
    linear = torch.linalg.inv(aspect) @ rot @ shr @ scale @ flipper @ aspect
    theta = torch.cat([linear, torch.stack([tx, ty], 1)[:, :, None]], 2)
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=FILL_MODES[fill], align_corners=False)
