"""The ways in agree with each other: the Docker image, environment.yml, the CPU environments
(laptop, Binder) and pyproject.toml pin or allow the same stack. `tools/check_pins.py`
(run by `make test`) resolves the pinned sets with pip; these tests check what can be checked
by reading the files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lablib.core import env

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (the CUDA image)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
GPU, CPU = ROOT / "requirements" / "gpu-cu121.txt", ROOT / "requirements" / "cpu.txt"
ENVS = {"environment.yml": GPU, "environment-cpu.yml": CPU, "binder/environment.yml": CPU}
# The GPU stack swaps these packages for their CUDA builds.
GPU_NAMES = {"onnxruntime": "onnxruntime-gpu"}


def lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def pins(entries: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(e) for e in entries if not e.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned_version(req: Requirement) -> Version:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return Version(spec.version)


def pyproject_deps() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pins(data["project"]["dependencies"])


@pytest.mark.parametrize("path", [GPU, CPU], ids=lambda p: p.name)
def test_every_requirement_is_an_exact_pin(path):
    reqs = pins(lines(path))
    assert len(reqs) >= 15
    for req in reqs.values():
        pinned_version(req)


@pytest.mark.parametrize("path", [GPU, CPU], ids=lambda p: p.name)
def test_pins_satisfy_pyproject_ranges(path):
    """The image installs lablib with --no-deps, so its pins must cover every dependency."""
    reqs = pins(lines(path))
    gpu = path == GPU
    for name, wanted in pyproject_deps().items():
        pinned = GPU_NAMES.get(name, name) if gpu else name
        assert pinned in reqs, f"{path.name} does not pin {pinned} (pyproject.toml needs {wanted})"
        version = pinned_version(reqs[pinned])
        assert wanted.specifier.contains(version.base_version), f"{path.name}: {pinned}=={version} outside {wanted}"


def test_gpu_and_cpu_sets_pin_the_same_versions():
    gpu, cpu = pins(lines(GPU)), pins(lines(CPU))
    assert str(gpu.pop("torch").specifier) == "==2.5.1+cu121"
    assert str(cpu.pop("torch").specifier) == "==2.5.1"
    assert gpu.pop("onnxruntime-gpu").specifier == cpu.pop("onnxruntime").specifier
    assert {k: str(v) for k, v in gpu.items()} == {k: str(v) for k, v in cpu.items()}
    assert "--extra-index-url https://download.pytorch.org/whl/cu121" in lines(GPU)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines(CPU)


@pytest.mark.parametrize("name", ENVS)
def test_conda_environments_match_their_pin_file(name):
    spec = yaml.safe_load((ROOT / name).read_text())
    assert spec["channels"] == ["conda-forge"]
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    assert "python=3.10" in conda and "pip" in conda
    (pip_section,) = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict)]
    assert pip_section == lines(ENVS[name]), f"{name} differs from {ENVS[name].name}"


def test_dockerfile_builds_the_documented_environment():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base and "12.1" in base.group(1) and "ubuntu22.04" in base.group(1)
    assert "FROM ${BASE_IMAGE}" in text
    # Installs the same pin file CI resolves, then the project without re-resolving its deps.
    assert "pip install -r requirements/gpu-cu121.txt" in text
    assert "pip install --no-deps -e ." in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the server must not run as root"
    assert "HEALTHCHECK" in text and "EXPOSE 8888" in text


def test_dockerfile_can_serve_under_a_hub():
    """jupyterhub-singleuser is in the image, pinned (a build argument, to match a hub's major
    version) and held to the pin file; the health check follows the hub's port and prefix.
    (That the pins and jupyterhub resolve together for Python 3.10 was checked with pip's dry run;
    see docs/hub.md.)"""
    text = (ROOT / "Dockerfile").read_text()
    arg = re.search(r"^ARG JUPYTERHUB_VERSION=(\S+)$", text, re.M)
    assert arg and Version(arg.group(1)).major >= 5
    # With the pin file as requirements (pip refuses it as constraints: transformers[torch]).
    assert 'pip install -r requirements/gpu-cu121.txt "jupyterhub==${JUPYTERHUB_VERSION}"' in text
    assert "jupyterhub-singleuser --version" in text
    health = re.search(r"^\s*CMD (\[.*\])$", text, re.M)
    code = json.loads(health.group(1))[-1]
    assert "JUPYTERHUB_SERVICE_URL" in code and "/api" in code
    for service_url, expected in ((None, "http://127.0.0.1:8888/api"),
                                  ("http://0.0.0.0:8888/user/ada/", "http://127.0.0.1:8888/user/ada/api"),
                                  ("http://10.0.0.5:9999/user/b%40x/", "http://127.0.0.1:9999/user/b%40x/api")):
        probe = code.replace("r.urlopen(", "print(").replace(", timeout=4)", ")")
        environ = {"PATH": "/usr/bin:/bin"} | ({"JUPYTERHUB_SERVICE_URL": service_url} if service_url else {})
        run = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True)
        assert run.stdout.strip() == expected, run.stderr


def run_entrypoint(tmp_path, args, token=None, hub=None):
    """Run the image's entrypoint with stand-ins for `jupyter` and `jupyterhub-singleuser` that
    report which one ran and what it was given. `hub`: the environment a JupyterHub spawner sets."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for program in ("jupyter", "jupyterhub-singleuser"):
        (fake / program).write_text(f'#!/bin/sh\necho "RAN={program}"\necho "TOKEN=$JUPYTER_TOKEN"\n'
                                    'for a in "$@"; do echo "ARG=$a"; done\n')
        (fake / program).chmod(0o755)
    if not (fake / "python").exists():
        (fake / "python").symlink_to(sys.executable)
    environ = {"PATH": f"{fake}:/usr/bin:/bin", **(hub or {})}
    if token is not None:
        environ["JUPYTER_TOKEN"] = token
    return subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *args], env=environ,
                          capture_output=True, text=True)


