"""The workshop room on JupyterHub, tested for real on this machine (`make hub-test`).

Starts JupyterHub and its proxy (configurable-http-proxy) on 127.0.0.1, with the shared-password
authenticator and the local process spawner (each user's server in data/hub/users/<name>), then,
through the hub's REST API and its proxy only, as two users would:

  1. a service token from the hub's config creates two users; each logs in with the password
     (POST /hub/api/users/<name>/tokens) and gets a token of its own; a wrong password and a
     user the hub does not know are refused;
  2. each user starts their own server with their token, uploads lab 00 into it (the contents
     API) and runs it at LAB_SCALE=smoke in a kernel of that server (the kernels API and the
     kernel's websocket, all through the proxy's URL), failing on any cell's error;
  3. each user sees only their own files: the other's server refuses their token, a path that
     climbs out of their folder is refused, their listing holds their files and not the other's,
     and lab 00's results record lands in their own folder.

Prints the time to start the hub, to spawn each server and to run lab 00 per user, and the
largest memory one user's server and kernel took together. Everything it starts (hub, proxy,
single-user servers, kernels) is stopped at the end, on failure, on Ctrl-C and on --timeout;
the hub's database, cookie secret, proxy pid file, HOME and TMPDIR are under data/hub/run/.

    .venv/bin/python tools/hub_test.py                 # the default: two users, 600 s in all
    .venv/bin/python tools/hub_test.py --timeout 300 --keep-logs

Needs `jupyterhub` in this Python's environment and configurable-http-proxy under
data/hub/npm/ (`npm install --prefix data/hub/npm configurable-http-proxy`), or --proxy PATH.
Linux or macOS; the final sweep for leftover processes uses psutil (a dependency of ipykernel).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat

from lablib.core.launch import free_port

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / "data" / "hub"
RUN = HUB / "run"      # the hub's own files for one test run: wiped at the start of each
USERS = HUB / "users"  # each user's notebook folder and HOME (LAB_ROOT: its ai-eng-lab/)
PROXY = HUB / "npm" / "node_modules" / ".bin" / "configurable-http-proxy"
LAB = ROOT / "labs" / "00_setup_check.ipynb"
SERVICE = "hub-test"
MARKER = "AI_ENG_LAB_HUB_TEST"  # in the environment of every process this run starts
PROJECT = "ai-eng-lab"  # each user's copy of the project, in their folder


class HubTestFailed(Exception):
    """A check of the hub test did not hold."""


class TimedOut(Exception):
    """--timeout ran out."""


def seed_project(folder: Path) -> None:
    """What a learner's folder holds before they log in, as /etc/skel gives it on TLJH and the
    image on Z2JH: the project's pyproject.toml and every lab's source (lab 00 lists the labs),
    but no notebook: each user uploads their own copy of lab 00."""
    sources = sorted(ROOT.glob("labs/[0-9][0-9]_*.py")) + sorted(ROOT.glob("labs/[0-9][0-9]_*/[0-9][0-9]_*.py"))
    for source in [ROOT / "pyproject.toml", *sources]:
        target = folder / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def hub_config(*, run_dir: Path, users_dir: Path, proxy: Path, ports: dict[str, int],
               python: str = sys.executable, scale: str = "smoke") -> str:
    """The text of jupyterhub_config.py for the test. Secrets are not in it: the config reads the
    service token and the password from the hub's environment (HUB_TEST_TOKEN,
    HUB_TEST_PASSWORD), so nothing secret is written to disk."""
    if scale not in ("smoke", "cpu"):
        raise ValueError(f"scale must be 'smoke' or 'cpu', not {scale!r}")
    if set(ports) != {"public", "api", "hub"}:
        raise ValueError(f"ports must name 'public', 'api' and 'hub', not {sorted(ports)}")
    for name, port in ports.items():
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"ports[{name!r}] must be a port number from 1 to 65535, not {port!r}")
    singleuser = Path(python).with_name("jupyterhub-singleuser")
    home = str(users_dir / "{username}")
    return f'''# Written by tools/hub_test.py for one test run; rewritten at the next.
import os

c = get_config()  # noqa: F821 (JupyterHub provides it)

# Loopback only: the proxy's public and API ports and the hub itself.
c.JupyterHub.bind_url = "http://127.0.0.1:{ports["public"]}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["api"]}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {ports["hub"]}
c.ConfigurableHTTPProxy.command = [{str(proxy)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(run_dir / "proxy.pid")!r}
c.JupyterHub.db_url = {"sqlite:///" + str(run_dir / "jupyterhub.sqlite")!r}
c.JupyterHub.cookie_secret_file = {str(run_dir / "jupyterhub_cookie_secret")!r}

# One shared password (the successor of DummyAuthenticator's password since JupyterHub 5.3).
# Only users already in the hub's database may log in: the test's service creates them.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ["HUB_TEST_PASSWORD"]
c.Authenticator.allow_all = False
c.Authenticator.allow_existing_users = True

# The test's service: its token comes from the environment; it may create users and start and
# stop their servers, but not use them (no access:servers scope).
c.JupyterHub.services = [{{"name": {SERVICE!r}, "api_token": os.environ["HUB_TEST_TOKEN"]}}]
c.JupyterHub.load_roles = [{{"name": "hub-test-admin", "scopes": ["admin:users", "admin:servers"],
                             "services": [{SERVICE!r}]}}]

# Each user's server: a local process in data/hub/users/<name>, which is also its HOME (Jupyter's
# runtime files); LAB_ROOT is the user's copy of the project there (lab 00 writes results/ in
# it). Not isolation: every server runs as the same Unix user; docs/hub.md names spawners that do.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {home!r}
c.Spawner.notebook_dir = {home!r}
c.Spawner.cmd = [{str(singleuser)!r}]
if os.getuid() == 0:  # Jupyter refuses root unless asked (containers, CI runners)
    c.Spawner.args = ["--allow-root"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment = {{
    "LAB_SCALE": {scale!r},
    "LAB_THREADS": "1",
    "LAB_ROOT": lambda spawner: os.path.join(spawner.home_dir, {PROJECT!r}),
    "TMPDIR": {str(run_dir / "tmp")!r},
    {MARKER!r}: os.environ[{MARKER!r}],
}}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
'''


class Api:
    """JSON over HTTP to the proxy's public URL, with a token; redirects are not followed (a
    redirect to a login page must count as a refusal, not as the page's 200)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(self._NoRedirect)

    def call(self, method: str, path: str, token: str | None = None, body=None,
             timeout: float = 60) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"token {token}")
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def expect(self, method: str, path: str, token: str | None, wanted: set[int], body=None,
               what: str = "") -> object:
        status, reply = self.call(method, path, token, body)
        if status not in wanted:
            raise HubTestFailed(f"{what or method + ' ' + path}: HTTP {status} (wanted {sorted(wanted)}): "
                                f"{str(reply)[:300]}")
        return reply


