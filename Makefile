# osteo: the two commands a newcomer needs are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1
export PYTHONUNBUFFERED ?= 1

.PHONY: setup demo test test-all report bench clean-outputs

# First set-up: about 3-4 minutes (torch/torchvision come from this machine's local wheel store).
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python -m osteo.train -m +sweep=finetune_depth experiment=demo
	$(BIN)/python -m osteo.report experiment=demo

report: setup
	$(BIN)/python -m osteo.report

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/data_pipeline.py
	$(BIN)/python benchmarks/train_step.py
