"""Smoke test of an installed wheel, run by `make wheel-test` in a fresh venv outside the source tree.

Checks that the extension needs only glibc, libstdc++ and what the wheel grafts (OpenBLAS), no OpenMP
runtime (training runs on tinylearn's own thread pool), that no system OpenBLAS, libgomp or zlib is
mapped into the process, then trains the sine model,
converts it to int8, compares float against a NumPy forward pass and int8 against float, and runs the
int8 model in the firmware on QEMU (CMake and Ninja from the `[deploy]` extra).
"""

import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

import tinylearn as tl
from tinylearn import _core

# What a manylinux wheel may take from the system (auditwheel's policy): glibc and the GCC runtime.
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2",
               "libstdc++.so.6", "libgcc_s.so.1"}


def needed(path: Path) -> list[str]:
    with open(path, "rb") as f:
        dyn = next(s for s in ELFFile(f).iter_sections() if isinstance(s, DynamicSection))
        return [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


def mapped_libraries() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
            if len(line.split()) >= 6 and ".so" in line.split()[-1]}


core = Path(_core.__file__)
site = Path(tl.__file__).resolve().parents[1]
assert core.resolve().is_relative_to(site) and "site-packages" in site.parts, f"not the installed package: {core}"
grafted_dir = site / "tinylearn.libs"
grafted = {p.name for p in grafted_dir.iterdir()}
deps = needed(core)
print(f"{core.name} needs {deps}; grafted: {sorted(grafted)}")
assert set(deps) <= SYSTEM_LIBS | grafted, f"needs libraries neither the system's glibc nor grafted: {deps}"
assert any(n.startswith("libscipy_openblas") for n in deps), f"OpenBLAS is not grafted: {deps}"
assert not any(n.startswith(("libgomp", "libomp", "libiomp")) for n in deps), f"an OpenMP runtime is linked: {deps}"
assert not any(n.startswith("libz") for n in deps), f"zlib should be linked statically: {deps}"
for lib in grafted:
    assert set(needed(grafted_dir / lib)) <= SYSTEM_LIBS | grafted, f"{lib} needs {needed(grafted_dir / lib)}"

# Train, convert, predict.
x, y = tl.datasets.sine(1000, noise=0.1, seed=1)
x_train, y_train, x_test, y_test = x[:800], y[:800], x[800:], y[800:]
model = tl.Sequential([tl.layers.Dense(16, activation="relu", input_shape=(1,)),
                       tl.layers.Dense(16, activation="relu"),
                       tl.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
model.fit(x_train, y_train, epochs=300, batch_size=64, seed=1, verbose=0)
y_float = model.predict(x_test, verbose=0)

# The float model against NumPy's forward pass with the same weights.
h = x_test.astype(np.float64)
weights = model.get_weights()
for i in range(0, len(weights), 2):
    h = h @ weights[i] + weights[i + 1]
    if i < len(weights) - 2:
        h = np.maximum(h, 0.0)
np.testing.assert_allclose(y_float, h, rtol=1e-4, atol=1e-5)
mse_float = float(np.mean((y_float - y_test) ** 2))
# The noise's variance is 0.01; an untrained model's error is about 0.5 (the variance of sin x).
assert mse_float < 0.03, f"the float model did not learn the sine: test MSE {mse_float:.4f}"

q = tl.convert(model, representative_data=x_train)
y_int8 = q.predict(x_test)
err = np.abs(y_int8 - y_float)
# int8 rounds each layer's output to its scale: a few output steps, no more.
print(f"test MSE float {mse_float:.4f}, int8 {float(np.mean((y_int8 - y_test) ** 2)):.4f}; "
      f"|int8 - float| mean {err.mean():.4f}, max {err.max():.4f}, output scale {q.output_scale:.4f}")
assert err.max() < 8 * q.output_scale, "int8 outputs stray from the float model's"
np.testing.assert_array_equal(q.dequantize_output(q.invoke(q.quantize_input(x_test))), y_int8)

# The firmware from the installed package's sources, built with CMake and Ninja of the [deploy] extra,
# on the emulated board: the same int8 outputs as the host.
with tempfile.TemporaryDirectory() as d:
    fw = tl.deploy.build_firmware(q, out_dir=d)
    y_dev, _ = fw.run(q.quantize_input(x_test[:20]))
np.testing.assert_array_equal(y_dev, q.invoke(q.quantize_input(x_test[:20])))
print(f"firmware: {fw.flash_bytes} bytes of flash, outputs equal to the host's")

# Nothing of the system's OpenBLAS, libgomp or zlib in the process (Python's own zlib module may map
# the system's libz; tinylearn must not need it, checked above through DT_NEEDED).
system_lib = re.compile(r"^/(usr/)?lib(64)?/(x86_64-linux-gnu/)?(openblas[^/]*/)?lib(openblas|blas|gomp|xtensor)[^/]*$")
maps = mapped_libraries()
bad = sorted(p for p in maps if system_lib.match(p))
assert not bad, f"system libraries mapped: {bad}"
ours = sorted(p for p in maps if Path(p).parent == grafted_dir.resolve())
assert len(ours) == len(grafted), f"grafted libraries not all mapped: {ours}"
print(f"wheel smoke test passed on Python {sys.version.split()[0]}")
