"""lablib.diffusion: the DDPM/DDIM steps against hand computation and diffusers, the checkpoint
cache, the quality checks, and the tiny Stable Diffusion pipeline (save/load, seeds, folder)."""

import math

import pytest
import torch

from lablib.core import cache
from lablib.data import datasets
from lablib.methods import diffusion, stable_diffusion


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return diffusion.make_unet(image_size=8, widths=(8, 16), num_classes=3).eval()


@pytest.fixture(scope="module")
def pipe():
    return stable_diffusion.tiny_sd_pipeline(seed=0)


# --- Part A: the steps ---------------------------------------------------------------------


def test_add_noise_matches_hand_computation_and_diffusers():
    x0 = torch.tensor([[[[0.5, -1.0]]], [[[1.0, 0.0]]]])
    noise = torch.tensor([[[[1.0, 2.0]]], [[[-1.0, 0.5]]]])
    alpha_bar = torch.tensor([0.64, 0.25])
    got = diffusion.add_noise(x0, noise, alpha_bar)
    # sqrt(.64)=.8, sqrt(.36)=.6 ; sqrt(.25)=.5, sqrt(.75)
    expected = torch.tensor([[[[0.8 * 0.5 + 0.6, -0.8 + 1.2]]], [[[0.5 - math.sqrt(0.75), 0.5 * math.sqrt(0.75)]]]])
    assert torch.allclose(got, expected, atol=1e-6)
    train_sched, _ = diffusion.make_schedulers()
    x0, noise, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999])
    ours = diffusion.add_noise(x0, noise, train_sched.alphas_cumprod[t])
    assert torch.allclose(ours, train_sched.add_noise(x0, noise, t), atol=1e-5)


def test_add_noise_extremes_and_bad_shapes():
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.allclose(diffusion.add_noise(x0, noise, torch.ones(2)), x0)
    assert torch.allclose(diffusion.add_noise(x0, noise, torch.zeros(2)), noise)
    with pytest.raises(ValueError, match="same shape"):
        diffusion.add_noise(x0, noise[:1], torch.ones(2))


