"""The quick parts of tools/hub_test.py (`make hub-test`, the JupyterHub room test): the hub
config it writes, how it reads a notebook's cells, and the sweep that stops what a run left.
The hub test itself is the integration test (not in `make test`: docs/testing.md)."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("hub_test", ROOT / "tools" / "hub_test.py")
hub_test = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hub_test)

PORTS = {"public": 18000, "api": 18001, "hub": 18002}


def load(text: str, environ: dict) -> Config:
    """Run a jupyterhub_config.py as JupyterHub does: `c = get_config()`, then read `c`."""
    c = Config()
    saved = dict(os.environ)
    os.environ.update(environ)
    try:
        exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: c})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return c


@pytest.fixture
def config(tmp_path):
    text = hub_test.hub_config(run_dir=tmp_path / "run", users_dir=tmp_path / "users",
                               proxy=tmp_path / "chp", ports=PORTS, python="/venv/bin/python")
    secrets = {"HUB_TEST_TOKEN": "t0ken-" * 8, "HUB_TEST_PASSWORD": "passw0rd-1234", hub_test.MARKER: "run-1"}
    return text, load(text, secrets), secrets, tmp_path


def test_config_listens_on_loopback_only(config):
    _, c, _, _ = config
    assert c.JupyterHub.bind_url == "http://127.0.0.1:18000"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:18001"
    assert c.JupyterHub.hub_ip == "127.0.0.1" and c.JupyterHub.hub_port == 18002
    assert c.Spawner.ip == "127.0.0.1"


def test_config_keeps_the_hubs_files_and_users_under_the_given_folders(config):
    _, c, _, tmp = config
    assert c.JupyterHub.db_url == f"sqlite:///{tmp / 'run' / 'jupyterhub.sqlite'}"
    assert c.JupyterHub.cookie_secret_file == str(tmp / "run" / "jupyterhub_cookie_secret")
    assert c.ConfigurableHTTPProxy.pid_file == str(tmp / "run" / "proxy.pid")
    assert c.ConfigurableHTTPProxy.command == [str(tmp / "chp")]
    assert c.SimpleLocalProcessSpawner.home_dir_template == str(tmp / "users" / "{username}")
    assert c.Spawner.notebook_dir == str(tmp / "users" / "{username}")
    assert c.Spawner.cmd == ["/venv/bin/jupyterhub-singleuser"]
    env = c.Spawner.environment
    assert env["LAB_SCALE"] == "smoke" and env["TMPDIR"] == str(tmp / "run" / "tmp")
    assert env["LAB_ROOT"](type("Spawner", (), {"home_dir": "/h/ada"})()) == "/h/ada/ai-eng-lab"


def test_config_reads_its_secrets_from_the_environment_only(config):
    text, c, secrets, _ = config
    for value in secrets.values():
        assert value not in text
    assert c.SharedPasswordAuthenticator.user_password == secrets["HUB_TEST_PASSWORD"]
    assert c.JupyterHub.services == [{"name": "hub-test", "api_token": secrets["HUB_TEST_TOKEN"]}]
    assert c.Spawner.environment[hub_test.MARKER] == "run-1"
    # Users must exist first (the service creates them): the password alone admits nobody new.
    assert c.Authenticator.allow_all is False and c.Authenticator.allow_existing_users is True
    (role,) = c.JupyterHub.load_roles
    assert role["services"] == ["hub-test"] and not any(s.startswith("access:") for s in role["scopes"])


@pytest.mark.parametrize("ports, word", [
    ({"public": 1, "api": 2}, "ports"),
    ({"public": 0, "api": 2, "hub": 3}, "public"),
    ({"public": 1, "api": 70000, "hub": 3}, "api"),
    ({"public": 1, "api": 2, "hub": "8081"}, "hub"),
    ({"public": True, "api": 2, "hub": 3}, "public"),
])
def test_config_refuses_bad_ports(tmp_path, ports, word):
    with pytest.raises(ValueError, match=word):
        hub_test.hub_config(run_dir=tmp_path, users_dir=tmp_path, proxy=tmp_path, ports=ports)


@pytest.mark.parametrize("scale", ["gpu", "", None])
def test_config_refuses_a_scale_other_than_smoke_or_cpu(tmp_path, scale):
    with pytest.raises(ValueError, match="scale"):
        hub_test.hub_config(run_dir=tmp_path, users_dir=tmp_path, proxy=tmp_path, ports=PORTS, scale=scale)


def test_code_cells_reads_both_source_forms_and_skips_the_rest():
    notebook = {"cells": [{"cell_type": "markdown", "source": "# title"},
                          {"cell_type": "code", "source": ["a = 1\n", "b = 2"]},
                          {"cell_type": "code", "source": "   \n"},
                          {"cell_type": "raw", "source": "x"},
                          {"cell_type": "code", "source": "print(a + b)"}]}
    assert hub_test.code_cells(notebook) == ["a = 1\nb = 2", "print(a + b)"]


def test_code_cells_of_lab00_as_the_hub_test_sends_them():
    cells = hub_test.code_cells(json.loads(hub_test.LAB.read_text()))
    assert len(cells) >= 5 and any("results.record(" in c for c in cells)


@pytest.mark.parametrize("bad", [None, [], {"nbformat": 4}, "cells"])
def test_code_cells_refuses_what_is_not_a_notebook(bad):
    with pytest.raises(ValueError, match="notebook"):
        hub_test.code_cells(bad)


@pytest.mark.skipif(importlib.util.find_spec("psutil") is None, reason="needs psutil")
def test_sweep_stops_only_the_processes_of_its_run(tmp_path):
    code = "import time; time.sleep(60)"
    mine = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, hub_test.MARKER: "run-a"})
    other = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, hub_test.MARKER: "run-b"})
    try:
        processes = hub_test.Processes("run-a")
        # The environment is readable once the child has started.
        end = time.monotonic() + 10
        while mine.pid not in [p.pid for p in processes.find()] and time.monotonic() < end:
            time.sleep(0.05)
        assert [p.pid for p in processes.find()] == [mine.pid]
        assert processes.sweep(grace=5) == 1
        assert mine.wait(timeout=5) is not None and other.poll() is None
        assert processes.find() == []
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()


def test_seed_project_gives_a_learner_the_lab_sources_but_no_notebook(tmp_path):
    hub_test.seed_project(tmp_path / "p")
    assert (tmp_path / "p" / "pyproject.toml").is_file()
    assert (tmp_path / "p" / "labs" / "00_setup_check.py").is_file()
    assert (tmp_path / "p" / "labs" / "16_serving" / "16_serving.py").is_file()
    assert not list((tmp_path / "p").rglob("*.ipynb"))
