"""`make lab` really serves on loopback only, with a token: start the real server and look."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists() or not (BIN / "jupyter").exists(),
                                reason="needs Linux's /proc/net/tcp and jupyter beside this Python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> set[str]:
    """The local addresses with a socket listening on `port`, read from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian bytes
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:  # IPv6: four little-endian 32-bit words
                    words = bytes.fromhex(address)
                    raw = b"".join(words[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def make_lab(tmp_path):
    """Run `make lab` as a learner does, with Jupyter's own files kept in tmp_path."""
    port = free_port()
    env = dict(os.environ)
    for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_DATA_DIR", "data"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
        env[var] = str(tmp_path / sub)
    env.pop("JUPYTER_TOKEN", None)
    log = open(tmp_path / "server.log", "w+")
    # -o: use the environment running these tests as it is, never reinstall it from here.
    # The server stops itself after 2 idle minutes, should this test be killed before its cleanup.
    server = subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "lab", f"BIN={BIN}", "-o", ".venv/.installed",
         f"LAB_ARGS=--no-browser --ServerApp.port={port} --ServerApp.port_retries=0 "
         "--ServerApp.shutdown_no_activity_timeout=120"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log.seek(0)
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read())
            if found:
                break
            if server.poll() is not None:
                log.seek(0)
                pytest.fail(f"make lab stopped ({server.returncode}):\n{log.read()[-3000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("make lab printed no login link within 120 s")
        yield port, found.group(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the jupyter it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_make_lab_listens_on_loopback_only_and_wants_the_token(make_lab):
    port, token = make_lab
    addresses = listening(port)
    assert addresses, f"nothing listens on port {port}"
    assert addresses <= {"127.0.0.1", "::1"}, f"make lab listens on {addresses}: reachable from the network"
    assert len(token) >= 32
    api = f"http://127.0.0.1:{port}/api/contents"
    assert status(api) == 403, "the server answered without the token"
    assert status(f"{api}?token=wrong{token}") == 403
    assert status(f"{api}?token={token}") == 200
    with urllib.request.urlopen(f"{api}?token={token}", timeout=5) as response:
        served = {item["name"] for item in json.load(response)["content"]}
    assert "00_setup_check.ipynb" in served and "lablib" not in served, "the root must be labs/"
