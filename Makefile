# tinylearn: `make demo` (train -> int8 -> STM32 firmware on QEMU, with a report) and
# `make test` (every test). Both install what is missing first: Debian packages, a venv, pip.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

# Debian packages: xtensor (training core), zlib, OpenBLAS (GEMM for training), doctest (C++ tests), the Arm bare-metal
# toolchain, newlib and its libstdc++ (the firmware links newlib-nano's), QEMU for the emulated STM32F405, Fashion-MNIST.
APT_PACKAGES := libxtensor-dev zlib1g-dev libopenblas-dev doctest-dev gcc-arm-none-eabi libnewlib-arm-none-eabi \
                libstdc++-arm-none-eabi-newlib \
                qemu-system-arm dataset-fashion-mnist
PIP_TOOLS := pip scikit-build-core pybind11 cmake ninja
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench setup apt venv build cpp-test cpp-asan py-test wheel wheel-test clean

demo: build
	$(PY) -m tinylearn.demo

test: build cpp-test cpp-asan py-test wheel-test

setup: apt venv

apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "Installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade $(PIP_TOOLS)
	$(PY) -m pip install -q numpy tqdm pyelftools pytest matplotlib nbclient nbformat ipykernel ipywidgets \
	  ai-edge-litert tflite flatbuffers h5py
	touch $@

venv: $(VENV)/.deps

# Incremental: scikit-build-core keeps its CMake build folder under build/.
build: apt venv
	$(PY) -m pip install -q --no-build-isolation --no-deps .

cpp-test: apt venv
	cmake -S . -B build/cpp-tests -G Ninja -DTINYLEARN_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build/cpp-tests
	ctest --test-dir build/cpp-tests --output-on-failure

# The same C++ tests under AddressSanitizer and UBSan: the core must never read outside a buffer,
# whatever blob it is given.
cpp-asan: apt venv
	cmake -S . -B build/cpp-asan -G Ninja -DTINYLEARN_BUILD_TESTS=ON -DTINYLEARN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build/cpp-asan
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --test-dir build/cpp-asan --output-on-failure

py-test: build
	$(PY) -m pytest

# Self-contained wheels (dist/*.whl, manylinux_2_35: Ubuntu 22.04 and Colab on) for each CPython in
# WHEEL_PYTHONS, with PyPI's OpenBLAS and the OpenMP runtime grafted in (packaging/wheels.sh).
WHEEL_PYTHONS ?= 3.10 3.11 3.12

wheel: apt
	packaging/wheels.sh build $(WHEEL_PYTHONS)

# Each wheel installed into a fresh venv of its Python and smoke-tested there (packaging/smoke.py);
# on 3.11 also beside PyTorch (packaging/with_torch.py).
wheel-test: wheel
	packaging/wheels.sh test $(WHEEL_PYTHONS)

# Side-by-side benchmarks. Keras (tensorflow-cpu) and PyTorch (CPU) install only here: torch is
# pinned to the CPU build this machine kind keeps on disk (a bare 'torch' pulls a CUDA build).
# tfmot (Keras's QAT, for benchmarks/qat_bench.py) needs Keras 2 (tf-keras) of TensorFlow's minor
# version; both install without their dependencies, since tf-keras asks for the full `tensorflow`
# package, which would overwrite tensorflow-cpu's files; their own dependencies are listed.
$(VENV)/.bench: pyproject.toml $(VENV)/.deps Makefile
	$(PY) -m pip install -q "torch==2.13.0" "tensorflow-cpu==2.21.*" "dm-tree~=0.1.1" mock scipy \
	  "absl-py~=1.2" "six~=1.14"
	$(PY) -m pip install -q --no-deps "tf-keras==2.21.*" "tensorflow-model-optimization==0.8.1"
	touch $@

bench: build $(VENV)/.bench
	$(PY) benchmarks/train_bench.py
	$(PY) benchmarks/int8_bench.py
	$(PY) benchmarks/qat_bench.py
	$(PY) benchmarks/distill_bench.py
	$(PY) benchmarks/sparse_bench.py

clean:
	rm -rf build dist $(VENV) .pytest_cache
