# The two commands an operator needs: `make demo` and `make test`. Both install what they need first.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PROV  := $(VENV)/bin/provisioner
STAMP := build/stamps
APT_PACKAGES := $(shell sed -e 's/\#.*//' setup/apt-packages.txt)
PYTEST_ARGS ?= --durations=15

ACCEPTANCE_ARGS ?=

.PHONY: setup apt venv lint test test-unit test-integration test-vm conformance demo bench image clean

setup: apt venv

# Installs only what is missing, so a second run costs one dpkg query.
apt:
	@missing=$$(dpkg-query -W -f='$${Package} $${db:Status-Status}\n' $(APT_PACKAGES) 2>/dev/null \
	    | awk '$$2 != "installed" {print $$1}'; \
	  for p in $(APT_PACKAGES); do dpkg-query -W $$p >/dev/null 2>&1 || echo $$p; done | sort -u); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages: $$missing" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(STAMP)/venv

$(STAMP)/venv: pyproject.toml
	@mkdir -p $(STAMP)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Static checks (configured in pyproject.toml): a lint or type error fails `make test` like a failing test.
lint: setup
	$(VENV)/bin/ruff check provisioner tests bench
	$(VENV)/bin/mypy

# Every tier: static checks, unit (pure), conformance (anchors' vectors), integration (root: loop, netns,
# sshd, etcd), vm (QEMU). Two runs: the tests that can share the cores on TEST_WORKERS workers, then the
# `serial` ones (every VM test, tests that time themselves) alone. Both always run; either failing fails.
TEST_WORKERS ?= 2
test: setup lint image
	@status=0; \
	$(PY) -m pytest $(PYTEST_ARGS) -n $(TEST_WORKERS) -m "not serial" tests || status=$$?; \
	$(PY) -m pytest $(PYTEST_ARGS) -m serial tests || status=$$?; \
	exit $$status

test-unit: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit tests/conformance

test-integration: setup image
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

test-vm: setup image
	$(PY) -m pytest $(PYTEST_ARGS) tests/vm

conformance: setup
	$(PY) ../shared/conformance/cloudinit-validate/run.py "$(PROV) validate --json"
	$(PY) ../shared/conformance/matchbox-select/run.py $(PROV) render ipxe

# FIRMWARE=uefi for OVMF (docs/boot-chain.md); `image` is cached.
FIRMWARE ?= bios
MACHINES ?= 3
demo: setup image
	$(PROV) demo --data-dir examples/cluster --machines $(MACHINES) --firmware $(FIRMWARE)

# The OS image and release dir (docs/image.md). Cached: with nothing changed it only compares keys.
image: setup
	$(PROV) image build --channel stable --output build/release

bench: setup
	$(PY) -m bench

clean:
	rm -rf build .pytest_cache
