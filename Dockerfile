# The AI Engineering Lab on CUDA 12.1 / Ubuntu 22.04 / Python 3.10, serving JupyterLab.
#   make docker        # docker build -t ai-eng-lab .
#   make docker-run    # docker run --rm --gpus all -p 127.0.0.1:8888:8888 ai-eng-lab
# docs/setup.md explains where this differs from the articles' environment (PyTorch 2.0.1 never
# had CUDA 12.1 wheels; torch 2.5.1 is the newest cu121 build and brings its own cuDNN 9.1).

# NVIDIA removes old CUDA tags from Docker Hub now and then: pass another 12.x base with
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.1.1-runtime-ubuntu22.04 .
# (torch uses its bundled cuDNN 9.1; the cudnn8 image adds the articles' cuDNN 8.9 beside it.)
ARG BASE_IMAGE=nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The CUDA image has no Python; Ubuntu 22.04's python3 is 3.10. Apt versions are not pinned:
# Ubuntu drops superseded versions from its archive, so a pin would break the build later.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv make git tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash lab \
    && python3 -m venv "$VIRTUAL_ENV" \
    && chown -R lab:lab "$VIRTUAL_ENV"

USER 1000:1000
WORKDIR /home/lab/ai-eng-lab

# The pinned stack first (its own layer: it changes rarely and is several GB), from the same
# file CI resolves (tools/check_pins.py), so the image and CI cannot drift apart.
COPY --chown=lab:lab requirements/gpu-cu121.txt requirements/gpu-cu121.txt
RUN python -m pip install --upgrade pip==25.3 \
    && python -m pip install -r requirements/gpu-cu121.txt

# The hub's side of JupyterHub in this image (jupyterhub-singleuser, which a hub starts instead of
# `jupyter lab`; docker/entrypoint.sh picks it when JUPYTERHUB_API_TOKEN is set). Its major
# version must match the hub's: pass --build-arg JUPYTERHUB_VERSION=5.5.4 for a 5.x hub. The pin
# file comes again (already installed, nothing is reinstalled) so that the hub package cannot
# move a pinned package: pip fails instead. (Not -c: pip refuses a constraint with extras.)
ARG JUPYTERHUB_VERSION=6.1.1
RUN python -m pip install -r requirements/gpu-cu121.txt "jupyterhub==${JUPYTERHUB_VERSION}" \
    && jupyterhub-singleuser --version

# The project itself. --no-deps: the pins above already satisfy pyproject.toml (a test checks),
# and pyproject's `onnxruntime` must not be installed beside onnxruntime-gpu.
COPY --chown=lab:lab pyproject.toml README.md LICENSE Makefile jupytext.toml conftest.py ./
COPY --chown=lab:lab lablib lablib
COPY --chown=lab:lab labs labs
COPY --chown=lab:lab docs docs
COPY --chown=lab:lab docker/entrypoint.sh /home/lab/entrypoint.sh
RUN python -m pip install --no-deps -e . \
    && python -c "import torch, lablib; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

EXPOSE 8888
# Under a hub the server answers at its port and prefix (JUPYTERHUB_SERVICE_URL), not at /api.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.parse as p, urllib.request as r; u = p.urlsplit(os.environ.get('JUPYTERHUB_SERVICE_URL', 'http://127.0.0.1:8888/')); r.urlopen(f'http://127.0.0.1:{u.port or 8888}' + u.path.rstrip('/') + '/api', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "/home/lab/entrypoint.sh"]
