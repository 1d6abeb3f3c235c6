"""Kill a cache write with SIGKILL, 20 times at random moments: whatever is on disk afterwards
is either the old entry, the new one, or nothing a reader trusts, never half of one; and the
next write removes the temporaries the killed ones left behind."""

import multiprocessing
import os
import random
import signal
import time

import pytest
import torch

from lablib.core import cache
from lablib.methods import diffusion

KILLS = 20
fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")


def kill_while_writing(write_forever, rng: random.Random, window_s: float) -> None:
    """Fork a child that writes in a loop (the imports are already done, so it starts at once)
    and SIGKILL it after a random delay: no finally block, no atexit, as with a power cut."""
    child = multiprocessing.get_context("fork").Process(target=write_forever, daemon=True)
    child.start()
    time.sleep(rng.uniform(0.0, window_s))
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL, "the child finished before it was killed"


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@fork
def test_write_atomic_survives_kills(tmp_path):
    path = tmp_path / "data" / "record.json"
    versions = ["a" * 4_000_000, "b" * 4_000_000]  # big enough that a kill often lands mid-write

    def write_forever():
        while True:
            for text in versions:
                cache.write_atomic(path, text)

    rng, seen, orphans = random.Random(0), set(), 0
    for _ in range(KILLS):
        kill_while_writing(write_forever, rng, 0.3)
        if path.exists():
            text = path.read_text()
            assert text in versions, f"a reader saw a half-written file ({len(text)} characters)"
            seen.add(text[0])
        orphans = max(orphans, len(leftovers(path.parent)))
    assert orphans > 0, "no kill landed during a write: the test proved nothing"
    cache.write_atomic(path, "done")
    assert path.read_text() == "done" and leftovers(path.parent) == []


@fork
def test_checkpoint_save_survives_kills(tmp_path):
    torch.manual_seed(0)
    unets = [diffusion.make_unet(image_size=8, widths=(8, 16), num_classes=3) for _ in range(2)]
    first_weights = [next(u.parameters()).detach().clone() for u in unets]
    folder = tmp_path / "data" / "cache" / "unet"

    def write_forever():
        while True:
            for u in unets:
                diffusion.save_unet(u, folder)

    rng, trusted, orphans = random.Random(1), 0, 0
    for _ in range(KILLS):
        kill_while_writing(write_forever, rng, 0.5)
        if diffusion.has_checkpoint(folder):  # what a lab checks before it loads
            loaded, _ = diffusion.load_unet(folder)
            w = next(loaded.parameters())
            assert any(torch.equal(w, f) for f in first_weights), "a checkpoint mixing two saves loaded"
            trusted += 1
        orphans = max(orphans, len(leftovers(folder.parent)))
    assert orphans > 0, "no kill landed during a save: the test proved nothing"
    assert trusted > 0, "no save ever completed between kills: widen the window"
    diffusion.save_unet(unets[0], folder)
    assert diffusion.has_checkpoint(folder) and leftovers(folder.parent) == []