def test_ddpm_loss_is_the_mse_of_the_noise_it_drew(tiny_unet):
    train_sched, _ = diffusion.make_schedulers()
    x0, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0])
    loss = diffusion.ddpm_loss(tiny_unet, x0, y, train_sched, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # redo by hand with the same random draws
    t = torch.randint(0, 1000, (4,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    abar = train_sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        expected = ((tiny_unet(x_t, t, class_labels=y).sample - noise) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.requires_grad
    with pytest.raises(ValueError, match="labels"):
        diffusion.ddpm_loss(tiny_unet, x0, y[:2], train_sched)


def test_ddim_step_matches_diffusers_scheduler():
    _, sampler = diffusion.make_schedulers()
    sampler = type(sampler).from_config(sampler.config, clip_sample=False)  # the hand step does not clip
    sampler.set_timesteps(10)
    x_t, eps = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    t = sampler.timesteps[3]
    prev = t - sampler.config.num_train_timesteps // 10
    expected = sampler.step(eps, t, x_t, eta=0.0).prev_sample
    got = diffusion.ddim_step(x_t, eps, sampler.alphas_cumprod[t], sampler.alphas_cumprod[prev])
    assert torch.allclose(got, expected, atol=1e-5)
    # with the true noise, x_0 is recovered exactly from x_t
    x0 = torch.randn(2, 1, 8, 8)
    assert torch.allclose(diffusion.predict_x0(diffusion.add_noise(x0, eps, torch.tensor(0.3)), eps, 0.3), x0, atol=1e-5)


def test_training_lowers_the_loss_and_sampling_is_seeded(tiny_unet):
    torch.manual_seed(0)
    model = diffusion.make_unet(image_size=8, widths=(8, 16), num_classes=3)
    train_sched, sampler = diffusion.make_schedulers()
    images = torch.zeros(30, 1, 8, 8)
    images[:, :, 2:6, 2:6] = 1.0  # one easy pattern
    labels = torch.arange(30) % 3
    history = diffusion.train_unet(model, images, labels, train_sched, steps=60, batch_size=16, lr=3e-3, progress=False)
    assert history["step"] == [10, 20, 30, 40, 50, 60]  # one History row per 10 steps, from train.fit
    losses = history["train_loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert history["lr"][-1] < 1e-4 * 3e-3 * 100  # the cosine schedule ends near 0
    assert not model.training  # fit leaves the model in eval mode
    a = diffusion.sample(model, [0, 1, 2], sampler, steps=4, seed=1)
    b, path = diffusion.sample(model, [0, 1, 2], sampler, steps=4, seed=1, trajectory=True)
    assert a.shape == (3, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and path.shape == (5, 3, 1, 8, 8) and torch.allclose(path[-1], b)
    assert not torch.equal(a, diffusion.sample(model, [0, 1, 2], sampler, steps=4, seed=2))
    assert torch.equal(a, diffusion.sample(model, [0, 1, 2], sampler, steps=4, seed=1, guidance_scale=1.0))
    assert not torch.allclose(a, diffusion.sample(model, [0, 1, 2], sampler, steps=4, seed=1, guidance_scale=3.0))


def _trained(seed):
    torch.manual_seed(0)  # the same initial weights every time
    model = diffusion.make_unet(image_size=8, widths=(8, 16), num_classes=3)
    history = diffusion.train_unet(model, torch.rand(12, 1, 8, 8), torch.arange(12) % 3, diffusion.make_schedulers()[0],
                                   steps=4, batch_size=4, seed=seed, progress=False, log_every=1)
    return model, history["train_loss"]


def test_training_is_repeatable_for_a_seed():
    torch.manual_seed(123)
    (m1, l1), (m2, l2) = _trained(0), _trained(0)
    torch.manual_seed(456)  # the global RNG plays no part: batches, t and noise have their own seeded generators
    m3, l3 = _trained(1)
    assert l1 == l2 and len(l1) == 4
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=True))
    assert l3 != l1


def test_batches_are_seeded_in_model_range_with_no_class_dropout():
    images = torch.rand(50, 1, 4, 4)
    labels = torch.arange(50) % 5
    first = diffusion.batches(images, labels, batch_size=200, p_uncond=0.25, seed=7, num_classes=5)
    x, y = next(first)
    assert x.shape == (200, 1, 4, 4) and y.shape == (200,) and y.dtype == torch.long
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.5 and x.max() > 0.5  # [0, 1] mapped to [-1, 1]
    dropped = (y == 5).float().mean().item()  # id 5 = "no class"
    assert 0.15 < dropped < 0.35
    kept = y != 5
    rows = torch.stack([(diffusion.to_model_range(images) - xi).abs().flatten(1).sum(1).argmin() for xi in x])
    assert torch.equal(labels[rows][kept], y[kept])  # every kept label belongs to its image
    x2, y2 = next(diffusion.batches(images, labels, batch_size=200, p_uncond=0.25, seed=7, num_classes=5))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = next(first)  # endless: the next batch is a new draw
    assert not torch.equal(x, x3)
    _, y0 = next(diffusion.batches(images, labels, batch_size=64, p_uncond=0.0, seed=0))
    assert y0.max() <= 4  # no dropout: only real classes; num_classes defaults to the largest label + 1


def test_batches_rejects_bad_input():
    images, labels = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match="batch_size"):
        diffusion.batches(images, labels, batch_size=0)
    with pytest.raises(ValueError, match="p_uncond"):
        diffusion.batches(images, labels, p_uncond=1.0)
    with pytest.raises(ValueError, match="images must be"):
        diffusion.batches(images[0], labels)
    with pytest.raises(ValueError, match="labels"):
        diffusion.batches(images, labels[:2])
    with pytest.raises(ValueError, match="class id 2 is unknown"):
        diffusion.batches(images, labels, num_classes=2)
    with pytest.raises(TypeError, match="seed"):
        diffusion.batches(images, labels, seed=1.5)


def test_warmup_cosine_rises_then_decays_to_zero():
    total = 100  # warm-up over the first 5 steps
    factors = [diffusion.warmup_cosine(k, total) for k in range(total + 1)]
    assert factors[0] == pytest.approx(0.2)
    assert factors[0] < factors[1] < factors[2] < factors[4]
    assert factors[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 100)))
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[total] == pytest.approx(0.0, abs=1e-12)
    assert diffusion.warmup_cosine(0, 1) == pytest.approx(1.0)


def test_guidance_combines_the_two_noise_estimates(tiny_unet):
    """One DDIM step with guidance w equals the step taken with eps_none + w (eps_class - eps_none)."""
    _, sampler = diffusion.make_schedulers()
    y = torch.tensor([1, 2])
    got = diffusion.sample(tiny_unet, y, sampler, steps=1, seed=4, guidance_scale=2.5)
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    sampler.set_timesteps(1)
    t = sampler.timesteps[0]
    with torch.no_grad():
        cond = tiny_unet(x, t, class_labels=y).sample
        uncond = tiny_unet(x, t, class_labels=torch.full_like(y, 3)).sample  # 3 classes: id 3 = "no class"
    expected = sampler.step(uncond + 2.5 * (cond - uncond), t, x, eta=0.0).prev_sample
    assert torch.allclose(got, diffusion.to_image_range(expected), atol=1e-5)
    assert diffusion.num_classes(tiny_unet) == 3 and tiny_unet.config.num_class_embeds == 4


def test_sample_rejects_bad_input(tiny_unet):
    _, sampler = diffusion.make_schedulers()
    with pytest.raises(ValueError, match="class id 7 is unknown"):
        diffusion.sample(tiny_unet, [0, 7], sampler, steps=2)
    with pytest.raises(ValueError, match="class id -1"):
        diffusion.sample(tiny_unet, [-1], sampler, steps=2)
    with pytest.raises(ValueError, match="class id 3 is unknown"):  # the "no class" id is not a class
        diffusion.sample(tiny_unet, [3], sampler, steps=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        diffusion.sample(tiny_unet, [0], sampler, steps=2, guidance_scale=0.5)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps"):
            diffusion.sample(tiny_unet, [0], sampler, steps=bad)
    with pytest.raises(ValueError, match="steps"):
        diffusion.train_unet(tiny_unet, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),
                             diffusion.make_schedulers()[0], steps=0)
    with pytest.raises(ValueError, match="labels"):
        diffusion.train_unet(tiny_unet, torch.rand(4, 1, 8, 8), torch.full((4,), 5),
                             diffusion.make_schedulers()[0], steps=1)
    with pytest.raises(ValueError, match="p_uncond"):
        diffusion.train_unet(tiny_unet, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),
                             diffusion.make_schedulers()[0], steps=1, p_uncond=1.0)
    with pytest.raises(ValueError, match="image_size"):
        diffusion.make_unet(image_size=10, widths=(8, 16, 16))


