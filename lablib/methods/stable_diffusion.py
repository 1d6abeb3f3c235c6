"""The Stable Diffusion pipeline as the source article uses it, built on `diffusers`:
  sd_pipeline       a real checkpoint (LAB_SD_MODEL) or a tiny random one built from configs
  generate_folder   prompts -> a labelled image folder (root/<class>/<n>.png)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from lablib.core import config
from lablib.core.validate import integer, path, positive_int, real

# The tiny tokenizer's vocabulary: one token per character, as a word's inner or final ("</w>")
# piece, so any lower-case prompt tokenizes without a single merge rule.
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,-'"
TINY_SIZE = 32  # the tiny pipeline's default image size (pixels per side)


def _sd_pipeline_class():
    """diffusers' StableDiffusionPipeline, imported with transformers' logging quieted: the import
    probes the safety checker's image processors and warns when torchvision is missing, which
    nothing here uses."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        hf_logging.set_verbosity(level)
    return StableDiffusionPipeline


def tiny_tokenizer():
    """A CLIPTokenizer built from a small character vocabulary, no download.

    transformers 5 gotcha: CLIPTokenizer(vocab_file=..., merges_file=...) silently ignores the
    files there (5.x takes vocab= / merges=); writing the files and calling from_pretrained on
    the folder works in 4.x and 5.x alike. model_max_length=77 is CLIP's context length (the
    pipeline pads every prompt to it); without it the tokenizer reports an "infinite" one.
    """
    from transformers import CLIPTokenizer

    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(_CHARS) + [c + "</w>" for c in _CHARS]
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
        Path(folder, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tok = CLIPTokenizer.from_pretrained(folder, model_max_length=77, pad_token="<|endoftext|>")
    if len(tok) != len(tokens):  # the files were not read: fail loudly rather than tokenize to <unk>
        raise RuntimeError(f"the tiny tokenizer has {len(tok)} tokens, expected {len(tokens)}")
    return tok


def tiny_sd_pipeline(seed: int = 0):
    """A StableDiffusionPipeline with the real architecture in miniature (text encoder, UNet with
    cross-attention, VAE, DDIM scheduler), randomly initialised from configs: it runs in about a
    second on a CPU and produces noise. It exists to walk through the real API offline."""
    integer("seed", seed, 0)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    StableDiffusionPipeline = _sd_pipeline_class()

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = AutoencoderKL(  # 3 blocks: the latent is 1/4 of the image size (SD's is 1/8)
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, sample_size=TINY_SIZE)
    # SD's own schedule; steps_offset=1 as in its configs (DDIM warns and shifts steps without it)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    # No safety checker for a random model: requires_safety_checker=False stops the warning.
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _usable(device: torch.device) -> torch.device:
    """`device`, refused (naming it) when this machine has no such device."""
    missing = ((device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count())
               or (device.type == "mps" and not torch.backends.mps.is_available())
               or device.type not in ("cpu", "cuda", "mps"))
    if missing:
        raise ValueError(f"device {str(device)!r} is not available on this machine")
    return device


def sd_pipeline(model: str | None = None, device=None, allow_download: bool | None = None):
    """The Stable Diffusion pipeline the lab uses, and a line saying which one it is.

    model: a local folder saved with save_pretrained, a hub id, or None for LAB_SD_MODEL (unset:
    the tiny random pipeline). A hub id is fetched only when allow_download is True (default:
    LAB_ALLOW_DOWNLOADS=1) and a CUDA GPU is present; a real model on a CPU takes minutes per image.
    """
    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a folder or hub id (str) or None, got {type(model).__name__}")
    if allow_download is not None and not isinstance(allow_download, bool):
        raise TypeError(f"allow_download must be True, False or None, got {allow_download!r}")
    try:  # whether this machine has the device is checked where a pipeline is moved to it
        device = torch.device(device) if device is not None else config.device()
    except (RuntimeError, TypeError):
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    StableDiffusionPipeline = _sd_pipeline_class()
    model = model if model is not None else os.environ.get("LAB_SD_MODEL", "").strip() or None
    if allow_download is None:
        allow_download = config.allow_downloads()
    if model is None:
        return tiny_sd_pipeline().to(_usable(device)), "tiny random pipeline (produces noise: an API walk-through)"
    if model.startswith("~"):
        model = str(Path(model).expanduser())  # a shell expands ~ only when it starts a word
    if Path(model).is_dir():
        _usable(device)
        pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True)
        return pipe.to(device), f"local checkpoint {model}"
    if Path(model).expanduser().is_absolute() or model.startswith("."):
        raise FileNotFoundError(f"model {model!r} is not a folder (LAB_SD_MODEL names a folder or a hub id)")
    if not allow_download or device.type != "cuda":
        raise ValueError(f"model {model!r} is not a local folder; fetching it from the hub needs "
                         "LAB_ALLOW_DOWNLOADS=1 and a CUDA GPU")
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16)
    pipe.enable_attention_slicing()  # lower peak memory on small GPUs, a little slower
    return pipe.to(device), f"hub checkpoint {model} (fp16)"


def generate_folder(pipe, prompts: dict[str, str], root, *, per_class: int, steps: int = 25,
                    guidance_scale: float = 7.5, seed: int = 0, size: int | None = None,
                    negative_prompt: str | None = None) -> dict[str, list[Path]]:
    """Generate `per_class` images for each class from its prompt into root/<class>/<n>.png, the
    layout data.image_folder reads. Image n of a class uses torch.Generator seeded seed + n, so
    any single image can be regenerated exactly. Returns the files written, per class."""
    if not isinstance(prompts, dict) or not prompts:
        raise ValueError("prompts must be a non-empty dict of class name -> prompt")
    if not callable(pipe) or not hasattr(pipe, "device"):
        raise TypeError(f"pipe must be a diffusers pipeline (see sd_pipeline), got {type(pipe).__name__}")
    root = path("root", root)
    positive_int("per_class", per_class)
    positive_int("steps", steps)
    real("guidance_scale", guidance_scale, 0, math.inf, high_open=True)
    integer("seed", seed, 0)
    if size is not None and positive_int("size", size) % 8:
        raise ValueError(f"size must be a multiple of 8 (the pipeline's latent grid), got {size}")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a str or None, got {type(negative_prompt).__name__}")
    for name, prompt in prompts.items():
        # a class name becomes a folder under root: it must not climb out of it
        if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"prompts: class name {name!r} must be a plain folder name (no '/', no '..')")
        if not isinstance(prompt, str):
            raise TypeError(f"prompts: the prompt for {name!r} must be a str, got {type(prompt).__name__}")
    device = pipe.device
    written = {}
    for name, prompt in prompts.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        gens = [torch.Generator(device=device).manual_seed(seed + n) for n in range(per_class)]
        out = pipe([prompt] * per_class, negative_prompt=[negative_prompt] * per_class if negative_prompt else None,
                   num_inference_steps=steps, guidance_scale=guidance_scale, generator=gens,
                   height=size, width=size)
        written[name] = []
        for n, img in enumerate(out.images):
            png = folder / f"{n:04d}.png"
            tmp = folder / f".tmp-{n:04d}.png"  # a killed run leaves no half image that reads as real
            img.save(tmp, format="PNG")
            os.replace(tmp, png)
            written[name].append(png)
    return written
