# Two entry points do all set-up on a fresh machine:
#   make demo   - the built-in default of the main job (no data or weights needed)
#   make test   - the whole test suite, every backend
#   make docs   - the documentation site, into site/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test docs bench gpu-check wheel clean

$(STAMP): pyproject.toml ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c ci/constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c ci/constraints.txt -e ".[dev,torch,jax,tf,uniter,vilt,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m integrations.uniter.finetune

test: $(STAMP)
	$(PY) -m pytest -q -n 2

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) bench/loss.py

gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py --out .

wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .hypothesis