# --- quality checks -----------------------------------------------------------------------


def test_nearest_distance_and_diversity():
    ref = torch.zeros(3, 1, 2, 2)
    ref[1] += 1.0
    images = torch.stack([ref[1], ref[0] + 0.5])
    assert torch.allclose(diffusion.nearest_distance(images, ref), torch.tensor([0.0, 1.0]))  # sqrt(4 * .25)
    x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)])
    div = diffusion.diversity(x, torch.tensor([0, 0, 1, 2]), num_classes=4)
    assert div[0].item() == pytest.approx(2.0)  # |1 - 0| over 4 pixels -> distance 2
    assert div[1].isnan() and div[3].isnan()
    with pytest.raises(ValueError, match="reference"):
        diffusion.nearest_distance(images, torch.zeros(3, 1, 4, 4))


# --- checkpoint cache --------------------------------------------------------------------


def test_cache_folder_is_keyed_by_settings(_isolated):
    a = cache.cache_folder("gen", {"steps": 10, "data": "abc"})
    assert a == cache.cache_folder("gen", {"data": "abc", "steps": 10})
    assert a != cache.cache_folder("gen", {"steps": 11, "data": "abc"})
    assert str(a).startswith(str(_isolated / "data"))
    assert cache.fingerprint(torch.ones(3)) != cache.fingerprint(torch.zeros(3))
    with pytest.raises(TypeError, match="settings"):
        cache.cache_folder("gen", [1, 2])