@pytest.mark.parametrize("given", [None, "", "my-own-token"], ids=["unset", "empty", "set"])
def test_entrypoint_never_serves_without_a_token(tmp_path, given):
    run = run_entrypoint(tmp_path, ["--extra"], given)
    assert run.returncode == 0, run.stderr
    token = re.search(r"^TOKEN=(.*)$", run.stdout, re.M).group(1)
    assert token == given if given else len(token) >= 32
    assert f"/lab?token={token}" in run.stdout  # the login link the learner opens
    args = re.findall(r"^ARG=(.*)$", run.stdout, re.M)
    assert "--ServerApp.ip=0.0.0.0" in args and args[-2] == "--extra"
    assert args[-1] == f"--IdentityProvider.token={token}"  # last: it beats a config file's


@pytest.mark.parametrize("args, token", [
    (["--IdentityProvider.token="], None),
    (["--ServerApp.token="], "set-in-env"),
    (["--NotebookApp.token=  "], None),
    (["--IdentityProvider.token", ""], None),
    (["--ServerApp.token"], None),
    ([], "   "),
], ids=["IdentityProvider", "ServerApp-over-env", "blank", "separate-arg", "missing-value", "env-blank"])
def test_entrypoint_refuses_an_empty_token_however_given(tmp_path, args, token):
    run = run_entrypoint(tmp_path, args, token)
    assert run.returncode == 2 and "TOKEN=" not in run.stdout, "jupyter must not start"
    assert "without authentication" in run.stderr


def test_entrypoint_takes_a_token_given_as_an_argument(tmp_path):
    run = run_entrypoint(tmp_path, ["--IdentityProvider.token", "abc123"])
    assert run.returncode == 0, run.stderr
    assert "/lab?token=abc123" in run.stdout
    assert re.findall(r"^ARG=(.*)$", run.stdout, re.M)[-1] == "--IdentityProvider.token=abc123"


