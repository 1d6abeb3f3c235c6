# Thin wrappers over the real commands. `make lab` and `make test` set up .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Every install goes through the constraints file: it pins torch (see constraints.txt).
CONSTRAINTS ?= constraints.txt
NBMAKE := $(BIN)/python -m pytest --nbmake --nbmake-timeout=900 -p no:cacheprovider -q
# A lab is labs/NN_topic.ipynb, or labs/NN_topic/NN_topic.ipynb when it has scripts beside it.
LABS   := $(sort $(wildcard labs/[0-9][0-9]_*.ipynb labs/[0-9][0-9]_*/[0-9][0-9]_*.ipynb))

.PHONY: setup deepspeed lab serve test unit lint pins smoke cpu site hub-test results sync docker docker-run mutants clean help
.DEFAULT_GOAL := help

help:
	@echo "make lab      set up .venv if missing, then serve JupyterLab on 127.0.0.1 (token on)"
	@echo "make serve    set up .venv if missing, then serve the classify API on 127.0.0.1 (PORT=8000 by default)"
	@echo "make deepspeed  add DeepSpeed to .venv (lab 15's ZeRO-3 section; make test does it too)"
	@echo "make test     set up .venv if missing, then lint, unit tests, labs at smoke and cpu scale, results report"
	@echo "make smoke    run every lab at LAB_SCALE=smoke with the reference answers (quick loop)"
	@echo "make results  run every lab at the current LAB_SCALE and render docs/results.md"
	@echo "make site     the static site (build/site): the labs with their cpu outputs and the docs, checked in Chromium"
	@echo "make hub-test a real JupyterHub on 127.0.0.1: two users log in, run lab 00, cannot see each other's files (~1 min; not in make test)"
	@echo "make sync     regenerate labs/*.ipynb from labs/*.py (the .py is the source)"
	@echo "make pins     resolve the pinned Docker/conda stacks with pip (dry run, needs PyPI)"
	@echo "make docker   build the CUDA 12.1 JupyterLab image; make docker-run serves it on 127.0.0.1:8888"
	@echo "make mutants  mutation testing: would the tests notice a bug in the safety-critical code? (slow, not in make test)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ needed, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	$(BIN)/python -c 'import torch, lablib; print("installed torch", torch.__version__)'
	touch $@

# Opt-in for make lab (lab 15 skips its DeepSpeed section without it); make test installs it so
# CI runs that section. Source install: see requirements/deepspeed.txt for why these flags.
deepspeed: $(VENV)/.deepspeed

$(VENV)/.deepspeed: $(VENV)/.installed requirements/deepspeed.txt
	DS_BUILD_OPS=0 $(PIP) install -q -c $(CONSTRAINTS) --no-build-isolation -r requirements/deepspeed.txt
	$(BIN)/python -c 'import deepspeed; print("installed deepspeed", deepspeed.__version__)'
	touch $@

IMAGE ?= ai-eng-lab
docker:
	docker build -t $(IMAGE) .

# Published on the host's loopback only; the container prints the login link (token never empty).
docker-run:
	docker run --rm --gpus all -p 127.0.0.1:8888:8888 $(IMAGE)

# Loopback only, token on (Jupyter's default; never disabled). Root is refused by Jupyter
# unless asked, which containers often need.
LAB_ARGS ?=
lab: setup
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=labs \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The model service (lab 16's app): on loopback only; the first start trains and exports the
# default digits model into data/serving/models/ (a few seconds) when none is there yet.
PORT ?= 8000
serve: setup
	$(BIN)/uvicorn app:app --app-dir labs/16_serving --host 127.0.0.1 --port $(PORT) --no-access-log

sync: setup
	$(BIN)/python tools/sync_labs.py

lint: setup
	$(BIN)/ruff check lablib tests tools labs conftest.py
	$(BIN)/hadolint Dockerfile
	$(BIN)/hadolint docker/serving.Dockerfile

# The Docker image and the conda environments install requirements/*.txt; resolve those pins
# for Python 3.10 / Linux without installing them, so a broken pin fails here first.
pins: setup
	$(BIN)/python tools/check_pins.py

unit: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# The smoke pass runs with the reference answers in place of the learner's stubs
# (LAB_SOLUTIONS=1): every exercise check must then say correct, and every lab must have at
# least two (lab 00, the setup check, aside). The cpu pass below runs the stubs as a learner has them.
smoke: setup
	rm -f results/*.smoke.json
	LAB_SOLUTIONS=1 LAB_SCALE=smoke $(NBMAKE) $(LABS)
	$(BIN)/python -m lablib.core.results --scale smoke --exercises 2 --exempt 00_setup_check

# The cpu run asserts each lab's effect; old cpu records are cleared first so the check
# below proves that every lab wrote a fresh one in this run.
# It also keeps each executed notebook in build/executed/ for `make site` (conftest.py's
# LAB_EXECUTED_DIR hook), so the site shows these very runs and no lab runs twice.
cpu: setup
	rm -f results/*.cpu.json
	rm -rf build/executed
	LAB_EXECUTED_DIR=build/executed LAB_SCALE=cpu $(NBMAKE) $(LABS)
	$(BIN)/python -m lablib.core.results --scale cpu --require-all

# The static site (build/site/) from the executed notebooks and docs/, then every page opened in
# headless Chromium (Debian's chromium; make test says SKIPPED for that check where there is none).
SITE_CHECK_ARGS ?=
site: setup
	$(BIN)/python tools/build_site.py
	$(BIN)/python tools/check_site.py $(SITE_CHECK_ARGS)

results: setup
	$(NBMAKE) $(LABS)
	$(BIN)/python -m lablib.core.results

test: deepspeed lint pins unit smoke cpu
	$(MAKE) site SITE_CHECK_ARGS=--skip-without-browser

# The workshop room (docs/hub.md): JupyterHub from PyPI and its proxy from npm (Node.js >= 20),
# installed on first use into .venv and data/hub/; not part of make test (about a minute).
HUB_PROXY := data/hub/npm/node_modules/.bin/configurable-http-proxy
$(HUB_PROXY):
	npm install --prefix data/hub/npm --no-audit --no-fund configurable-http-proxy@5.3.0

$(VENV)/.jupyterhub: $(VENV)/.installed
	$(PIP) install -q -c $(CONSTRAINTS) jupyterhub==6.1.1
	touch $@

HUB_TEST_ARGS ?=
hub-test: $(VENV)/.jupyterhub $(HUB_PROXY)
	$(BIN)/python tools/hub_test.py $(HUB_TEST_ARGS)

# Small deliberate bugs in the safety-critical code, each run against its tests (about 30 min;
# report in data/mutants/report.json). Not part of `make test`. MUTANTS_ARGS=--named-only is quick.
MUTANTS_ARGS ?=
mutants: setup
	$(BIN)/python tools/mutants.py $(MUTANTS_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
