"""Post-training int8 quantization and the host run of the freestanding core, against an
independent NumPy reference of the TFLite int8 arithmetic and of the blob format."""

import os
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import tinylearn as tl
from reference import parse_blob, run_int8

ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(-1, 1)
REPO = Path(__file__).resolve().parents[1]


def test_int8_matches_numpy_reference_on_every_input(sine_int8):
    blob = sine_int8.to_bytes()
    np.testing.assert_array_equal(sine_int8.invoke(ALL_INT8), run_int8(blob, ALL_INT8))


def test_blob_follows_the_documented_format(sine_int8):
    blob = sine_int8.to_bytes()
    b = parse_blob(blob)
    assert b["magic"] == b"TLMB" and b["version"] == tl.FORMAT_VERSION == 1
    assert b["header_bytes"] == 32 and b["total"] == len(blob) == sine_int8.size_bytes
    assert b["crc"] == zlib.crc32(blob[16:])
    assert [op["opcode"] for op in b["ops"]] == [1, 1, 1]
    weights = [b["tensors"][op["inputs"][1]] for op in b["ops"]]
    assert [w["dims"] for w in weights] == [(16, 1), (16, 16), (1, 16)]
    # Symmetric weights: zero point 0, values within [-127, 127], the largest at +-127.
    for w in weights:
        assert w["zero_point"] == 0 and np.abs(w["data"]).max() == 127
    # Biases int32 with scale input_scale * weight_scale.
    for op in b["ops"]:
        inp, w, bias = (b["tensors"][i] for i in op["inputs"])
        assert bias["type"] == 2 and bias["scale"] == np.float32(inp["scale"]) * np.float32(w["scale"])


def test_arena_is_the_peak_of_live_tensors(sine_int8):
    b = parse_blob(sine_int8.to_bytes())
    arena = [t for t in b["tensors"] if t["storage"] == 1]
    # Each op needs its input and output at once: 1+16, 16+16, 16+1 bytes (4-byte aligned).
    assert sine_int8.arena_bytes == 32
    ends = [t["offset"] + int(np.prod(t["dims"])) for t in arena]
    assert max(ends) <= sine_int8.arena_bytes


def test_int8_accuracy_close_to_float(trained_sine, sine_int8, sine_split):
    model, _ = trained_sine
    x_test, y_test = sine_split["test"]
    float_mse = np.mean((model.predict(x_test) - y_test) ** 2)
    int8_mse = np.mean((sine_int8.predict(x_test) - y_test) ** 2)
    assert int8_mse <= 1.1 * float_mse, f"int8 {int8_mse:.5f} vs float {float_mse:.5f}"


def test_predict_is_quantize_invoke_dequantize(sine_int8, sine_split):
    x = sine_split["test"][0]
    q = sine_int8
    # TFLite's quantization by hand: round half away from zero of x / scale, + zero point.
    r = x.astype(np.float32) / np.float32(q.input_scale)
    x_q = np.clip(np.where(r >= 0, np.floor(r + 0.5), np.ceil(r - 0.5)) + q.input_zero_point,
                  -128, 127).astype(np.int8)
    np.testing.assert_array_equal(q.quantize_input(x), x_q)
    y_q = q.invoke(x_q)
    expected = (q.output_scale * (y_q.astype(np.float64) - q.output_zero_point)).astype(np.float32)
    np.testing.assert_array_equal(q.predict(x), expected)


def test_input_range_calibrated_on_representative_data(sine_int8, sine_split):
    x = sine_split["train"][0]
    q = sine_int8
    # Calibrated range [min(x), max(x)] widened to 0: 0 maps to -128 for x >= 0.
    assert q.input_zero_point == -128
    assert q.input_scale == pytest.approx((x.max() - 0.0) / 255, rel=1e-6)


def test_save_and_load_round_trip(sine_int8, tmp_path):
    path = sine_int8.save(tmp_path / "sine.tlm")
    loaded = tl.load_int8(path)
    assert path.read_bytes() == sine_int8.to_bytes()
    np.testing.assert_array_equal(loaded.invoke(ALL_INT8), sine_int8.invoke(ALL_INT8))
    assert [p.name for p in tmp_path.iterdir()] == ["sine.tlm"]  # no temporary left behind


