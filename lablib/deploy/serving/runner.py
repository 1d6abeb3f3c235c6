"""Start the service with uvicorn in a subprocess on loopback, wait until it answers, stop it.

    with serve() as server:                 # a free port on 127.0.0.1
        print(server.url)                   # http://127.0.0.1:PORT
    # gone: the whole process group is stopped, also on an error or Ctrl-C

Why a subprocess: the server gets its own interpreter (its own GIL), as in production, so a
load generator in the notebook measures the server and not the two fighting for one GIL; and
stopping it is a signal to its process group, which also reaches uvicorn's worker processes.
The clean-up is lablib.core.launch's, the one every lablib subprocess uses.
"""

from __future__ import annotations

import atexit
import ipaddress
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from lablib.core import config, launch
from lablib.core.validate import integer, real
from lablib.core.validate import path as as_path
from lablib.deploy.serving.app import FRAMEWORKS, MAX_BODY
from lablib.deploy.serving.store import check_version

DEFAULT_APP = "lablib.deploy.serving.app:from_env"
_RUNNING: set[Server] = set()  # stopped at interpreter exit, if still running
# The child runs this, then uvicorn. On Linux it asks the kernel to SIGTERM it when the process
# that started it dies, even by SIGKILL (a killed notebook kernel runs no clean-up of its own),
# and exits if that already happened. (Set here, not in a preexec_fn: code between fork and exec
# can deadlock in a process with threads, and a notebook kernel has several.)
_BOOT = """\
import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
except (OSError, AttributeError):  # not Linux
    pass
if os.getppid() != int(os.environ["SERVING_PARENT_PID"]):
    sys.exit("the process that started the server is gone")
sys.argv[0] = "uvicorn"
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """A running uvicorn subprocess: url, host, port, pid; stop() (also on leaving a with block)."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, log_path: Path):
        self.proc, self.host, self.port, self.log_path = proc, host, port, log_path
        self.pid = proc.pid
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"http://{bracketed}:{port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, lines: int = 30) -> str:
        """The last `lines` lines uvicorn wrote (its warnings and errors)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and everything it started (SIGTERM, a grace period, SIGKILL); wait
        until none of it is left. Calling it again does nothing (the group id could belong to
        another program by then)."""
        if self in _RUNNING:
            _RUNNING.discard(self)
            launch.stop([self.proc])  # the server, its group and descendants; returns once none is left
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Server({self.url}, pid {self.pid}, {'running' if self.alive() else 'stopped'})"


def serve(port: int | None = None, host: str = "127.0.0.1", *, app: str = DEFAULT_APP, factory: bool | None = None,
          app_dir=None, models=None, weights: dict | None = None, framework: str = "starlette",
          admin: bool = False, offload: bool = False, max_body: int = MAX_BODY, threads: int = 1,
          workers: int = 1, timeout_s: float = 60.0, allow_public: bool = False, env: dict | None = None) -> Server:
    """Start `app` with uvicorn in a subprocess on host:port (a free port when None), wait until
    GET /health answers 200 (at most `timeout_s`), and return the Server.

    app         "module:attribute" for uvicorn; the default builds the app from the settings below
    factory     whether app names a function that returns the app (default: only for the default)
    app_dir     a folder to import `app` from (e.g. the lab's folder holding app.py)
    models      the model store folder; weights {version: weight}; framework "starlette"|"fastapi";
                admin, offload, max_body, threads: as make_app / from_env take them
    workers     uvicorn worker processes
    host        a loopback address; anything else only with allow_public=True (the service has
                no authentication: on a network address anyone who can reach it may use it)
    env         more environment variables for the server
    """
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be an address such as '127.0.0.1', got {host!r}")
    if not isinstance(allow_public, bool):
        raise TypeError(f"allow_public must be True or False, got {allow_public!r}")
    if not is_loopback(host) and not allow_public:
        raise ValueError(f"host {host!r} is not a loopback address: the service has no authentication. "
                         "Use 127.0.0.1 (or ::1), or pass allow_public=True if you mean it")
    port = _free(host) if port is None else integer("port", port, 1, 65535)
    if not isinstance(app, str) or ":" not in app:
        raise ValueError(f"app must be 'module:attribute' as uvicorn takes it, got {app!r}")
    factory = app == DEFAULT_APP if factory is None else factory
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    settings = {"SERVING_FRAMEWORK": framework, "SERVING_MAX_BODY": str(integer("max_body", max_body, 1)),
                "SERVING_THREADS": str(integer("threads", threads, 1, 256)),
                "SERVING_ADMIN": "1" if admin else "0", "SERVING_OFFLOAD": "1" if offload else "0"}
    if models is not None:
        if not as_path("models", models).is_dir():
            raise NotADirectoryError(f"models {str(models)!r} is not a folder (the model store)")
        settings["SERVING_MODELS"] = str(as_path("models", models).resolve())
    if weights is not None:
        if not isinstance(weights, dict) or not weights:
            raise TypeError(f"weights must be a dict {{version: weight}}, got {weights!r}")
        settings["SERVING_WEIGHTS"] = ",".join(f"{check_version(v)}={real(f'weights[{v!r}]', w, 0)}"
                                               for v, w in weights.items())
    workers = integer("workers", workers, 1, 64)
    timeout_s = real("timeout_s", timeout_s, 0, math.inf, low_open=True, high_open=True)
    extra = _env(env)
    argv = [sys.executable, "-c", _BOOT, app, "--host", host, "--port", str(port), "--workers", str(workers),
            "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "2"]
    if factory:
        argv.append("--factory")
    if app_dir is not None:
        folder = as_path("app_dir", app_dir)
        if not folder.is_dir():
            raise NotADirectoryError(f"app_dir {str(folder)!r} is not a folder")
        argv += ["--app-dir", str(folder.resolve())]
    logs = config.data_dir() / "serving" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"uvicorn-{port}-{uuid.uuid4().hex[:6]}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "LAB_ROOT": str(config.project_root()),
                "SERVING_PARENT_PID": str(os.getpid()), **settings, **extra}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                cwd=config.project_root(), start_new_session=True)
    server = Server(proc, host, port, log_path)
    _RUNNING.add(server)
    try:
        _wait(server, timeout_s)
    except (RuntimeError, TimeoutError) as exc:
        tail = server.log()
        server.stop()
        raise type(exc)(f"{exc}\n--- uvicorn's last lines ---\n{tail}") from None
    except BaseException:  # also KeyboardInterrupt (the Stop button): never leave it running
        server.stop()
        raise
    return server


def _wait(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"the server exited with code {server.proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # not listening yet
        time.sleep(0.1)
    raise TimeoutError(f"the server did not answer {server.url}/health within {timeout_s:g} s")


def _free(host: str) -> int:
    """A port free on `host` now (the OS picks it; another program could take it later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _env(env) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TypeError(f"env must be a dict of str to str, got {env!r}")
    return dict(env)


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()