def wait_until(what: str, probe, limit: float, every: float = 0.25):
    """Call probe() until it returns something true; its value, or HubTestFailed after limit s."""
    end = time.monotonic() + limit
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise HubTestFailed(f"{what}: not within {limit:.0f} s")
        time.sleep(every)


def code_cells(notebook: dict) -> list[str]:
    """The source of every code cell, in order, as one string each (nbformat 4 keeps it as a
    string or a list of lines)."""
    if not isinstance(notebook, dict) or "cells" not in notebook:
        raise ValueError("notebook must be an nbformat 4 notebook (a dict with 'cells')")
    sources = []
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return [s for s in sources if s.strip()]


async def run_cells(ws_url: str, token: str, cells: list[str], limit: float) -> list[str]:
    """Execute cells one by one in the kernel behind ws_url (Jupyter's kernel websocket, plain
    JSON messages), stopping at the first error; returns the text printed to stdout."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"},
                                             request_timeout=30))
    session, printed = uuid.uuid4().hex, []
    try:
        for number, code in enumerate(cells, 1):
            msg_id = uuid.uuid4().hex
            await ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "hub-test",
                           "session": session, "version": "5.3",
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
                "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": True,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
            }))
            reply, idle, error = None, False, None
            while reply is None or not idle:  # the reply, and every output before idle
                raw = await asyncio.wait_for(ws.read_message(), timeout=limit)
                if raw is None:
                    raise HubTestFailed(f"the kernel's websocket closed during cell {number}")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["header"]["msg_type"], msg.get("content", {})
                if kind == "execute_reply":
                    reply = content
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                elif kind == "stream" and content.get("name") == "stdout":
                    printed.append(content.get("text", ""))
                elif kind == "error":
                    error = content
            if reply.get("status") != "ok":
                error = error or reply
                raise HubTestFailed(f"cell {number} failed: {error.get('ename')}: {error.get('evalue')}")
    finally:
        ws.close()
    return printed


class Processes:
    """Every process this run started carries MARKER=<run id> in its environment; the sweep
    finds them by it (orphans included) and stops them: SIGTERM, then SIGKILL."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def find(self) -> list:
        import psutil

        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid != os.getpid() and proc.environ().get(MARKER) == self.run_id:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return found

    def rss_by_user(self) -> dict[str, int]:
        """Resident memory of each user's server and its kernels, summed, in bytes; under "" the
        processes of no user (the hub and its proxy)."""
        import psutil

        used: dict[str, int] = {}
        for proc in self.find():
            try:
                user = proc.environ().get("JUPYTERHUB_USER", "")  # "": the hub or its proxy
                used[user] = used.get(user, 0) + proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return used

    def sweep(self, grace: float = 5.0) -> int:
        import psutil

        left = self.find()
        for proc in left:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(left, timeout=grace)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace)
        return len(left)


