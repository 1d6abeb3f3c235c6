"""Start a distributed training script with torchrun from a notebook cell, and leave no rank behind.

    run = launch.torchrun("train_ddp.py", "--epochs", 2, nproc=2, timeout_s=120)
    run.output        # every rank's lines, as the cell showed them: "[rank 1] loss 0.41"

Why a subprocess: torchrun starts each rank as a fresh Python process that imports the training
code, and a function defined in a notebook cell cannot be imported (the "spawn" start method fails
on it). So the workers live in a script, and the notebook runs `python -m torch.distributed.run`.

Why a process group, and more: torchrun is one agent process with a child per rank, and it starts
each rank in a session (so a process group) of its own. Stopping only the agent (a time-out, the
Stop button) can leave ranks running, holding cores and ports. So the agent starts in a new session
too, every process it starts is noted while it runs, and to stop a launch each of them, and all
else in their process groups, gets SIGTERM, a short grace, then SIGKILL; we return once none is left.

Why OMP_NUM_THREADS=1: each rank is a full PyTorch process that by default starts one thread per
core. Two ranks on two cores would run four busy threads that wait on each other. `env` overrides it.

Why loopback, and what binds where (measured on Linux with torch 2.13; tests/test_launch.py checks
the one-node case):
- the ranks reach each other and the rendezvous on 127.0.0.1, and gloo's sockets listen on
  127.0.0.1 because GLOO_SOCKET_IFNAME names the loopback interface (without it gloo takes the
  address the machine's host name resolves to, on a laptop often its network address);
- the rendezvous store (a c10d TCPStore in the agent: on master_port; with torchrun_nodes in node
  0's agent, on `port` and on a second port torch picks) listens on ALL interfaces (`::`, which
  takes IPv4 too): torch has no setting that binds it to one address. It lives only while the
  launch runs; on a machine others can reach, a firewall is what keeps those ports private.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import psutil

from lablib.core import config
from lablib.core.validate import integer, positive_int, real
from lablib.core.validate import path as as_path

GRACE_S = 3.0  # after SIGTERM, how long the ranks get to exit before SIGKILL
TAIL_LINES = 30  # how much of the output a LaunchError quotes


@dataclass
class Launch:
    """One torchrun launcher: its command, exit code, output (all ranks), wall time and port."""

    argv: list[str]
    returncode: int
    output: str
    wall_s: float
    port: int


class LaunchError(RuntimeError):
    """A rank failed or the launch ran too long; `.launch` holds the output so far."""

    def __init__(self, message: str, launch: Launch):
        super().__init__(message)
        self.launch = launch


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; another program could take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script, *args, nproc: int = 2, timeout_s: float = 300, env: dict | None = None,
             echo: bool = True, master_port: int | None = None, cwd=None) -> Launch:
    """Run `script` with `args` (passed as strings, no shell) on `nproc` ranks of this machine,
    stream their lines into the cell (echo=True) and return a Launch. `env` adds variables to
    os.environ for the ranks (OMP_NUM_THREADS=1, PYTHONUNBUFFERED=1 unless it sets them); `cwd` is
    the folder they run in. A failing rank or a time-out raises LaunchError, every rank stopped."""
    script, args, env, cwd = _checked(script, args, nproc, 1, timeout_s, env, echo, cwd)
    port = _port("master_port", master_port)
    argv = ["--nnodes=1", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
            f"--master-port={port}"]
    return _run([argv], script, args, port, timeout_s, env, echo, cwd)[0]


def torchrun_nodes(script, *args, nnodes: int = 2, nproc: int = 1, timeout_s: float = 300,
                   env: dict | None = None, echo: bool = True, port: int | None = None,
                   cwd=None) -> list[Launch]:
    """Run `script` as `nnodes` "nodes" on this machine, one torchrun each, meeting through the
    c10d rendezvous on 127.0.0.1:port, as separate machines would. Returns a Launch per node; if
    any node fails or the time runs out, every node is stopped and LaunchError is raised."""
    script, args, env, cwd = _checked(script, args, nproc, nnodes, timeout_s, env, echo, cwd)
    port = _port("port", port)
    run_id = f"lab-{uuid.uuid4().hex[:8]}"  # a fresh id: an old run's state is never joined
    argvs = [[f"--nnodes={nnodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}",
              # no --node-rank: with c10d the rendezvous numbers the nodes (torch warns it ignores it)
              "--local-addr=127.0.0.1",  # the address this node's agent gives the others
              f"--rdzv-conf=is_host={int(i == 0)}"]  # node 0 hosts the store, the others join
             for i in range(nnodes)]
    return _run(argvs, script, args, port, timeout_s, env, echo, cwd)


# --- checks ---------------------------------------------------------------------------------------


def _cores() -> int:
    """CPU cores this process may use (a container or taskset can allow fewer than exist)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _checked(script, args, nproc, nnodes, timeout_s, env, echo, cwd):
    """Every argument checked before anything starts: a bad call launches no rank."""
    path = as_path("script", script)
    if not path.is_file():
        raise FileNotFoundError(f"script {str(path)!r} is not a file: pass the training script's path")
    if path.suffix != ".py":
        raise ValueError(f"script {str(path)!r} must be a Python file (.py)")
    for i, a in enumerate(args):
        if isinstance(a, bool) or not isinstance(a, (str, int, float, os.PathLike)):
            raise TypeError(f"args[{i}] must be a str, a number or a path, got {type(a).__name__} {a!r}")
    nproc, nnodes = positive_int("nproc", nproc), positive_int("nnodes", nnodes)
    cores = _cores()
    if nnodes * nproc > cores:
        what = f"nproc={nproc}" if nnodes == 1 else f"nnodes * nproc = {nnodes} * {nproc}"
        fix = f"nproc <= {cores // nnodes}" if nnodes <= cores else f"nnodes <= {cores} and nproc=1"
        raise ValueError(f"{what} asks for {nnodes * nproc} ranks, but this machine has {cores} CPU "
                         f"cores: pass {fix} (a rank is a whole process; ranks beyond the core "
                         "count queue behind each other)")
    real("timeout_s", timeout_s, 0, float("inf"), low_open=True, high_open=True)
    if env is not None:
        if not isinstance(env, dict):
            raise TypeError(f"env must be a dict of str to str (added to os.environ), got {type(env).__name__}")
        for k, v in env.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"env must map str to str: env[{k!r}] = {v!r}; pass str(value)")
            if not k or "=" in k or "\0" in k + v:
                raise ValueError(f"env holds an invalid variable name or value: {k!r}={v!r}")
    if not isinstance(echo, bool):
        raise TypeError(f"echo must be True or False, got {echo!r}")
    if cwd is not None and not as_path("cwd", cwd).is_dir():
        raise NotADirectoryError(f"cwd {str(cwd)!r} is not a folder")
    return path.resolve(), [str(a) for a in args], dict(env or {}), cwd


