# Two entry points, both from a fresh clone:
#   make demo   - create .venv, install, run the main job on the CPU
#   make test   - create .venv, install, run the test suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the CPU wheel, so nothing later pulls a CUDA build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,plot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lightning_rnn.demo

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15

clean:
	rm -rf $(VENV) lightning_logs runs
