# Two commands do all set-up on a fresh machine:
#   make run    creates .venv, installs the app, opens the window
#   make test   creates .venv, installs the app with its test tools, runs ruff, mypy and the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e .
	# SAM 2 (video extra) builds against the torch just installed, without its optional CUDA extension
	SAM2_BUILD_CUDA=0 $(VENV)/bin/pip install -q --no-build-isolation 'sam2>=1.1,<1.2'
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python main.py $(ARGS)

# Lint (ruff: pyflakes, pycodestyle, import order, bugbear ...) and types (mypy), configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
