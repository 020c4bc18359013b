# osteo: the two commands a newcomer needs are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1
export PYTHONUNBUFFERED ?= 1

.PHONY: setup demo test test-all report bench lock

# First set-up: the exact versions of requirements.lock, then osteo itself (editable).
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

setup: $(BIN)/.installed

# ARGS: more overrides for the sweep, e.g. ARGS=overwrite=true after an upgrade that changed the phantoms
demo: setup
	$(BIN)/python -m osteo.train +sweep=demo $(ARGS)
	$(BIN)/python -m osteo.report experiment=demo

report: setup
	$(BIN)/python -m osteo.report

# The tests run in one worker per CPU (pytest-xdist), each test file's tests in one worker.
test: setup
	$(BIN)/python -m pytest -m "not slow" -q -n auto --dist loadfile

test-all: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: setup
	$(BIN)/python benchmarks/data_pipeline.py
	$(BIN)/python benchmarks/train_step.py

# After changing dependencies in pyproject.toml: resolve them anew and pin the result.
lock: setup
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	{ head -2 requirements.lock; $(BIN)/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
