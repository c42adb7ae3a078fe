# Every target sets itself up: a fresh clone needs only Python >= 3.10 and pip.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build of torch on this path (an unpinned torch pulls several GB of CUDA wheels).
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-notebooks check-full test-browser slides figures benchmarks clean

$(VENV)/.installed: pyproject.toml tools/lab_settings.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) tools/lab_settings.py
	touch $@

install: $(VENV)/.installed

## main job: train on the best dataset available offline, write figures/
demo: install
	$(PY) -m ssvae_lib demo

## unit tests + every notebook under nbval, in fast mode
test: install
	SSVAE_FAST=1 $(PY) -m pytest tests notebooks --nbval-lax --durations=15 $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: install
	SSVAE_FAST=1 $(PY) -m pytest notebooks --nbval-lax $(PYTEST_ARGS)

## every notebook at full size under nbval: the claims that hold only at full size are asserted there
## (not in CI; minutes, see the README)
check-full: install
	$(PY) -m pytest notebooks --nbval-lax --durations=0 $(PYTEST_ARGS)

## JupyterLab in Debian's Chromium (apt-get install chromium): the live widgets of notebooks 04/05,
## and the static slides opened offline
test-browser: install
	$(PY) -m pytest tests/browser -m browser --durations=10 $(PYTEST_ARGS)

## reveal.js slides of every notebook into slides/ (open slides/index.html; works offline; needs npm)
slides: install
	$(PY) tools/build_slides.py

figures: install
	$(PY) -m ssvae_lib figures

benchmarks: install
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis slides