def test_binder_installs_the_project_and_no_root_dockerfile_shadows_it():
    # A binder/ folder takes precedence over the root Dockerfile, which Binder would otherwise use.
    assert (ROOT / "binder" / "environment.yml").exists()
    post = ROOT / "binder" / "postBuild"
    assert "pip install --no-deps -e ." in post.read_text()
    assert post.stat().st_mode & 0o111, "postBuild must be executable"


def test_lab00_minimums_match_pyproject():
    """Lab 00's [OK]/[FAIL] report uses the same lowest versions pyproject.toml declares."""
    deps = pyproject_deps()
    for dist, _, lowest, _ in env.REQUIREMENTS:
        spec = deps[canonicalize_name(dist)].specifier
        assert str(spec) == f">={lowest}", f"{dist}: lab 00 says >={lowest}, pyproject.toml says {spec}"


def test_pinned_torch_is_within_the_supported_range():
    (lowest,) = [low for dist, _, low, _ in env.REQUIREMENTS if dist == "torch"]
    assert pinned_version(pins(lines(GPU))["torch"]) >= Version(lowest)


HUB = {"JUPYTERHUB_API_TOKEN": "hub-given-token", "JUPYTERHUB_USER": "ada",
       "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}


@pytest.mark.parametrize("command", [[], ["jupyterhub-singleuser"], ["/opt/venv/bin/jupyterhub-singleuser"]],
                         ids=["no-command", "command", "command-path"])
def test_entrypoint_under_a_hub_runs_the_single_user_server(tmp_path, command):
    """A spawner sets JUPYTERHUB_API_TOKEN (and may pass the command first): jupyterhub-singleuser
    runs with the hub's arguments, in the labs folder, and no token of the entrypoint's making."""
    run = run_entrypoint(tmp_path, [*command, "--ip=0.0.0.0", "--port=8888"], hub=HUB)
    assert run.returncode == 0, run.stderr
    assert re.findall(r"^RAN=(.*)$", run.stdout, re.M) == ["jupyterhub-singleuser"]
    args = re.findall(r"^ARG=(.*)$", run.stdout, re.M)
    assert args == ["--ServerApp.root_dir=/home/lab/ai-eng-lab/labs", "--ip=0.0.0.0", "--port=8888"]
    assert "TOKEN=\n" in run.stdout + "\n" and "lab?token=" not in run.stdout


def test_entrypoint_under_a_hub_keeps_the_hubs_notebook_dir(tmp_path):
    run = run_entrypoint(tmp_path, ["jupyterhub-singleuser"], hub={**HUB, "JUPYTERHUB_ROOT_DIR": "/home/lab/work"})
    assert run.returncode == 0, run.stderr
    assert re.findall(r"^ARG=(.*)$", run.stdout, re.M) == []


@pytest.mark.parametrize("blank", ["", "  "], ids=["empty", "spaces"])
def test_entrypoint_refuses_a_blank_hub_token(tmp_path, blank):
    run = run_entrypoint(tmp_path, [], hub={**HUB, "JUPYTERHUB_API_TOKEN": blank})
    assert run.returncode == 2 and "RAN=" not in run.stdout, "no server may start"
    assert "JUPYTERHUB_API_TOKEN" in run.stderr


def test_entrypoint_without_a_hub_never_runs_the_hub_command(tmp_path):
    """Standalone, a first argument naming the single-user server starts nothing but JupyterLab
    with its token: no argument switches the token check off."""
    run = run_entrypoint(tmp_path, ["jupyterhub-singleuser"], token=None)
    assert run.returncode == 0, run.stderr
    assert re.findall(r"^RAN=(.*)$", run.stdout, re.M) == ["jupyter"]
    assert re.findall(r"^ARG=(.*)$", run.stdout, re.M)[-1].startswith("--IdentityProvider.token=")