def test_unet_round_trips_through_save_pretrained(tiny_unet, _isolated):
    folder = cache.cache_folder("gen", {"x": 1})
    assert not diffusion.has_checkpoint(folder)
    diffusion.save_unet(tiny_unet, folder, extra={"losses": [1.0, 0.5]})
    assert diffusion.has_checkpoint(folder)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    loaded, extra = diffusion.load_unet(folder)
    assert extra == {"losses": [1.0, 0.5]}
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([5, 500]), torch.tensor([0, 2])
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, class_labels=y).sample, tiny_unet(x, t, class_labels=y).sample)


def test_checkpoint_without_the_completion_marker_is_not_trusted(tiny_unet, _isolated):
    folder = cache.cache_folder("gen", {"x": 2})
    diffusion.save_unet(tiny_unet, folder)
    (folder / ".complete").unlink()  # as if the save had been killed before it finished
    assert not diffusion.has_checkpoint(folder)
    with pytest.raises(FileNotFoundError):
        diffusion.load_unet(folder)
    tiny_unet.save_pretrained(_isolated / "plain")  # the files alone, not written by save_unet
    assert not diffusion.has_checkpoint(_isolated / "plain")


def test_damaged_checkpoint_is_not_trusted_and_is_rebuilt(tiny_unet, _isolated):
    folder = cache.cache_folder("gen", {"x": 3})
    diffusion.save_unet(tiny_unet, folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated after the save, e.g. a full disk
    assert not diffusion.has_checkpoint(folder)
    diffusion.save_unet(tiny_unet, folder)  # what the lab does when has_checkpoint says no
    assert diffusion.has_checkpoint(folder) and weights.read_bytes() == data
    flipped = bytearray(data)
    flipped[-1] ^= 1  # same size, one bit changed: the hash notices
    weights.write_bytes(bytes(flipped))
    assert not diffusion.has_checkpoint(folder)


def test_load_unet_missing_folder_is_a_clear_error(_isolated):
    with pytest.raises(FileNotFoundError, match="holds no saved UNet"):
        diffusion.load_unet(_isolated / "nowhere")


# --- Part B: the tiny Stable Diffusion pipeline --------------------------------------------


def test_tiny_tokenizer_reads_its_vocabulary():
    tok = stable_diffusion.tiny_tokenizer()
    assert tok.model_max_length == 77
    ids = tok("x-ray of a lung", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id
    assert tok.unk_token_id not in ids[1:10]  # every character is in the vocabulary


def _image(p, seed, prompt="a photo of a digit 3"):
    return p(prompt, num_inference_steps=2, guidance_scale=7.5, height=32, width=32,
             generator=torch.Generator().manual_seed(seed), output_type="pt").images


def test_tiny_pipeline_is_seeded_and_round_trips(pipe, tmp_path):
    from diffusers import StableDiffusionPipeline

    first = _image(pipe, 0)
    assert first.shape == (1, 3, 32, 32)
    assert torch.equal(first, _image(pipe, 0))
    assert not torch.equal(first, _image(pipe, 1))
    assert pipe.scheduler.config.steps_offset == 1
    pipe.save_pretrained(tmp_path / "tiny")
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "tiny", local_files_only=True)
    assert loaded.safety_checker is None and loaded.tokenizer.model_max_length == 77
    assert torch.allclose(_image(loaded, 0), first, atol=1e-5)


def test_sd_pipeline_choices(tmp_path, monkeypatch, pipe):
    monkeypatch.delenv("LAB_SD_MODEL", raising=False)
    tiny, what = stable_diffusion.sd_pipeline(device="cpu")
    assert "tiny" in what
    pipe.save_pretrained(tmp_path / "sd")
    monkeypatch.setenv("LAB_SD_MODEL", str(tmp_path / "sd"))
    local, what = stable_diffusion.sd_pipeline(device="cpu")
    assert "local checkpoint" in what and torch.allclose(_image(local, 0), _image(pipe, 0), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        stable_diffusion.sd_pipeline(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS"):
        stable_diffusion.sd_pipeline("stabilityai/stable-diffusion-2-1", device="cpu", allow_download=False)
    monkeypatch.setenv("LAB_ALLOW_DOWNLOADS", "yes")
    with pytest.raises(ValueError, match="LAB_ALLOW_DOWNLOADS='yes'"):
        stable_diffusion.sd_pipeline("stabilityai/stable-diffusion-2-1", device="cpu")
    with pytest.raises(TypeError, match="allow_download"):
        stable_diffusion.sd_pipeline("x/y", device="cpu", allow_download="no")


def test_sd_pipeline_expands_the_home_folder(tmp_path, monkeypatch, pipe):
    monkeypatch.setenv("HOME", str(tmp_path))
    pipe.save_pretrained(tmp_path / "models" / "sd")
    monkeypatch.setenv("LAB_SD_MODEL", "~/models/sd")  # quoted in a shell, ~ reaches us as it is
    _, what = stable_diffusion.sd_pipeline(device="cpu")
    assert what == f"local checkpoint {tmp_path / 'models' / 'sd'}"
    monkeypatch.setenv("LAB_SD_MODEL", "~/models/missing")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "models" / "missing")):
        stable_diffusion.sd_pipeline(device="cpu")


def test_generate_folder_writes_a_loadable_image_folder(pipe, tmp_path):
    files = stable_diffusion.generate_folder(pipe, {"healthy": "x-ray image of healthy lung", "sick": "x-ray of pneumonia"},
                                      tmp_path / "synth", per_class=2, steps=2, size=32)
    assert [len(v) for v in files.values()] == [2, 2]
    ds = datasets.image_folder(tmp_path / "synth", size=16)
    assert ds.classes == ["healthy", "sick"] and ds.counts() == [2, 2]
    again = stable_diffusion.generate_folder(pipe, {"healthy": "x-ray image of healthy lung"}, tmp_path / "again",
                                      per_class=2, steps=2, size=32)
    assert again["healthy"][1].read_bytes() == files["healthy"][1].read_bytes()  # seeded per image
    with pytest.raises(ValueError, match="per_class"):
        stable_diffusion.generate_folder(pipe, {"a": "b"}, tmp_path, per_class=0)
    with pytest.raises(ValueError, match="prompts"):
        stable_diffusion.generate_folder(pipe, {}, tmp_path, per_class=1)
    for name in ("../escape", "a/b", "..", ".hidden", ""):  # a class name never climbs out of root
        with pytest.raises(ValueError, match="plain folder name"):
            stable_diffusion.generate_folder(pipe, {name: "x"}, tmp_path / "root", per_class=1, steps=1)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "root").exists()


