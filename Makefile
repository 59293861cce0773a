# Set-up and checks. `make test` installs what the tests need (a CPU build of torch first when
# no torch is installed) and runs them; `make golden` regenerates the emitted-source golden files.
PYTHON ?= python3
TORCH_CPU ?= torch==2.13.0

.PHONY: test install golden lint

install:
	$(PYTHON) -m pip install -e .

test:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_CPU)"
	$(PYTHON) -m pip install -e ".[test]"
	$(PYTHON) -m pytest

golden:
	$(PYTHON) tests/update_golden.py

lint:
	$(PYTHON) -m ruff check .
