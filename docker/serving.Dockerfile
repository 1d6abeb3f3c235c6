# The model service alone: the classify API (Starlette on uvicorn) over ONNX Runtime, on the CPU.
# No torch: the image serves a model exported beforehand. Build it from the project root once a
# model is stored in data/serving/models/ (`make serve` trains and exports the default one on its
# first start; lablib.deploy.serving.save_model stores any other .onnx file):
#   docker build -f docker/serving.Dockerfile -t ai-eng-lab-serving:v1 .
#   docker run --rm -p 127.0.0.1:8000:8000 ai-eng-lab-serving:v1
# or, three replicas with rolling updates: docker compose -f docker/docker-compose.yml up
# The build context is filtered by docker/serving.Dockerfile.dockerignore (BuildKit reads it in
# place of the root .dockerignore, which keeps data/ out of the lab image): only the service's
# files and the model store go in. A new model version is a new image tag.
FROM python:3.10-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LAB_ROOT=/app \
    PYTHONPATH=/app

RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin serve

WORKDIR /app

# The pins first (their own layer: they change rarely), the same versions as requirements/cpu.txt.
COPY requirements/serving.txt requirements/serving.txt
RUN python -m pip install -r requirements/serving.txt

# lablib as source on PYTHONPATH (nothing to build), the app uvicorn serves, the model store.
# Owned by root and read-only to the service: it writes nothing at run time.
COPY lablib lablib
COPY labs/16_serving/app.py app.py
COPY data/serving/models data/serving/models
RUN python -c "import app; print('serving', sorted(app.app.state.service.models))"

USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# 0.0.0.0 inside the container, so that a published port reaches it; publish it on the host's
# loopback only (-p 127.0.0.1:8000:8000, as docker-compose.yml does): there is no authentication.
CMD ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