# --- bad input: a clear error naming the argument ---------------------------------------------


def _bad_diffusion_calls(unet):
    train_sched, sampler = diffusion.make_schedulers()
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    imgs, two = torch.rand(6, 1, 8, 8), torch.arange(6) % 2
    return [
        (lambda: diffusion.make_unet(image_size=8, widths=(8, 12)), ValueError, "widths"),
        (lambda: diffusion.make_unet(image_size=8, widths=(0, 8)), ValueError, "widths"),
        (lambda: diffusion.make_unet(image_size=8, widths=(8,)), ValueError, "widths"),
        (lambda: diffusion.make_schedulers(beta_schedule="cosine"), ValueError, "beta_schedule"),
        (lambda: diffusion.num_classes(torch.nn.Linear(2, 2)), TypeError, "model"),
        (lambda: diffusion.to_model_range(None), TypeError, "images"),
        (lambda: diffusion.to_model_range([0.0, 1.0]), TypeError, "images"),
        (lambda: diffusion.to_model_range(torch.arange(4, dtype=torch.uint8)), TypeError, "images"),
        (lambda: diffusion.to_model_range(imgs * 255), ValueError, "images"),
        (lambda: diffusion.to_image_range(None), TypeError, "x"),
        (lambda: diffusion.add_noise(None, x, 0.5), TypeError, "x0"),
        (lambda: diffusion.add_noise(imgs, torch.randn(6, 1, 8, 8), torch.rand(3)), ValueError, "alpha_bar"),
        (lambda: diffusion.add_noise(x, eps, torch.tensor([1.5, 0.5])), ValueError, "alpha_bar"),
        (lambda: diffusion.add_noise(x, eps, -0.5), ValueError, "alpha_bar"),
        (lambda: diffusion.add_noise(x, eps, float("nan")), ValueError, "alpha_bar"),
        (lambda: diffusion.add_noise(x, eps, None), TypeError, "alpha_bar"),
        (lambda: diffusion.ddpm_loss(unet, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), train_sched),
         ValueError, "x0"),
        (lambda: diffusion.ddpm_loss(unet, torch.rand(2, 1, 8, 8), torch.tensor([5, 0]), train_sched),
         ValueError, "labels"),
        (lambda: diffusion.ddpm_loss(unet, torch.rand(2, 1, 8, 8), torch.tensor([0.5, 0.0]), train_sched),
         TypeError, "labels"),
        (lambda: diffusion.ddpm_loss(unet, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), None), TypeError, "scheduler"),
        (lambda: diffusion.batches(None, two), TypeError, "images"),
        (lambda: diffusion.batches(imgs, two.float() + 0.5), TypeError, "labels"),
        (lambda: diffusion.batches(imgs * 255, two), ValueError, "images"),
        (lambda: diffusion.batches(imgs, two, seed=-1), ValueError, "seed"),
        (lambda: diffusion.warmup_cosine(1, 0), ValueError, "total"),
        (lambda: diffusion.warmup_cosine(1, -1), ValueError, "total"),
        (lambda: diffusion.warmup_cosine(1, "10"), ValueError, "total"),
        (lambda: diffusion.warmup_cosine(-1, 10), ValueError, "k"),
        (lambda: diffusion.warmup_cosine(11, 10), ValueError, "k"),
        (lambda: diffusion.train_unet(unet, imgs, two, None, steps=1), TypeError, "scheduler"),
        (lambda: diffusion.sample(unet, [0.5], sampler, steps=1), TypeError, "labels"),
        (lambda: diffusion.sample(unet, None, sampler, steps=1), TypeError, "labels"),
        (lambda: diffusion.sample(unet, [0], sampler, steps=1, seed=-1), ValueError, "seed"),
        (lambda: diffusion.sample(unet, [0], None, steps=1), TypeError, "scheduler"),
        (lambda: diffusion.sample(unet, [0], train_sched, steps=1), TypeError, "DDIMScheduler"),
        (lambda: diffusion.predict_x0(x, eps, 0.0), ValueError, "alpha_bar"),
        (lambda: diffusion.predict_x0(x, eps, 1.5), ValueError, "alpha_bar"),
        (lambda: diffusion.predict_x0(x, eps, "0.5"), TypeError, "alpha_bar"),
        (lambda: diffusion.predict_x0(x, eps, torch.rand(3) + 0.1), ValueError, "alpha_bar"),
        (lambda: diffusion.predict_x0(x, torch.randn(3, 1, 4, 4), 0.5), ValueError, "noise_pred"),
        (lambda: diffusion.ddim_step(x, eps, 0.0, 0.6), ValueError, "alpha_bar_t"),
        (lambda: diffusion.ddim_step(x, eps, 1.5, 0.6), ValueError, "alpha_bar_t"),
        (lambda: diffusion.ddim_step(x, eps, 0.5, 1.5), ValueError, "alpha_bar_prev"),
        (lambda: diffusion.ddim_step(x, eps, 0.5, -1.0), ValueError, "alpha_bar_prev"),
        (lambda: diffusion.nearest_distance(imgs, imgs[:0]), ValueError, "reference"),
        (lambda: diffusion.nearest_distance(None, imgs), TypeError, "images"),
        (lambda: diffusion.diversity(imgs, two + 2, 2), ValueError, "labels"),
        (lambda: diffusion.diversity(imgs, two.float(), 2), TypeError, "labels"),
        (lambda: diffusion.diversity(imgs, two, 0), ValueError, "num_classes"),
        (lambda: diffusion.diversity(imgs, two, -1), ValueError, "num_classes"),
        (lambda: diffusion.diversity(imgs, two, "2"), ValueError, "num_classes"),
        (lambda: diffusion.save_unet(torch.nn.Linear(2, 2), "ck"), TypeError, "model"),
        (lambda: diffusion.save_unet(unet, None), TypeError, "folder"),
        (lambda: diffusion.save_unet(unet, "ck", extra={"t": torch.tensor(1.0)}), TypeError, "extra"),
        (lambda: diffusion.save_unet(unet, "ck", extra=[1, 2]), TypeError, "extra"),
        (lambda: diffusion.has_checkpoint(None), TypeError, "folder"),
        (lambda: diffusion.load_unet(None), TypeError, "folder"),
    ]


