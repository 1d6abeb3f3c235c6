"""lablib.core.launch: torchrun from a notebook. Real launches of tiny scripts (the tests write
them): an all_reduce gives the right sum on one node and on two; a crashing rank, a hang and a
KeyboardInterrupt each end with every process of the launch gone (checked by pid); the ranks
listen on loopback; and bad arguments are refused before anything starts.

torchrun takes a few seconds to start, so the launches are few and the successful one is shared."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from lablib.core import launch

ALL_REDUCE = """
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"rank {rank} of {world}: sum={t.item():g}")
dist.destroy_process_group()
"""

# Each rank writes its pid into the folder given as argv[1], then misbehaves as argv[2] says.
MISBEHAVE = """
import os, signal, sys, time
from pathlib import Path
rank = int(os.environ["RANK"])
how = sys.argv[2]
if how == "crash":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    dist.barrier()
(Path(sys.argv[1]) / f"pid{rank}").write_text(str(os.getpid()))
print(f"rank {rank} started", flush=True)
if how == "crash" and rank == 1:
    1 / 0
if how == "stubborn":  # ignores SIGTERM: only SIGKILL stops it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if how == "serve":  # holds a gloo group open while the test looks at its sockets
    import torch.distributed as dist
    dist.init_process_group("gloo")
    dist.barrier()
    (Path(sys.argv[1]) / f"ready{rank}").write_text("")
time.sleep(120)
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scripts")
    (folder / "all_reduce.py").write_text(ALL_REDUCE)
    (folder / "misbehave.py").write_text(MISBEHAVE)
    return folder