def _port(name: str, port) -> int:
    """`port` if it is free on 127.0.0.1, or a free one for None; else an error naming `name`."""
    if port is None:
        return free_port()
    port = integer(name, port, 1024, 65535)  # below 1024 needs root
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR, as torch's store sets it: a port a finished run left in TIME_WAIT counts as
        # free; a port something listens on (here or on all interfaces) still refuses the bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise OSError(e.errno, f"{name}={port} is busy (something listens on 127.0.0.1:{port}): "
                          f"pass another port, or {name}=None for a free one") from None
    return port


def _loopback() -> str | None:
    """The loopback interface's name: lo on Linux, lo0 on macOS (None where none is found)."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):  # Windows
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


# --- running --------------------------------------------------------------------------------------

# torchrun --tee puts [<role><local rank>]: before each rank's lines; with this template also the
# global rank, [default0|1]: (a torch that ignores the template still writes [default0]:)
PREFIX = "[${role_name}${local_rank}|${rank}]:"
TEE = re.compile(r"^\[[A-Za-z_][\w-]*?(\d+)(?:\|(\d+))?\]:")
TORCH_RANK = re.compile(r"^\[rank\d+\]: ?")  # torch's own prefix on a rank's uncaught exception


def _run(argvs, script, args, port, timeout_s, env, echo, cwd) -> list[Launch]:
    scratch = config.data_dir() / "tmp" / f"torchrun-{uuid.uuid4().hex[:8]}"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": PREFIX,
                # torchrun's logs and temporary files go here, removed afterwards, not into /tmp
                "TMPDIR": str(scratch)}
    if _loopback():
        full_env["GLOO_SOCKET_IFNAME"] = _loopback()
    full_env.update(env)
    # --tee: each rank's lines reach us whole and prefixed with its rank (ranks writing to
    # one shared pipe would interleave mid-line). torchrun tails a file per rank and stream, so a
    # rank's stdout and stderr lines may swap places. The files live in `scratch`.
    argvs = [[sys.executable, "-m", "torch.distributed.run", *a, "--tee=3",
              f"--log-dir={scratch / f'node{i}'}", str(script), *args] for i, a in enumerate(argvs)]
    records: list[list[tuple[tuple | None, str]]] = [[] for _ in argvs]  # ((local, rank) or None, text)
    procs, readers, lines, codes, seen, looked = [], [], queue.Queue(), {}, {}, 0.0
    start, deadline, failed, timed_out = time.monotonic(), time.monotonic() + timeout_s, None, False
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for argv in argvs:
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=full_env, cwd=cwd, text=True,
                                          errors="replace", start_new_session=True))
            readers.append(threading.Thread(target=_read, args=(len(procs) - 1, procs[-1], lines), daemon=True))
            readers[-1].start()
        while len(codes) < len(procs) and failed is None:
            if time.monotonic() >= deadline:
                timed_out = True
                break
            if time.monotonic() - looked > 0.5:
                _watch(procs, seen)
                looked = time.monotonic()
            try:  # a short wait, so the deadline and a KeyboardInterrupt are noticed promptly
                node, line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:  # that launcher closed its output: it is exiting
                codes[node] = procs[node].wait()
                failed = node if codes[node] != 0 else None
            else:
                _keep(records, node, line, len(procs), echo)
    finally:  # also on KeyboardInterrupt (the Stop button), which propagates after the cleanup
        try:
            _stop(procs, seen)
        except KeyboardInterrupt:  # Stop pressed again while stopping: no grace this time
            _stop(procs, seen, grace_s=0.0)
            raise
        for reader in readers:  # the lines written before the ranks were stopped
            reader.join(timeout=2.0)
        while not lines.empty():
            node, line = lines.get()
            if line is not None:
                _keep(records, node, line, len(procs), echo)
        shutil.rmtree(scratch, ignore_errors=True)
    wall = time.monotonic() - start
    runs = [Launch(argv, codes.get(i, p.returncode), "\n".join(_label(i, w, t, len(procs)) for w, t in records[i]),
                   wall, port) for i, (argv, p) in enumerate(zip(argvs, procs, strict=True))]
    if timed_out:
        first = (f"the launch ran past timeout_s={timeout_s:g} s; every rank was stopped "
                 f"(SIGTERM, then SIGKILL after {GRACE_S:g} s)")
        raise LaunchError(_with_tail(first, runs), runs[0])
    if failed is not None:
        first = _failure(records[failed], failed, len(procs), codes[failed])
        others = [r for i, r in enumerate(runs) if i != failed]
        raise LaunchError(_with_tail(first, [*others, runs[failed]]), runs[failed])  # its lines last
    return runs


def _read(node: int, proc: subprocess.Popen, lines: queue.Queue) -> None:
    """Forward a launcher's output line by line; None marks its end."""
    for line in proc.stdout:
        lines.put((node, line.rstrip("\n")))
    lines.put((node, None))