def test_bad_input_is_a_clear_error_naming_the_argument(tiny_unet, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # save_unet("ck") must refuse before it writes anything
    for i, (call, error, name) in enumerate(_bad_diffusion_calls(tiny_unet)):
        with pytest.raises(error, match=name):
            call()
        assert not any((tmp_path / "cwd").iterdir()), f"case {i} wrote a file"


def test_edge_inputs_that_stay_valid(tiny_unet):
    x0, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.allclose(diffusion.add_noise(x0, noise, 0.0), noise)  # a number for the whole batch
    assert torch.allclose(diffusion.add_noise(x0, noise, [1.0, 1.0]), x0)  # a list, one per image
    assert torch.allclose(diffusion.predict_x0(x0, noise, 1.0), x0)  # ᾱ = 1: nothing to remove
    assert torch.allclose(diffusion.ddim_step(x0, noise, 0.5, 0.0), noise)  # ᾱ_prev = 0: all noise
    abar = torch.tensor([0.3, 0.6]).reshape(2, 1, 1, 1)  # one ᾱ per image, shaped to broadcast
    assert torch.allclose(diffusion.predict_x0(diffusion.add_noise(x0, noise, abar.flatten()), noise, abar), x0, atol=1e-5)
    assert diffusion.diversity(torch.rand(0, 1, 2, 2), torch.zeros(0, dtype=torch.long), 2).isnan().all()
    assert diffusion.sample(tiny_unet, torch.tensor([0, 2], dtype=torch.int32), diffusion.make_schedulers()[1],
                            steps=1).shape == (2, 1, 8, 8)


def test_sd_bad_input_is_a_clear_error_naming_the_argument(pipe, tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_SD_MODEL", raising=False)
    def gen(**kw):
        args = {"pipe": pipe, "prompts": {"cat": "a cat"}, "root": tmp_path / "gen", "per_class": 1, "steps": 1,
                "size": 16} | kw
        return stable_diffusion.generate_folder(**args)

    for call, error, name in [
        (lambda: stable_diffusion.tiny_sd_pipeline(seed="0"), TypeError, "seed"),
        (lambda: stable_diffusion.tiny_sd_pipeline(seed=1.5), TypeError, "seed"),
        (lambda: stable_diffusion.sd_pipeline(device="gpu", allow_download=False), ValueError, "device"),
        (lambda: stable_diffusion.sd_pipeline(device=5, allow_download=False), ValueError, "device"),
        (lambda: gen(size=7), ValueError, "size"),
        (lambda: gen(size=0), ValueError, "size"),
        (lambda: gen(seed="0"), TypeError, "seed"),
        (lambda: gen(root=None), TypeError, "root"),
        (lambda: gen(pipe=None), TypeError, "pipe"),
        (lambda: gen(negative_prompt=123), TypeError, "negative_prompt"),
    ]:
        with pytest.raises(error, match=name):
            call()
    assert not (tmp_path / "gen").exists()