@pytest.fixture(scope="module")
def one_node(scripts):
    (scripts / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_ROOT", str(scripts))  # torchrun's scratch files go under its data/
        mp.setenv("TMPDIR", str(scripts / "tmp"))  # and none into the temporary folder
        return launch.torchrun(scripts / "all_reduce.py", nproc=2, timeout_s=120, echo=False)


def pids_of(folder, ranks=2) -> list[int]:
    return [int((folder / f"pid{r}").read_text()) for r in range(ranks) if (folder / f"pid{r}").exists()]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(paths, timeout_s=60.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if all(p.exists() for p in paths):
            return True
        time.sleep(0.1)
    return False


# --- launches that work -----------------------------------------------------------------------------


def test_all_reduce_on_two_ranks_sums_on_every_rank(one_node):
    assert one_node.returncode == 0
    for rank in (0, 1):  # 1 + 2 = 3 on both, each line labelled with the rank that printed it
        assert f"[rank {rank}] rank {rank} of 2: sum=3" in one_node.output.splitlines()
    assert one_node.wall_s > 0 and 1024 <= one_node.port <= 65535
    assert "--nproc-per-node=2" in one_node.argv and f"--master-port={one_node.port}" in one_node.argv


def test_a_launch_leaves_no_files_in_tmp_or_data(scripts, one_node):
    assert list((scripts / "tmp").iterdir()) == []
    assert list((scripts / "data" / "tmp").iterdir()) == []  # the logs behind --tee are removed


def test_two_nodes_of_one_rank_give_the_same_sum_as_one_node_of_two(scripts, one_node, monkeypatch):
    monkeypatch.chdir(scripts)  # cwd=None runs where the caller is; a relative script path works
    runs = launch.torchrun_nodes("all_reduce.py", nnodes=2, nproc=1, timeout_s=120, echo=False)
    assert len(runs) == 2 and all(r.returncode == 0 for r in runs)
    sums = sorted(line.split("] ", 1)[1] for r in runs for line in r.output.splitlines() if "sum=" in line)
    assert sums == sorted(line.split("] ", 1)[1] for line in one_node.output.splitlines() if "sum=" in line)
    assert all(r.port == runs[0].port and "--rdzv-backend=c10d" in r.argv for r in runs)
    for i, r in enumerate(runs):  # each line labelled with its node and its global rank
        assert re.search(rf"^\[node {i} rank (\d)\] rank \1 of 2: sum=3$", r.output, re.M), r.output


# --- failures leave nothing behind ------------------------------------------------------------------


def test_a_crashing_rank_is_named_with_its_exception_and_no_process_survives(scripts, tmp_path, capsys):
    with pytest.raises(launch.LaunchError) as caught:
        launch.torchrun(scripts / "misbehave.py", tmp_path, "crash", nproc=2, timeout_s=120)
    message = str(caught.value)
    assert message.splitlines()[0] == "rank 1 failed: ZeroDivisionError: division by zero"
    assert "[rank 1] ZeroDivisionError: division by zero" in message  # the tail follows
    assert caught.value.launch.returncode != 0 and "rank 1 started" in caught.value.launch.output
    assert "[rank 0] rank 0 started" in capsys.readouterr().out  # echo=True streamed it
    pids = pids_of(tmp_path)
    assert len(pids) == 2 and not any(alive(p) for p in pids)


def test_a_hang_ends_at_the_time_out_even_when_ranks_ignore_sigterm(scripts, tmp_path):
    start = time.monotonic()
    with pytest.raises(launch.LaunchError, match=r"ran past timeout_s=5 s; every rank was stopped"):
        launch.torchrun(scripts / "misbehave.py", tmp_path, "stubborn", nproc=2, timeout_s=5, echo=False)
    assert time.monotonic() - start < 5 + launch.GRACE_S + 10  # time-out, grace, SIGKILL, cleanup
    pids = pids_of(tmp_path)
    assert len(pids) == 2, "the ranks had not started before the time-out: the test proved nothing"
    assert not any(alive(p) for p in pids)


def listening(pid: int) -> set[tuple[str, int]]:
    proc = psutil.Process(pid)
    conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux socket tables")
def test_interrupt_stops_every_rank_and_ranks_listen_on_loopback_only(scripts, tmp_path):
    """Stop in JupyterLab is SIGINT to the kernel: a KeyboardInterrupt in the streaming loop."""
    port, seen = launch.free_port(), {}

    def look_then_interrupt():
        if wait_for([tmp_path / "ready0", tmp_path / "ready1"]):
            ranks = pids_of(tmp_path)
            agent = psutil.Process(ranks[0]).ppid()  # torchrun's agent starts the ranks
            seen["ranks"] = set().union(*(listening(p) for p in ranks))
            seen["agent"] = listening(agent)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=look_then_interrupt, daemon=True)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        launch.torchrun(scripts / "misbehave.py", tmp_path, "serve", nproc=2, timeout_s=120,
                        echo=False, master_port=port)
    timer.join()
    pids = pids_of(tmp_path)
    assert len(pids) == 2 and not any(alive(p) for p in pids)
    assert seen, "the ranks never got ready: nothing was checked"
    loopback = {"127.0.0.1", "::1"}
    assert seen["ranks"] and {ip for ip, _ in seen["ranks"]} <= loopback  # gloo: GLOO_SOCKET_IFNAME
    # As the module docstring says: the one socket beyond loopback is the rendezvous store on
    # the master port, which torch binds to every interface.
    assert any(p == port for _, p in seen["agent"])
    assert {(ip, p) for ip, p in seen["agent"] | seen["ranks"] if ip not in loopback} <= {("::", port), ("0.0.0.0", port)}


def test_a_rank_killed_by_a_signal_is_named_with_the_signal():
    records = [(None, "Root Cause (first observed failure):"), (None, "[0]:"),
               (None, "  rank      : 3 (local_rank: 1)"), (None, "  exitcode  : -9 (pid: 12)"),
               ((1, 3), "loss 0.5")]
    assert launch._failure(records, 0, 1, 1) == "rank 3 failed with exit code -9 (SIGKILL)"
    tb = [((0, 0), "Traceback (most recent call last):"), ((0, 0), '  File "x.py", line 1'),
          ((0, 0), "ValueError: bad"), (None, "E... failed (exitcode: 1)")]
    assert launch._failure(tb, 0, 1, 1) == "rank 0 failed: ValueError: bad"  # no summary: the traceback
    assert "exited with code 2" in launch._failure([(None, "usage: ...")], 0, 1, 2)


def test_rank_prefixes_of_newer_and_older_torch_are_both_read():
    one, two = [[]], [[], []]
    for line in ("[default1|1]:[rank1]: boom", "[default1]:hello", "E1202 the agent's line"):
        launch._keep(one, 0, line, 1, echo=False)
    assert [launch._label(0, w, t, 1) for w, t in one[0]] == ["[rank 1] boom", "[rank 1] hello", "E1202 the agent's line"]
    for line in ("[default0|1]:x", "[default0]:[rank1]: y", "agent"):  # a torch without the template
        launch._keep(two, 1, line, 2, echo=False)
    assert [launch._label(1, w, t, 2) for w, t in two[1]] == ["[node 1 rank 1] x", "[node 1 local rank 0] [rank1]: y", "[node 1] agent"]


# --- bad arguments: refused before anything starts --------------------------------------------------


@pytest.fixture
def no_launch(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a process was started for a bad call")

    monkeypatch.setattr(launch.subprocess, "Popen", refuse)


@pytest.fixture
def busy_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_a_busy_port_is_refused_naming_it(scripts, busy_port, no_launch):
    with pytest.raises(OSError, match=rf"master_port={busy_port} is busy"):
        launch.torchrun(scripts / "all_reduce.py", master_port=busy_port)
    with pytest.raises(OSError, match=rf"\bport={busy_port} is busy"):
        launch.torchrun_nodes(scripts / "all_reduce.py", port=busy_port)


def test_more_ranks_than_cores_is_refused_with_the_core_count(scripts, no_launch):
    cores = launch._cores()
    with pytest.raises(ValueError, match=rf"nproc={cores + 1} asks for {cores + 1} ranks.*{cores} CPU cores"):
        launch.torchrun(scripts / "all_reduce.py", nproc=cores + 1)
    with pytest.raises(ValueError, match=rf"nnodes \* nproc = {cores + 1} \* 1"):
        launch.torchrun_nodes(scripts / "all_reduce.py", nnodes=cores + 1, nproc=1)


@pytest.mark.parametrize("script, error", [
    ("missing.py", FileNotFoundError), (".", FileNotFoundError), ("notes.txt", ValueError),
    (None, TypeError), (3, TypeError)])
def test_a_bad_script_is_refused_naming_it(scripts, script, error, no_launch):
    (scripts / "notes.txt").write_text("")
    path = scripts / script if isinstance(script, str) else script
    with pytest.raises(error, match="script"):
        launch.torchrun(path)


@pytest.mark.parametrize("kwargs, name", [
    ({"nproc": 0}, "nproc"), ({"nproc": "2"}, "nproc"), ({"nproc": 1.5}, "nproc"), ({"nproc": True}, "nproc"),
    ({"timeout_s": 0}, "timeout_s"), ({"timeout_s": -1}, "timeout_s"), ({"timeout_s": float("nan")}, "timeout_s"),
    ({"timeout_s": float("inf")}, "timeout_s"), ({"timeout_s": "300"}, "timeout_s"),
    ({"env": ["A=1"]}, "env"), ({"env": {"A": 1}}, "env"), ({"env": {"": "1"}}, "env"),
    ({"master_port": 80}, "master_port"), ({"master_port": 70000}, "master_port"),
    ({"master_port": "29500"}, "master_port"), ({"echo": "yes"}, "echo"), ({"cwd": "no/such/dir"}, "cwd")])
def test_bad_arguments_are_refused_naming_them(scripts, kwargs, name, no_launch):
    with pytest.raises((ValueError, TypeError, OSError), match=rf"\b{name}\b"):
        launch.torchrun(scripts / "all_reduce.py", **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"nnodes": 0}, "nnodes"), ({"nnodes": "2"}, "nnodes"), ({"port": 0}, "port"), ({"port": 2.5}, "port")])
def test_bad_node_arguments_are_refused_naming_them(scripts, kwargs, name, no_launch):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        launch.torchrun_nodes(scripts / "all_reduce.py", **kwargs)


def test_args_must_be_strings_numbers_or_paths(scripts, no_launch):
    with pytest.raises(TypeError, match=r"args\[1\]"):
        launch.torchrun(scripts / "all_reduce.py", "--epochs", None)


def test_free_port_is_free_on_loopback():
    port = launch.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))  # raises if it were taken
    assert 1024 <= port <= 65535


def test_stop_ends_a_process_and_the_child_it_started_in_a_session_of_its_own(tmp_path):
    """launch.stop, which lablib's servers use too: a child in a new session (as torchrun starts
    its ranks) that ignores SIGTERM is still gone when stop returns."""
    code = ("import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'], start_new_session=True)\n"
            f"open({str(tmp_path / 'child')!r}, 'w').write(str(child.pid))\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    assert wait_for([tmp_path / "child"], 30)
    time.sleep(0.6)  # the pid file is written before the child is certainly a descendant we can see
    child = int((tmp_path / "child").read_text())
    launch.stop([parent], grace_s=0.5)
    assert parent.returncode is not None and not alive(parent.pid) and not alive(child)
