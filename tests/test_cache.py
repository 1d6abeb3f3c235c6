import pytest
import torch

from lablib.core import cache


@pytest.fixture
def where(tmp_path):
    """An empty folder of its own (tmp_path also holds the isolated project's labs/)."""
    folder = tmp_path / "w"
    folder.mkdir()
    return folder


def test_write_atomic_replaces_and_cleans_leftovers(where):
    target = where / "out" / "x.json"
    cache.write_atomic(target, "old")
    (target.parent / ".tmp-x.json.abc123").write_text("half a file from a killed write")
    cache.write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_write_atomic_keeps_the_old_file_when_the_rename_fails(where, monkeypatch):
    target = where / "x.json"
    cache.write_atomic(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in where.iterdir()] == ["x.json"]  # the temporary file was removed


def test_write_atomic_rejects_non_text(where):
    with pytest.raises(TypeError, match="text must be a str"):
        cache.write_atomic(where / "x", 3)


def _writer(text):
    def write(folder):
        (folder / "weights.txt").write_text(text)
    return write


def test_write_folder_replaces_only_its_own_folders(where):
    folder = where / "ckpt"
    cache.write_folder(folder, _writer("v1"))
    assert cache.is_complete(folder) and (folder / "weights.txt").read_text() == "v1"
    cache.write_folder(folder, _writer("v2"))
    assert (folder / "weights.txt").read_text() == "v2"
    assert sorted(p.name for p in where.iterdir()) == ["ckpt"]
    mine = where / "my_data"
    mine.mkdir()
    (mine / "precious.csv").write_text("1,2,3")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        cache.write_folder(mine, _writer("x"))
    assert (mine / "precious.csv").read_text() == "1,2,3"


def test_a_failed_folder_write_leaves_nothing_and_keeps_the_old(where):
    folder = where / "ckpt"
    cache.write_folder(folder, _writer("v1"))

    def crash(tmp):
        (tmp / "weights.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.write_folder(folder, crash)
    assert (folder / "weights.txt").read_text() == "v1"
    assert sorted(p.name for p in where.iterdir()) == ["ckpt"]


def test_cache_folder_is_keyed_by_settings_and_stays_in_data(_isolated):
    a = cache.cache_folder("gen", {"steps": 10, "data": "abc"})
    assert a == cache.cache_folder("gen", {"data": "abc", "steps": 10})
    assert a != cache.cache_folder("gen", {"steps": 11, "data": "abc"})
    assert a.parent == _isolated / "data" / "cache"
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="plain folder name"):
            cache.cache_folder(bad, {})
    assert cache.fingerprint(torch.ones(3)) != cache.fingerprint(torch.zeros(3))
    with pytest.raises(TypeError, match="tensors"):
        cache.fingerprint([1, 2])


def test_write_atomic_makes_an_ordinary_file(where):
    import os
    import stat

    target = cache.write_atomic(where / "x.json", "{}")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_current_umask() and os.access(target, os.R_OK)


def _current_umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("call, word", [
    (lambda w: cache.write_atomic(None, "x"), "path"),
    (lambda w: cache.write_folder(w / "f", None), "write"),
    (lambda w: cache.write_folder(w / "f", 123), "write"),
    (lambda w: cache.write_folder(None, lambda tmp: None), "folder"),
    (lambda w: cache.is_complete(None), "folder"),
    (lambda w: cache.is_complete(123), "folder"),
    (lambda w: cache.cache_folder("p", {1: 2, "1": 3}), "settings"),
])
def test_bad_arguments_are_named(where, call, word):
    with pytest.raises(TypeError, match=word):
        call(where)
    assert not (where / "f").exists()


def test_fingerprint_reads_any_dtype_and_needs_a_tensor():
    with pytest.raises(ValueError, match="tensors"):
        cache.fingerprint()
    x = torch.rand(3)
    assert cache.fingerprint(x.bfloat16()) != cache.fingerprint((x + 1).bfloat16())
    assert cache.fingerprint(x.bfloat16()) == cache.fingerprint(x.bfloat16().clone())
    # keys already on disk stay valid: a float tensor hashes as its raw bytes did before
    import hashlib
    assert cache.fingerprint(x) == hashlib.sha256(x.numpy().tobytes()).hexdigest()[:12]


def test_cache_key_sees_every_element_of_a_big_tensor(_isolated):
    import numpy as np

    data = torch.arange(5000)
    other = data.clone()
    other[2500] = -1  # str() of a 5000-element tensor elides the middle
    assert cache.cache_folder("p", {"data": data}) != cache.cache_folder("p", {"data": other})
    assert cache.cache_folder("p", {"data": data.numpy()}) != cache.cache_folder("p", {"data": other.numpy()})
    assert cache.cache_folder("p", {"data": data}) == cache.cache_folder("p", {"data": data.clone()})
    assert cache.cache_folder("p", {"data": np.arange(5)[::-1]}).name.startswith("p-")
    # settings without tensors keep the key they always had
    assert cache.cache_folder("p", {"a": 1, "w": [32, 64]}).name == "p-e913e6a1a7ad"