class PeakMemory:
    """The largest resident memory of one user's server and kernels together while the block
    runs, sampled every 0.5 s in a thread (a peak shorter than that can be missed)."""

    def __init__(self, processes: Processes, user: str):
        self.processes, self.user, self.bytes = processes, user, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.bytes = max(self.bytes, self.processes.rss_by_user().get(self.user, 0))
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, self.processes.rss_by_user().get(self.user, 0))


def stop_hub(hub, processes: Processes, api: Api | None, token: str, users: list[str]) -> None:
    """Stop the users' servers through the API, then the hub (which stops the proxy), then
    sweep whatever is left. Each step is best-effort: the next one covers a failure."""
    if api is not None and hub is not None and hub.poll() is None:
        for name in users:
            try:
                api.call("DELETE", f"/hub/api/users/{name}/server", token, timeout=10)
            except OSError:
                pass
    if hub is not None and hub.poll() is None:
        hub.send_signal(signal.SIGTERM)  # JupyterHub stops its servers and proxy on SIGTERM
        try:
            hub.wait(timeout=20)
        except Exception:
            hub.kill()
            hub.wait(timeout=10)
    swept = processes.sweep()
    if swept:
        print(f"cleanup: stopped {swept} process(es) the hub left behind")


def check_isolation(api: Api, me: str, other: str, token: str, run_id: str, scale: str) -> None:
    """What `me` can and cannot see, through the proxy, with me's token."""
    base = f"/user/{me}/api/contents"
    listing = api.expect("GET", base, token, {200}, what=f"{me} lists their folder")
    names = {item["name"] for item in listing["content"]}
    labs = api.expect("GET", f"{base}/{PROJECT}/labs", token, {200}, what=f"{me} lists their labs")
    if f"note-{me}.txt" not in names or LAB.name not in {item["name"] for item in labs["content"]}:
        raise HubTestFailed(f"{me}'s folder lacks their own files: {sorted(names)}")
    if f"note-{other}.txt" in names:
        raise HubTestFailed(f"{me} sees {other}'s note in their own folder: {sorted(names)}")
    note = api.expect("GET", f"{base}/note-{me}.txt", token, {200}, what=f"{me} reads their note")
    if note["content"] != f"{me} {run_id}\n":
        raise HubTestFailed(f"{me}'s note reads {note['content']!r}")
    # The other user's server, with my token: listing, reading, writing, and their kernels.
    for method, path, body in (
            ("GET", f"/user/{other}/api/contents", None),
            ("GET", f"/user/{other}/api/contents/note-{other}.txt", None),
            ("PUT", f"/user/{other}/api/contents/from-{me}.txt",
             {"type": "file", "format": "text", "content": "intruder"}),
            ("GET", f"/user/{other}/api/kernels", None)):
        status, _ = api.call(method, path, token, body)
        if not 400 <= status < 500:
            raise HubTestFailed(f"{me} -> {method} {path}: HTTP {status}, wanted a refusal (4xx)")
    # Out of my own folder by a relative path, percent-encoded so that neither the proxy nor the
    # server's router tidies the ".." away; an encoded path of my own proves the encoding gets
    # through to the contents API, so the refusal is the contents API's, not a 404 for a bad URL.
    api.expect("GET", f"{base}/{PROJECT}%2Fresults%2F{LAB.stem}.{scale}.json", token, {200},
               what=f"{me} reads their own file by an encoded path")
    status, _ = api.call("GET", f"{base}/%2E%2E%2F{other}%2Fnote-{other}.txt", token)
    if not 400 <= status < 500:
        raise HubTestFailed(f"{me} read ../{other}/note-{other}.txt through their server: HTTP {status}")
    # The hub's API: I cannot stop or start the other's server, nor read their tokens.
    for method, path in (("DELETE", f"/hub/api/users/{other}/server"),
                         ("POST", f"/hub/api/users/{other}/server"),
                         ("GET", f"/hub/api/users/{other}/tokens")):
        status, _ = api.call(method, path, token)
        if not 400 <= status < 500:
            raise HubTestFailed(f"{me} -> {method} {path}: HTTP {status}, wanted a refusal (4xx)")