def test_save_is_atomic(sine_int8, tmp_path, monkeypatch):
    path = tmp_path / "sine.tlm"
    path.write_bytes(b"the user's earlier model")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        sine_int8.save(path)
    assert path.read_bytes() == b"the user's earlier model"
    assert [p.name for p in tmp_path.iterdir()] == ["sine.tlm"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs the host C++ compiler")
def test_export_c_compiles_and_runs_like_the_extension(sine_int8, tmp_path):
    """The exported C source, built with the core into a host program, gives the same outputs."""
    header, source = sine_int8.export_c(tmp_path, "sine_model")
    text = header.read_text()
    assert f"#define SINE_MODEL_ARENA_BYTES {sine_int8.arena_bytes}u" in text
    main = tmp_path / "main.cpp"
    main.write_text("""
#include <stdio.h>
#include "sine_model.h"
#include "tinylearn/micro/micro.h"
alignas(4) static unsigned char arena[SINE_MODEL_ARENA_BYTES];
int main() {
  tlm_model m;
  if (tlm_model_init(&m, sine_model, sine_model_len) != TLM_OK) return 2;
  for (int v = -128; v < 128; ++v) {
    tlm_input(&m, arena)[0] = (signed char)v;
    if (tlm_invoke(&m, arena, sizeof arena) != TLM_OK) return 3;
    printf("%d\\n", tlm_output(&m, arena)[0]);
  }
  return 0;
}
""")
    exe = tmp_path / "run"
    sources = [str(main), str(source)] + [str(p) for p in (REPO / "cpp" / "micro").glob("*.cpp")]
    subprocess.run(["g++", "-std=c++17", "-O1", "-fno-exceptions", "-fno-rtti",
                    f"-I{REPO / 'cpp' / 'include'}", f"-I{tmp_path}", *sources, "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = np.array([int(v) for v in out.split()], dtype=np.int8).reshape(-1, 1)
    np.testing.assert_array_equal(got, sine_int8.invoke(ALL_INT8))


def test_invoke_takes_any_int8_layout_alike(sine_int8):
    """invoke's fast path (a 2-D int8 ndarray goes to the core as it is) and its general path
    (1-D arrays, reversed and strided views) give the same outputs; a non-contiguous view is copied, not
    misread."""
    expected = sine_int8.invoke(ALL_INT8)
    wide = np.zeros((256, 3), dtype=np.int8)
    wide[:, 1] = ALL_INT8[:, 0]
    view = wide[:, 1:2]  # shape (256, 1), strides (3, 1): not C-contiguous
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(sine_int8.invoke(view), expected)
    np.testing.assert_array_equal(sine_int8.invoke(ALL_INT8[::-1])[::-1], expected)
    np.testing.assert_array_equal(sine_int8.invoke(ALL_INT8[:, 0]), expected)  # 1-D


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_and_frees_a_model_whose_pool_the_parent_started():
    """One sample of a model with a layer large enough to split starts the model's pool of helper
    threads. A forked child has no such threads: it must run the model (on a new pool) and free
    it without joining the parent's threads (which would hang or crash)."""
    import time

    model = tl.Sequential([tl.layers.Dense(512, activation="relu", input_shape=(640,)),
                           tl.layers.Dense(16)])
    model.build(seed=3)
    x = np.random.default_rng(3).uniform(-1, 1, (64, 640)).astype(np.float32)
    q = tl.convert(model, x)
    xi = q.quantize_input(x[:1])
    want = q.invoke(xi)
    q.invoke(xi)  # the pool exists from the first split call on; used again before the fork
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 3
        try:
            import gc

            code = 0 if all(np.array_equal(q.invoke(xi), want) for _ in range(3)) else 1
            del q
            gc.collect()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung running or freeing the model")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status:#x}"


def test_convert_takes_a_tflite_style_representative_dataset(trained_sine, sine_split):
    """As TFLiteConverter.representative_dataset: a generator function yielding [x] batches, a
    generator object, tuples; the same int8 model as the concatenated array."""
    model, _ = trained_sine
    x = sine_split["train"][0][:100]
    expected = tl.convert(model, x).to_bytes()

    def representative_dataset():
        for i in range(len(x)):
            yield [x[i:i + 1]]

    assert tl.convert(model, representative_dataset).to_bytes() == expected
    assert tl.convert(model, (x[i:i + 25] for i in range(0, 100, 25))).to_bytes() == expected
    assert tl.convert(model, lambda: iter([(x[:60], None), (x[60:], None)])).to_bytes() == expected
    # A different calibration set gives a different model (the generator's data is used).
    assert tl.convert(model, lambda: iter([x[:10]])).to_bytes() != expected
    with pytest.raises(ValueError, match="the generator yielded no batches"):
        tl.convert(model, lambda: iter([]))
    with pytest.raises(TypeError, match="must return an iterable of batches"):
        tl.convert(model, lambda: 3)
    with pytest.raises(ValueError, match=r"representative_data \(batch 1\): expected shape \(N, 1\)"):
        tl.convert(model, iter([x[:5], np.zeros((5, 2))]))
