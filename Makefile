# Entry points. `make demo` runs the main job on the local simulated cluster;
# `make test` runs every check and test. Both install what they need first:
# the Python virtualenv (.venv) and the Go-built control-plane binaries (cached
# in ~/.cache/simcluster, built once).

# PYTHON picks the virtualenv's interpreter (python3.13 finds pyenv's too: scripts/find-python.sh); each one gets a
# virtualenv of its own, so `make demo PYTHON=python3.13` leaves the default .venv as it is.
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
export VENV
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# Pytest and Molecule need the binaries' directory; simcluster prints it.
PYTEST_FLAGS ?=

.PHONY: venv binaries demo test lint unit conformance integration molecule bench clean constraints collection matrix

# Users install version ranges (pyproject.toml); the project's own runs use the exact versions of constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt
	interpreter=$$(scripts/find-python.sh $(PYTHON)) && "$$interpreter" -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# Re-pin constraints.txt to what the virtualenv has (after changing a range or upgrading on purpose).
constraints: venv
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The collection tarball users install (build/collection/nvidia_mig-rollout-<version>.tar.gz), carrying the wheel of
# the core package its requirements.txt installs.
collection: venv
	scripts/build-collection.sh build/collection

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
	$(MAKE) hosts

lint: venv
	scripts/lint.sh

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_FLAGS)

# The toolkit against NVIDIA's own code (mig-parted's parser, go-nvml's recorded MIG tables).
conformance: binaries
	$(BIN)/pytest tests/conformance $(PYTEST_FLAGS)

# A test renders the rollout's timeline page in headless Chromium (Debian's package, installed when missing).
integration: binaries browser
	$(BIN)/pytest tests/integration $(PYTEST_FLAGS)

.PHONY: browser
browser:
	scripts/install-chromium.sh

# Fault injection on a simulated cluster of its own: a frozen or killed control host, a flaky API server, bad
# settings and credentials, pods that come back (issue 12), judged from the API server's view.
.PHONY: faults
faults: binaries
	$(BIN)/pytest tests/faults $(PYTEST_FLAGS)

molecule: binaries
	scripts/molecule.sh

# Bare-metal GPU hosts (simcluster hosts): namespaces on this machine running Debian's sshd (and Slurm),
# reached by Ansible over real SSH. scripts/host-packages.sh installs the Debian packages when missing (0.2 s
# when installed); tests/hosts and the Molecule scenario baremetal run side by side, each on its own hosts.
.PHONY: hosts
hosts: binaries
	scripts/host-packages.sh
	scripts/test-hosts.sh $(PYTEST_FLAGS)

bench: binaries browser
	scripts/bench.sh

# ansible-core 2.19, 2.20, 2.21 on Python 3.11 to 3.13 as each supports: unit tests and a representative set on the
# simulated cluster (scripts/matrix.py; MATRIX_PARTS=unit for the unit part only). Recorded in docs/compatibility.md.
MATRIX_PARTS ?= unit cluster
matrix: binaries
	$(BIN)/python scripts/matrix.py $(MATRIX_PARTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache wheels