def run(args) -> dict:
    users = ["alice", "bob"]
    proxy = Path(args.proxy)
    if not proxy.exists():
        raise HubTestFailed(f"no configurable-http-proxy at {proxy}: npm install --prefix data/hub/npm "
                            "configurable-http-proxy (or give --proxy)")
    for tool in ("jupyterhub", "jupyterhub-singleuser"):
        if not Path(sys.executable).with_name(tool).exists():
            raise HubTestFailed(f"no {tool} beside {sys.executable}: pip install -c constraints.txt jupyterhub")
    shutil.rmtree(RUN, ignore_errors=True)
    for name in users:
        shutil.rmtree(USERS / name, ignore_errors=True)
    for folder in (RUN / "tmp", RUN / "home", USERS):
        folder.mkdir(parents=True, exist_ok=True)
    for name in users:
        seed_project(USERS / name / PROJECT)

    ports = {"public": free_port(), "api": free_port(), "hub": free_port()}
    config = RUN / "jupyterhub_config.py"
    config.write_text(hub_config(run_dir=RUN, users_dir=USERS, proxy=proxy, ports=ports, scale=args.scale))
    token, password, run_id = secrets.token_hex(32), secrets.token_urlsafe(16), uuid.uuid4().hex
    env = {**os.environ, "HUB_TEST_TOKEN": token, "HUB_TEST_PASSWORD": password, MARKER: run_id,
           "HOME": str(RUN / "home"), "TMPDIR": str(RUN / "tmp")}
    processes, figures = Processes(run_id), {"scale": args.scale, "users": {}}
    api, hub = None, None
    log = (RUN / "hub.log").open("w")
    try:
        started = time.monotonic()
        hub = subprocess.Popen([str(Path(sys.executable).with_name("jupyterhub")), "-f", str(config)],
                               cwd=RUN, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        api = Api(f"http://127.0.0.1:{ports['public']}")

        def hub_up():
            if hub.poll() is not None:
                raise HubTestFailed(f"the hub exited with {hub.returncode}; see {RUN / 'hub.log'}")
            try:
                return api.call("GET", "/hub/api/", timeout=2)[0] == 200
            except OSError:
                return False
        wait_until("the hub answering through its proxy", hub_up, 120)
        figures["hub_start_s"] = round(time.monotonic() - started, 2)
        print(f"hub up on http://127.0.0.1:{ports['public']} in {figures['hub_start_s']} s "
              f"(JupyterHub {api.expect('GET', '/hub/api/', None, {200})['version']})")

        # 1. The service creates the users; each logs in with the password.
        api.expect("POST", "/hub/api/users", token, {201}, {"usernames": users}, "the service creates the users")
        login = {name: api.call("POST", f"/hub/api/users/{name}/tokens", None,
                                {"auth": {"username": name, "password": password}, "note": "hub-test login",
                                 "expires_in": 3600}) for name in users}
        for name, (status, reply) in login.items():
            if status != 201 or not isinstance(reply, dict) or not reply.get("token"):
                raise HubTestFailed(f"{name} could not log in with the password: HTTP {status} {reply}")
        tokens = {name: reply["token"] for name, (status, reply) in login.items()}
        for name, pw, why in ((users[0], password + "x", "a wrong password"),
                              ("mallory", password, "a user the hub does not know")):
            status, _ = api.call("POST", f"/hub/api/users/{name}/tokens", None,
                                 {"auth": {"username": name, "password": pw}})
            if status != 403:
                raise HubTestFailed(f"login with {why}: HTTP {status}, wanted 403")
        print(f"logged in {', '.join(users)} with the password; a wrong password and an unknown user refused")

        # 2. Each user starts their server, uploads lab 00 and runs it there.
        # In memory form (nbformat joins the on-disk lists of lines): the contents API and its
        # jupytext pairing, which also writes the paired .py, expect each source as one string.
        notebook = json.loads(json.dumps(nbformat.read(LAB, as_version=4)))
        for name in users:
            user_token, record = tokens[name], figures["users"].setdefault(name, {})
            t0 = time.monotonic()
            api.expect("POST", f"/hub/api/users/{name}/server", user_token, {201, 202},
                       what=f"{name} starts their server")

            def ready(name=name):
                reply = api.expect("GET", f"/hub/api/users/{name}", token, {200})
                server = (reply.get("servers") or {}).get("")
                if server is None and hub.poll() is None and not reply.get("pending"):
                    raise HubTestFailed(f"{name}'s server stopped while starting; see {RUN / 'hub.log'}")
                return bool(server and server.get("ready"))
            wait_until(f"{name}'s server ready", ready, args.spawn_timeout)
            record["spawn_s"] = round(time.monotonic() - t0, 2)
            print(f"{name}: server ready in {record['spawn_s']} s")

            # The image's HEALTHCHECK reads <prefix>/api with no token: it must answer so.
            api.expect("GET", f"/user/{name}/api", None, {200}, what=f"{name}'s server's /api without a token")
            base = f"/user/{name}/api/contents"
            lab_path = f"{PROJECT}/labs/{LAB.name}"
            api.expect("PUT", f"{base}/{lab_path}", user_token, {200, 201},
                       {"type": "notebook", "format": "json", "content": notebook}, f"{name} uploads lab 00")
            api.expect("PUT", f"{base}/note-{name}.txt", user_token, {200, 201},
                       {"type": "file", "format": "text", "content": f"{name} {run_id}\n"}, f"{name} writes a note")
            mine = api.expect("GET", f"{base}/{lab_path}", user_token, {200}, what=f"{name} reads lab 00 back")
            session = api.expect("POST", f"/user/{name}/api/sessions", user_token, {201},
                                 {"path": lab_path, "type": "notebook", "name": LAB.name,
                                  "kernel": {"name": "python3"}}, f"{name} starts a kernel for lab 00")
            kernel = session["kernel"]["id"]
            ws_url = f"ws://127.0.0.1:{ports['public']}/user/{name}/api/kernels/{kernel}/channels"
            t0 = time.monotonic()
            cells = code_cells(mine["content"])  # the copy in the user's server, as read back
            with PeakMemory(processes, name) as peak:
                printed = asyncio.run(run_cells(ws_url, user_token, cells, args.cell_timeout))
            record["lab00_s"] = round(time.monotonic() - t0, 2)
            record["cells"] = len(cells)
            record["peak_rss_mb"] = round(peak.bytes / 2**20)
            api.expect("DELETE", f"/user/{name}/api/sessions/{session['id']}", user_token, {204},
                       what=f"{name} shuts the kernel down")
            # Lab 00's package report: a line per package, starting [OK] or [FAIL].
            failed = [line for line in "".join(printed).splitlines() if line.lstrip().startswith("[FAIL]")]
            if failed:
                raise HubTestFailed(f"lab 00 printed [FAIL] in {name}'s server: " + " | ".join(failed))
            print(f"{name}: lab 00 ran ({len(cells)} code cells) in {record['lab00_s']} s at {args.scale} scale; "
                  f"server + kernel at most {record['peak_rss_mb']} MB resident")

            result = api.expect("GET", f"{base}/{PROJECT}/results/{LAB.stem}.{args.scale}.json", user_token, {200},
                                what=f"lab 00's record in {name}'s folder")
            entry = json.loads(result["content"])
            if entry.get("scale") != args.scale:
                raise HubTestFailed(f"lab 00's record in {name}'s folder is not at {args.scale} scale")
            record["lab00_metrics"] = entry.get("metrics", {})
            speed = record["lab00_metrics"].get("training images/s")
            if isinstance(speed, (int, float)):
                print(f"{name}: lab 00 measured {speed:,.0f} training images/s in this server (LAB_THREADS=1)")

        figures["hub_proxy_rss_mb"] = round(processes.rss_by_user().get("", 0) / 2**20)
        print(f"the hub and its proxy: {figures['hub_proxy_rss_mb']} MB resident")

        # 3. Each sees only their own files.
        for me, other in ((users[0], users[1]), (users[1], users[0])):
            check_isolation(api, me, other, tokens[me], run_id, args.scale)
        for name in users:
            if (USERS / name / f"from-{users[1] if name == users[0] else users[0]}.txt").exists():
                raise HubTestFailed(f"the other user wrote into {name}'s folder")
        print("each user sees only their own folder: the other's server, ../ paths and the other's "
              "hub resources are refused")
        figures["ok"] = True
        return figures
    finally:
        # No timer, no Ctrl-C while cleaning up: an interrupted cleanup is what leaves processes.
        signal.setitimer(signal.ITIMER_REAL, 0)
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            stop_hub(hub, processes, api, token, users)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.close()
        left = processes.find()
        if left:  # cannot happen after sweep() unless a process ignores SIGKILL
            print(f"cleanup: still running: {[p.pid for p in left]}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run (default 600)")
    parser.add_argument("--spawn-timeout", type=float, default=120, help="seconds for one server to start")
    parser.add_argument("--cell-timeout", type=float, default=300, help="seconds for one cell of lab 00")
    parser.add_argument("--scale", choices=("smoke", "cpu"), default="smoke",
                        help="LAB_SCALE for lab 00 in the users' servers (cpu: the figures to size a hub by)")
    parser.add_argument("--proxy", default=str(PROXY), help="configurable-http-proxy to run")
    parser.add_argument("--keep-logs", action="store_true", help="keep data/hub/run/ (the hub's log) after a pass")
    parser.add_argument("--json", type=Path, help="also write the figures here (under data/ or results/)")
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error("--timeout must be a positive number of seconds")

    def on_alarm(signum, frame):
        raise TimedOut(f"the hub test ran past --timeout {args.timeout:.0f} s")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        figures = run(args)
    except (HubTestFailed, TimedOut) as e:
        log = RUN / "hub.log"
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        print("\n".join(["the hub's log ends:", *tail, f"(all of it: {log})", f"hub test FAILED: {e}"]),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hub test interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if not args.keep_logs:
        shutil.rmtree(RUN, ignore_errors=True)
    print("hub test passed: " + "; ".join(
        [f"hub start {figures['hub_start_s']} s"]
        + [f"{n}: spawn {u['spawn_s']} s, lab 00 {u['lab00_s']} s, {u['peak_rss_mb']} MB" for n, u in figures["users"].items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
