"""lablib.data.versioning: git and DVC run as isolated subprocesses in a sandbox under data/."""

import hashlib
import importlib.util
import shutil

import pytest

from lablib.core import config
from lablib.data import versioning

needs_tools = pytest.mark.skipif(shutil.which("git") is None or importlib.util.find_spec("dvc") is None,
                                 reason="git and dvc are needed")


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """HOME and TMPDIR of this process pointed at empty folders, to prove nothing lands there."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-this-repo"))  # the caller's git variables must not leak in
    return home, tmp


def test_clean_output_keeps_the_final_state_of_each_line():
    text = "\x1b[32mgreen\x1b[0m\n10%\r50%\r100% done\n\n\u280b Checking graph\nlast\n"
    assert versioning.clean_output(text) == "green\n100% done\nlast"
    with pytest.raises(TypeError, match="text"):
        versioning.clean_output(b"bytes")


def test_md5_and_the_recorded_md5(tmp_path):
    f = tmp_path / "a.csv"
    f.write_bytes(b"x,y\n1,2\n")
    assert versioning.md5(f) == hashlib.md5(b"x,y\n1,2\n").hexdigest()
    dvc = tmp_path / "a.csv.dvc"
    dvc.write_text(f"outs:\n- md5: {versioning.md5(f)}\n  size: 8\n  hash: md5\n  path: a.csv\n")
    assert versioning.recorded_md5(dvc) == versioning.md5(f)
    with pytest.raises(ValueError, match="path"):
        versioning.md5(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="path"):
        versioning.md5(None)
    with pytest.raises(ValueError, match="dvc_file"):
        versioning.recorded_md5(f)  # not a .dvc file
    bad = tmp_path / "b.dvc"
    bad.write_text("outs: [")
    with pytest.raises(ValueError, match="dvc_file"):
        versioning.recorded_md5(bad)
    bad.write_text("outs:\n- md5: nothex\n")
    with pytest.raises(ValueError, match="dvc_file"):
        versioning.recorded_md5(bad)


def test_the_sandbox_must_be_inside_data(tmp_path):
    data = config.data_dir()
    for outside in (tmp_path / "elsewhere", data, data / ".." / "labs", "/tmp/dvc-lab"):
        with pytest.raises(ValueError, match="folder"):
            versioning.Sandbox(outside)
    with pytest.raises(TypeError, match="folder"):
        versioning.Sandbox(None)
    with pytest.raises(ValueError, match="timeout"):
        versioning.Sandbox(data / "box", timeout=0)
    with pytest.raises(TypeError, match="fresh"):
        versioning.Sandbox(data / "box", fresh="yes")


def test_a_fresh_sandbox_is_wiped_and_its_environment_points_inside(empty_home):
    box = versioning.Sandbox(config.data_dir() / "box")
    (box.repo / "old.txt").write_text("x")
    box = versioning.Sandbox(config.data_dir() / "box")
    assert not (box.repo / "old.txt").exists()
    env = box.environment()
    for key in ("HOME", "TMPDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "GIT_CONFIG_GLOBAL", "DVC_SITE_CACHE_DIR",
                "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        assert env[key].startswith(str(box.root)), key
    assert env["DVC_NO_ANALYTICS"] == "1" and env["GIT_CONFIG_NOSYSTEM"] == "1" and "GIT_DIR" not in env
    assert "check_update = false" in box.dvc_global_config.read_text()


def test_run_refuses_bad_commands():
    box = versioning.Sandbox(config.data_dir() / "box")
    with pytest.raises(ValueError, match="words"):
        box.run("rm", "-rf", "/")
    with pytest.raises(TypeError, match="words"):
        box.run()
    with pytest.raises(TypeError, match="ok"):
        box.run("git", "status", ok="0")
    with pytest.raises(ValueError, match="timeout"):
        box.run("git", "status", timeout=-1)
    with pytest.raises(ValueError, match="relative"):
        box.write("../outside.txt", "x")
    with pytest.raises(ValueError, match="source"):
        box.copy_in(config.data_dir() / "nope.txt")


@needs_tools
def test_a_failing_command_names_itself_and_quotes_its_output():
    box = versioning.Sandbox(config.data_dir() / "box")
    with pytest.raises(versioning.CommandFailed, match=r"`git checkout no-such-branch` failed .*\n.*not a git repository"):
        box.run("git", "checkout", "no-such-branch")
    assert box.run("git", "checkout", "no-such-branch", ok=(128,)).code == 128


@needs_tools
def test_a_command_past_its_timeout_is_stopped():
    box = versioning.Sandbox(config.data_dir() / "box")
    with pytest.raises(versioning.CommandFailed, match="time-out"):
        box.run("dvc", "--version", timeout=0.01)


@needs_tools
def test_dvc_round_trip_offline_leaving_home_and_tmp_empty(empty_home, capsys):
    """The lab's sequence: init, add, push without a remote (fails), a folder remote, push, a
    second version, checkout of the first verified by hash; HOME and TMPDIR stay empty."""
    home, tmp = empty_home
    box = versioning.Sandbox(config.data_dir() / "dvc-test", timeout=120)
    box.run("git", "init")
    box.run("dvc", "init")
    box.run("git", "commit", "-m", "init")
    box.write("data/train.csv", "a,b\n1,2\n")
    box.show("dvc", "add", "data/train.csv")
    assert "$ dvc add data/train.csv" in capsys.readouterr().out
    box.run("git", "add", "data/train.csv.dvc", "data/.gitignore")
    box.run("git", "commit", "-m", "v1")
    v1 = box.run("git", "rev-parse", "HEAD").output.strip()
    failed = box.run("dvc", "push", ok=(1,))
    assert "no remote" in failed.output
    box.run("dvc", "remote", "add", "-d", "local", str(box.remote))
    assert "1 file pushed" in box.run("dvc", "push").output
    first = versioning.md5(box.path("data/train.csv"))
    box.write("data/train.csv", "a,b\n1,2\n3,4\n")
    box.run("dvc", "add", "data/train.csv")
    box.run("git", "commit", "-am", "v2")
    assert versioning.md5(box.path("data/train.csv")) != first
    box.run("git", "checkout", v1)
    box.run("dvc", "checkout")
    assert versioning.md5(box.path("data/train.csv")) == versioning.recorded_md5(box.path("data/train.csv.dvc")) == first
    assert box.path("data/train.csv").read_text() == "a,b\n1,2\n"
    assert list(home.iterdir()) == [] and list(tmp.iterdir()) == [], "a command wrote into HOME or TMPDIR"
    assert box.leftovers() == []
    assert box.timing()["commands"] == len(box.history) >= 12


def test_inside_data_accepts_only_folders_below_data():
    assert versioning.inside_data(config.data_dir() / "a" / "b") == (config.data_dir() / "a" / "b").resolve()
    with pytest.raises(ValueError, match="folder"):
        versioning.inside_data(config.data_dir() / "a" / ".." / "..")
    with pytest.raises(TypeError, match="folder"):
        versioning.inside_data(3)


def test_a_sandbox_path_that_is_a_file_is_refused():
    target = config.data_dir() / "afile"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("keep me")
    with pytest.raises(ValueError, match="folder"):
        versioning.Sandbox(target)
    assert target.read_text() == "keep me"


def test_result_trims_long_output_and_refuses_bad_lengths():
    r = versioning.Result(("dvc", "status"), 0, "\n".join(f"line {i}" for i in range(40)), 1.0)
    text = r.trimmed(5)
    assert text.splitlines()[0] == "line 0" and text.splitlines()[-1] == "line 39" and "lines ..." in text
    assert len(text.splitlines()) == 5 and r.line == "$ dvc status"
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="max_lines"):
            r.trimmed(bad)
    with pytest.raises(ValueError, match="max_lines"):
        versioning.Sandbox(config.data_dir() / "box").show("git", "--version", max_lines=0)
