# Two entry points do all set-up on a fresh machine:
#   make demo   - the built-in default of the main job (no data or weights needed)
#   make test   - the whole test suite, every backend
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench gpu-check wheel clean

$(STAMP): pyproject.toml ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c ci/constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c ci/constraints.txt -e ".[dev,torch,jax,tf,uniter,vilt]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m integrations.uniter.finetune

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(PY) bench/loss.py

gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py --out .

wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