def _keep(records, node: int, line: str, nodes: int, echo: bool) -> None:
    tee = TEE.match(line)
    who, text = None, line  # the agent's own lines carry no rank
    if tee:
        local = int(tee[1])
        rank = int(tee[2]) if tee[2] else local if nodes == 1 else None
        who, text = (local, rank), line[tee.end():]
        if rank is not None:
            text = TORCH_RANK.sub("", text)  # "[rank 1] [rank1]: ..." says it twice
    records[node].append((who, text))
    if echo:
        print(_label(node, who, text, nodes), flush=True)


def _label(node: int, who: tuple | None, text: str, nodes: int) -> str:
    """'[rank 1] ...' on one node; '[node 1 rank 1] ...' on several (the c10d rendezvous, not the
    node number, hands out the ranks)."""
    where = f"node {node} " if nodes > 1 else ""
    if who is None:
        return f"[{where.strip()}] {text}" if nodes > 1 else text
    local, rank = who
    return f"[{where}rank {rank}] {text}" if rank is not None else f"[{where}local rank {local}] {text}"


def _watch(procs: list[subprocess.Popen], seen: dict[int, psutil.Process]) -> None:
    """Remember every descendant of the launchers (ranks, their data-loader workers): torchrun
    starts each rank in a session of its own, out of reach of a signal to the launcher's group,
    and a rank whose agent has died is nobody's descendant any more."""
    for p in procs:
        try:
            for child in psutil.Process(p.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            pass


def _alive(procs: list[subprocess.Popen], seen: dict[int, psutil.Process]) -> list[psutil.Process]:
    """The launch's live processes: the launchers, every descendant seen, and whatever else is in
    their process groups (started since the last look). Zombies are dead: they only await reaping."""
    _watch(procs, seen)
    leaders = {p.pid for p in procs} | {pid for pid, q in seen.items() if q.is_running()}
    found = []
    for q in psutil.process_iter(["status"]):
        try:
            if q.info["status"] != psutil.STATUS_ZOMBIE and (q == seen.get(q.pid) or os.getpgid(q.pid) in leaders):
                found.append(q)  # psutil's == compares pid and start time: a reused pid is not ours
        except (psutil.Error, OSError, AttributeError):  # gone meanwhile; no getpgid on Windows
            pass
    return found


def stop(procs: list[subprocess.Popen], grace_s: float = GRACE_S) -> None:
    """Stop processes this program started (each in a session of its own), everything in their
    process groups and every descendant still attached: SIGTERM, `grace_s`, then SIGKILL; return
    once none is alive. For any server or worker a lab starts, not only torchrun's."""
    if not isinstance(procs, (list, tuple)) or not all(isinstance(p, subprocess.Popen) for p in procs):
        raise TypeError(f"procs must be a list of subprocess.Popen, got {procs!r}")
    _stop(list(procs), {}, grace_s=real("grace_s", grace_s, low=0.0))


def _stop(procs: list[subprocess.Popen], seen: dict[int, psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM to every process of the launch (a rank may save or clean up), a grace period, then
    SIGKILL to what is left; return once none is alive, the launchers reaped."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for q in _alive(procs, seen):
            try:
                q.send_signal(sig)
            except psutil.Error:
                pass
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            for p in procs:
                p.poll()  # reap a launcher that has exited, so it does not linger as a zombie
            if not _alive(procs, seen):
                break
            time.sleep(0.05)
    for p in procs:
        p.wait()


# --- explaining a failure -------------------------------------------------------------------------

ROOT_RANK = re.compile(r"\brank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)")
EXIT_CODE = re.compile(r"\bexitcode\s*:\s*(-?\d+)")


def _failure(records, node: int, nodes: int, code: int) -> str:
    """'rank 1 failed: ZeroDivisionError: division by zero': which rank and its exit code from
    torchrun's error summary ("Root Cause ... rank: 1 (local_rank: 1) exitcode: 1"), the
    exception from the end of that rank's traceback."""
    agent = " ".join(t for w, t in records if w is None)
    summary = agent[agent.find("Root Cause"):] if "Root Cause" in agent else ""
    found, exit_code = ROOT_RANK.search(summary), EXIT_CODE.search(summary)
    if found:
        rank, local = int(found[1]), int(found[2])
    else:  # no summary (the agent itself failed, or was killed): the first rank with a traceback
        local, rank = next((w for w, t in records if w is not None and t.startswith("Traceback")), (None, None))
    if local is None:
        return f"torchrun{f' (node {node})' if nodes > 1 else ''} exited with code {code}; see the output below"
    mine = [t for w, t in records if w is not None and (w[1] == rank if w[1] is not None else w[0] == local)]
    who = f"rank {rank}" if rank is not None else f"node {node}, local rank {local},"
    where = f" (node {node})" if nodes > 1 and rank is not None else ""
    error = _exception(mine)
    if error:
        return f"{who} failed: {error}{where}"
    code = int(exit_code[1]) if exit_code else code
    died = f" ({signal.Signals(-code).name})" if -code in signal.valid_signals() else ""
    return f"{who} failed with exit code {code}{died}{where}"


def _exception(texts: list[str]) -> str | None:
    """The exception line of the last traceback: the first unindented line after its header."""
    found, inside = None, False
    for text in (TORCH_RANK.sub("", t) for t in texts):
        if text.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and text and not text[0].isspace():
            found, inside = text.strip(), False
    return found


AGENT_TRACEBACK = re.compile(r"^(\[node \d+\] )?Traceback \(most recent call last\)")  # no rank: torchrun's


def _with_tail(first: str, runs: list[Launch]) -> str:
    """`first`, then the output's last lines, less torchrun's own traceback when it only says
    that a child failed (twenty lines of torch internals, ending in ChildFailedError)."""
    lines = "\n".join(r.output for r in runs).splitlines()
    for start in reversed([i for i, line in enumerate(lines) if AGENT_TRACEBACK.match(line)]):
        end = next((j for j in range(start, len(lines)) if "errors.ChildFailedError" in lines[j]), None)
        if end is not None:
            del lines[start:end + 1]
    return first + "\n--- the last lines of the output ---\n" + "\n".join(lines[-TAIL_LINES:])