def test_a_folder_changed_after_its_write_is_not_complete(where):
    folder = cache.write_folder(where / "entry", lambda tmp: (tmp / "weights.bin").write_bytes(b"x" * 100))
    assert cache.is_complete(folder)
    (folder / "weights.bin").write_bytes(b"x" * 50)  # truncated later: the manifest notices
    assert not cache.is_complete(folder)
    (folder / "weights.bin").write_bytes(b"y" * 100)  # same size, other bytes: the hash notices
    assert not cache.is_complete(folder)
    (folder / "weights.bin").write_bytes(b"x" * 100)
    (folder / "extra.txt").write_text("added later")  # a file the write never made
    assert not cache.is_complete(folder)
    (folder / ".complete").write_text("[]")  # a marker that is not a manifest
    assert not cache.is_complete(folder)


def test_write_folder_takes_an_empty_folder_but_never_a_file(where):
    (where / "empty").mkdir()
    assert cache.is_complete(cache.write_folder(where / "empty", lambda tmp: (tmp / "a").write_text("a")))
    (where / "plain.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="plain.txt"):
        cache.write_folder(where / "plain.txt", lambda tmp: (tmp / "a").write_text("a"))
    assert (where / "plain.txt").read_text() == "mine"


def _trainer(calls, value=1.0):
    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(value)
        return {"seconds": 0.5, "curve": [1, 2]}
    return train


def test_load_or_train_trains_once_then_loads(_isolated):
    calls = []
    loaded, facts = cache.load_or_train("stage", {"epochs": 2}, torch.nn.Linear(3, 2), _trainer(calls))
    assert (loaded, facts, len(calls)) == (False, {"seconds": 0.5, "curve": [1, 2]}, 1)
    model = torch.nn.Linear(3, 2)
    loaded, facts = cache.load_or_train("stage", {"epochs": 2}, model, _trainer(calls, 9.0))
    assert loaded and facts["curve"] == [1, 2] and len(calls) == 1
    assert torch.equal(model.weight, torch.ones(2, 3))  # the saved weights, not the new trainer's
    loaded, _ = cache.load_or_train("stage", {"epochs": 3}, torch.nn.Linear(3, 2), _trainer(calls))
    assert not loaded and len(calls) == 2  # another setting: another key, trained afresh


def test_load_or_train_retrains_a_damaged_or_misfitting_cache(_isolated):
    calls = []
    cache.load_or_train("stage", {}, torch.nn.Linear(3, 2), _trainer(calls))
    folder = cache.cache_folder("stage", {})
    (folder / "weights.pt").write_bytes(b"truncated")
    loaded, _ = cache.load_or_train("stage", {}, torch.nn.Linear(3, 2), _trainer(calls))
    assert not loaded and len(calls) == 2 and cache.is_complete(folder)
    loaded, _ = cache.load_or_train("stage", {}, torch.nn.Linear(4, 2), _trainer(calls))  # another architecture
    assert not loaded and len(calls) == 3
    loaded, _ = cache.load_or_train("stage", {}, torch.nn.Linear(4, 2), _trainer(calls))
    assert loaded and len(calls) == 3


def test_load_or_train_names_bad_arguments(_isolated):
    with pytest.raises(TypeError, match="model"):
        cache.load_or_train("s", {}, "not a model", lambda m: {})
    with pytest.raises(TypeError, match="train"):
        cache.load_or_train("s", {}, torch.nn.Linear(1, 1), None)
    with pytest.raises(TypeError, match="must return a dict"):
        cache.load_or_train("s", {}, torch.nn.Linear(1, 1), lambda m: [1])
    with pytest.raises(TypeError):  # facts that JSON cannot hold: nothing is written
        cache.load_or_train("s", {}, torch.nn.Linear(1, 1), lambda m: {"t": torch.ones(1)})
    assert not cache.cache_folder("s", {}).exists()
    with pytest.raises(ValueError, match="plain folder name"):
        cache.load_or_train("../x", {}, torch.nn.Linear(1, 1), lambda m: {})


def test_load_or_train_never_half_loads_a_misfitting_checkpoint(_isolated):
    # the cached net's first layer fits the new net, its second does not: torch copies the first
    # before it raises; the new net must reach its trainer with its own initial weights
    def net(out):
        torch.manual_seed(out)
        return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, out))

    cache.load_or_train("stage", {}, net(2), lambda m: {})
    fresh = net(3)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    seen = {}
    loaded, _ = cache.load_or_train("stage", {}, fresh, lambda m: seen.update(m.state_dict()) or {})
    assert not loaded
    assert all(torch.equal(seen[k], initial[k]) for k in initial)
