# Entry points. `make demo` runs the main job on the local simulated cluster;
# `make test` runs every check and test. Both install what they need first:
# the Python virtualenv (.venv) and the Go-built control-plane binaries (cached
# in ~/.cache/simcluster, built once).

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# Pytest and Molecule need the binaries' directory; simcluster prints it.
PYTEST_FLAGS ?=

.PHONY: venv binaries demo test lint unit conformance integration molecule bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

binaries: venv
	$(BIN)/simcluster build

demo: binaries
	scripts/demo.sh

test: binaries
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) conformance
	$(MAKE) integration
	$(MAKE) faults
	$(MAKE) molecule

lint: venv
	scripts/lint.sh

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_FLAGS)

# The toolkit against NVIDIA's own code (mig-parted's parser, go-nvml's recorded MIG tables).
conformance: binaries
	$(BIN)/pytest tests/conformance $(PYTEST_FLAGS)

integration: binaries
	$(BIN)/pytest tests/integration $(PYTEST_FLAGS)

# Fault injection on a simulated cluster of its own: a frozen or killed control host, a flaky API server, bad
# settings and credentials, pods that come back (issue 12), judged from the API server's view.
.PHONY: faults
faults: binaries
	$(BIN)/pytest tests/faults $(PYTEST_FLAGS)

molecule: binaries
	scripts/molecule.sh

bench: binaries
	scripts/bench.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
