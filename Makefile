# rcmseg developer commands. `make serve` runs the service, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OSD_VERSION := 6.1.1

.PHONY: serve test lint typecheck pytest venv system-deps viewer-assets bench gpu-bundle clean

$(STAMP): pyproject.toml docker/constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c docker/constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# OpenSeadragon for the viewer, pinned, from the npm registry (never copied into the repository).
viewer-assets: app/viewer/static/vendor/openseadragon/openseadragon.min.js

app/viewer/static/vendor/openseadragon/openseadragon.min.js:
	mkdir -p build/npm app/viewer/static/vendor
	cd build/npm && npm install --no-audit --no-fund --silent openseadragon@$(OSD_VERSION)
	rm -rf app/viewer/static/vendor/openseadragon
	cp -r build/npm/node_modules/openseadragon/build/openseadragon app/viewer/static/vendor/openseadragon

# Debian packages the test-suite drives: Chromium (viewer end-to-end), docker-compose (offline validation),
# Orthanc with its DICOMweb plugin (the PACS of the DICOMweb round trip) and dicom3tools (dciodvfy).
system-deps:
	@command -v chromium >/dev/null && command -v docker-compose >/dev/null && test -x /usr/sbin/Orthanc \
	  && test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so && command -v dciodvfy >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker-compose \
	  orthanc orthanc-dicomweb dicom3tools >/dev/null)

serve: $(STAMP) viewer-assets
	$(BIN)/rcmseg serve

lint: $(STAMP)
	$(BIN)/ruff check app worker models tests benchmarks
	$(BIN)/ruff format --check app worker models tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy app worker models

pytest: $(STAMP) viewer-assets system-deps
	$(BIN)/pytest -q -ra

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/rcmseg bench

# The GPU suite for a machine with torch, timm and torchvision but no package registry: build/gpu-bundle/
# holds the wheels it lacks and run.sh (`sh build/gpu-bundle/run.sh` there). GPU_PYTHON: that machine's Python.
GPU_PYTHON ?= 3.11
gpu-bundle: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_bundle --out build/gpu-bundle --python-version $(GPU_PYTHON)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
