"""What the int8 model loaders accept and refuse, checked against LiteRT where a model runs:
float32 inputs and outputs, output shapes TFLite recomputes, fully connected operators on
inputs TFLite flattens, tensors no operator uses, arena limits, operators named in refusals,
boards too small for a model, C names for export_c."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import tinylearn as tl
from tflite_oracle import run_litert
from tinylearn import tflite_io
from tinylearn.qgraph import QGraph, QOp, QTensor
from tinylearn.tflite_io import read_tflite, write_tflite

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tflite"


def q8(name, shape, scale, zero_point, data=None, **kw):
    return QTensor(name, shape, "int8", np.array(scale, np.float32).reshape(-1),
                   np.array(zero_point, np.int64).reshape(-1), data=data, **kw)


def with_float_io(g: QGraph) -> QGraph:
    """The graph with a float32 input quantized by a first QUANTIZE and a float32 output from a
    last DEQUANTIZE, as TFLite's converter makes for float-I/O models."""
    tensors = list(g.tensors)
    x, y = tensors[g.inputs[0]], tensors[g.outputs[0]]
    tensors += [QTensor("x_float", x.shape, "float32"), QTensor("y_float", y.shape, "float32")]
    fin, fout = len(tensors) - 2, len(tensors) - 1
    ops = [QOp("QUANTIZE", [fin], [g.inputs[0]])] + list(g.ops) + [QOp("DEQUANTIZE", [g.outputs[0]], [fout])]
    return QGraph(tensors, ops, [fin], [fout]).validate()


def float_inputs(g: QGraph, n: int, seed: int) -> np.ndarray:
    """Samples spread over the int8 input's real range, and a little beyond (clamped)."""
    t = g.tensors[g.inputs[0]]
    lo = float(t.scale[0]) * (-128 - int(t.zero_point[0]))
    hi = float(t.scale[0]) * (127 - int(t.zero_point[0]))
    span = hi - lo
    rng = np.random.default_rng(seed)
    return rng.uniform(lo - 0.1 * span, hi + 0.1 * span, (n,) + t.shape[1:]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# float32 inputs and outputs (QUANTIZE first, DEQUANTIZE last)

@pytest.mark.parametrize("name", ["dense_000", "mixed_000"])
def test_float_io_model_runs_as_litert_does(name):
    g = with_float_io(read_tflite(FIXTURES / f"{name}.tflite"))
    data = write_tflite(g)
    x = float_inputs(read_tflite(FIXTURES / f"{name}.tflite"), 16, seed=5)
    y = run_litert(data, x)
    assert y.dtype == np.float32
    q = tl.from_tflite(data)
    assert q.input_dtype == np.float32 and q.output_dtype == np.float32
    assert q.input_shape == (None,) + x.shape[1:] and q.output_shape == (None,) + y.shape[1:]
    np.testing.assert_array_equal(q.invoke(x), y)
    np.testing.assert_array_equal(q.predict(x), y)
    np.testing.assert_array_equal(q.predict(x.astype(np.float64)), y)  # predict takes any floats
    for i in (0, 7):                                                    # single samples
        np.testing.assert_array_equal(q.invoke(x[i:i + 1]), y[i:i + 1])
    # The same blob loaded back (no graph) behaves the same.
    np.testing.assert_array_equal(tl.Int8Model(q.to_bytes()).invoke(x), y)


def test_float_io_model_refuses_int8_where_it_takes_floats():
    q = tl.from_tflite(write_tflite(with_float_io(read_tflite(FIXTURES / "dense_000.tflite"))))
    with pytest.raises(TypeError, match="takes float32 input.*got dtype int8"):
        q.invoke(np.zeros((2, 30), np.int8))
    with pytest.raises(ValueError, match="quantize_input: this model takes float32 input"):
        q.quantize_input(np.zeros((2, 30), np.float32))
    with pytest.raises(ValueError, match="dequantize_output: this model's output is float32"):
        q.dequantize_output(np.zeros((2, 27), np.int8))


def test_float_input_with_int8_output_and_the_reverse():
    base = read_tflite(FIXTURES / "dense_000.tflite")
    full = with_float_io(base)
    x = float_inputs(base, 8, seed=6)
    # float32 in, int8 out: drop the last DEQUANTIZE.
    g_in = QGraph(full.tensors, full.ops[:-1], full.inputs, [base.outputs[0]]).validate()
    q = tl.from_tflite(write_tflite(g_in))
    assert (q.input_dtype, q.output_dtype) == (np.float32, np.int8)
    np.testing.assert_array_equal(q.invoke(x), run_litert(write_tflite(g_in), x))
    # int8 in, float32 out: drop the first QUANTIZE.
    g_out = QGraph(full.tensors, full.ops[1:], [base.inputs[0]], full.outputs).validate()
    q = tl.from_tflite(write_tflite(g_out))
    assert (q.input_dtype, q.output_dtype) == (np.int8, np.float32)
    xq = np.random.default_rng(7).integers(-128, 128, (8, 30), dtype=np.int8)
    y = run_litert(write_tflite(g_out), xq)
    np.testing.assert_array_equal(q.invoke(xq), y)
    np.testing.assert_array_equal(q.predict(q.input_scale * (xq.astype(np.float32) - q.input_zero_point)), y)


def test_float_io_model_on_the_firmware_equals_litert(tmp_path):
    g = with_float_io(read_tflite(FIXTURES / "mixed_000.tflite"))
    data = write_tflite(g)
    x = float_inputs(read_tflite(FIXTURES / "mixed_000.tflite"), 6, seed=8)
    q = tl.from_tflite(data)
    fw = tl.deploy.build_firmware(q, out_dir=tmp_path)
    y_dev, icount = fw.run(x)
    assert y_dev.dtype == np.float32
    np.testing.assert_array_equal(y_dev, run_litert(data, x))
    assert icount.shape == (6,) and (icount > 0).all()
    with pytest.raises(TypeError, match="expected a float32 array, got dtype int8"):
        fw.run(np.zeros((1,) + x.shape[1:], np.int8))


# ---------------------------------------------------------------------------------------------
# Output shapes that contradict the padding and strides

def conv_graph(out_shape, padding="SAME", stride=2) -> QGraph:
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (3, 3, 3, 2), dtype=np.int8)
    return QGraph([q8("x", (1, 9, 9, 2), 0.05, 3), q8("w", (3, 3, 3, 2), [0.01, 0.02, 0.015], [0, 0, 0],
                                                      data=w, quantized_dimension=0),
                   QTensor("b", (3,), "int32", np.array([5e-4, 1e-3, 7.5e-4], np.float32), np.zeros(3, np.int64),
                           data=np.array([10, -20, 30], np.int32)),
                   q8("y", out_shape, 0.1, -5)],
                  [QOp("CONV_2D", [0, 1, 2], [3], {"fused_activation": "NONE", "padding": padding,
                                                   "stride_h": stride, "stride_w": stride})], [0], [3])


def pool_graph(out_shape) -> QGraph:
    return QGraph([q8("x", (1, 7, 7, 2), 0.05, 3), q8("y", out_shape, 0.05, 3)],
                  [QOp("MAX_POOL_2D", [0], [1], {"fused_activation": "NONE", "padding": "VALID",
                                                 "stride_h": 2, "stride_w": 2, "filter_h": 2,
                                                 "filter_w": 2})], [0], [1])


def litert_output_shape(data: bytes) -> tuple:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    interp.allocate_tensors()
    return tuple(int(d) for d in interp.get_output_details()[0]["shape"])


@pytest.mark.parametrize("make,stored,kind", [
    (lambda s: conv_graph(s, "SAME"), (1, 4, 4, 3), "CONV_2D"),       # SAME, stride 2: 5 x 5
    (lambda s: conv_graph(s, "VALID"), (1, 3, 4, 3), "CONV_2D"),      # VALID, stride 2: 4 x 4
    (pool_graph, (1, 2, 2, 2), "MAX_POOL_2D"),                        # VALID 2x2, stride 2: 3 x 3
])
def test_output_shape_contradicting_padding_and_strides_is_refused(make, stored, kind):
    data = tflite_io._serialize(make(stored), check=False)
    want = litert_output_shape(data)       # LiteRT recomputes the shape and ignores the stored one
    assert want != stored
    with pytest.raises(ValueError, match=rf"operator 0 \({kind}\): output shape {re_tuple(stored)} does "
                                         rf"not match {re_tuple(want)}, the shape TFLite computes"):
        tl.from_tflite(data)
    # With the shape LiteRT computes, the model loads and gives LiteRT's outputs.
    good = tflite_io._serialize(make(want), check=False)
    x = np.random.default_rng(9).integers(-128, 128, (4,) + make(want).tensors[0].shape[1:], dtype=np.int8)
    np.testing.assert_array_equal(tl.from_tflite(good).invoke(x), run_litert(good, x))


def re_tuple(t) -> str:
    return r"\(" + ", ".join(str(d) for d in t) + r"\)"


# ---------------------------------------------------------------------------------------------
# FULLY_CONNECTED on an input TFLite flattens (micro_speech: (1, 25, 20, 8) -> 4000 features)

def micro_speech_fc(seed: int = 11) -> QGraph:
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (4, 4000), dtype=np.int8)
    b = rng.integers(-3000, 3000, 4, dtype=np.int32)
    return QGraph([q8("x", (1, 25, 20, 8), 0.02, -10), q8("w", (4, 4000), 0.004, 0, data=w),
                   QTensor("b", (4,), "int32", np.array([0.02 * 0.004], np.float32), np.zeros(1, np.int64), data=b),
                   q8("logits", (1, 4), 0.5, 7), q8("probs", (1, 4), 1 / 256, -128)],
                  [QOp("FULLY_CONNECTED", [0, 1, 2], [3], {"fused_activation": "NONE", "keep_num_dims": False}),
                   QOp("SOFTMAX", [3], [4], {"beta": 1.0})], [0], [4])


def test_fully_connected_flattens_a_4d_input_as_tflite_does():
    data = write_tflite(micro_speech_fc())
    x = np.random.default_rng(12).integers(-128, 128, (5, 25, 20, 8), dtype=np.int8)
    y = run_litert(data, x)
    q = tl.from_tflite(data)
    assert q.input_shape == (None, 25, 20, 8)
    np.testing.assert_array_equal(q.invoke(x), y)
    assert len(np.unique(y.argmax(axis=1))) > 1     # the outputs depend on the inputs


# ---------------------------------------------------------------------------------------------
# Refusals name the operator, its index and what it expects; a public exception class

def patched(blob: bytes, at: int, fmt: str, value) -> bytes:
    """The blob with one field changed and its CRC-32 (format.h: bytes [16, total)) recomputed."""
    b = bytearray(blob)
    struct.pack_into(fmt, b, at, value)
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])))
    return bytes(b)


def test_core_refusal_names_the_operator_and_what_it_expects(sine_int8):
    blob = sine_int8.to_bytes()
    n_tensors = struct.unpack_from("<H", blob, 20)[0]
    # Operator 1's output tensor: make its feature dimension 8 instead of 16 (still inside the
    # arena), so that its shapes no longer match its weights.
    out = struct.unpack_from("<H", blob, 32 + 32 * (n_tensors + 1) + 16)[0]
    assert struct.unpack_from("<i", blob, 32 + 32 * out + 8)[0] == 16
    bad = patched(blob, 32 + 32 * out + 8, "<i", 8)
    with pytest.raises(tl.ModelFormatError,
                       match=r"operand shapes or types do not match \(status 10\); operator 1 "
                             r"\(FULLY_CONNECTED\) with inputs \[int8 \(1, 16\) arena, int8 \(16, 16\) "
                             r"constant, int32 \(16,\) constant\] and outputs \[int8 \(1, 8\) arena\]; "
                             r"FULLY_CONNECTED expects an int8 input of batches \* k elements"):
        tl.Int8Model(bad)


def test_from_tflite_refusals_are_a_public_exception_naming_the_operator():
    assert issubclass(tl.UnsupportedModelError, ValueError)
    # A SOFTMAX over 5000 values: the core's int32 sum of exponentials allows 4095.
    g = QGraph([q8("x", (1, 5000), 0.1, 0), q8("y", (1, 5000), 1 / 256, -128)],
               [QOp("SOFTMAX", [0], [1], {"beta": 1.0})], [0], [1])
    with pytest.raises(tl.UnsupportedModelError, match=r"operator 0 \(SOFTMAX\).*SOFTMAX expects .*at most "
                                                       r"4095 elements in the last dimension"):
        tl.from_tflite(write_tflite(g))
    # An operator the reader does not know.
    g = QGraph([q8("a", (1, 8), 0.1, 0), q8("b", (1, 8), 0.1, 0)], [QOp("TANH", [0], [1])], [0], [1])
    with pytest.raises(tl.UnsupportedModelError, match=r"operator 0: TANH is not supported"):
        tl.from_tflite(tflite_io._serialize(g, check=False))


# ---------------------------------------------------------------------------------------------
# Tensors no operator uses; the arena limit

def with_unused_arena_tensor(blob: bytes, nbytes: int) -> bytes:
    """The blob with one more tensor record: float32, in the arena, `nbytes` long, used by no
    operator, and the header's arena claim grown by it. Offsets into the payload move by 32."""
    n_t, n_o = struct.unpack_from("<HH", blob, 20)
    arena = struct.unpack_from("<I", blob, 16)[0]
    head = 32 + 32 * n_t
    tensors = bytearray(blob[32:head])
    for k in range(n_t):
        if tensors[32 * k + 2] == 2:                      # constant: an offset into the blob
            struct.pack_into("<I", tensors, 32 * k + 20, struct.unpack_from("<I", tensors, 32 * k + 20)[0] + 32)
    ops = bytearray(blob[head:head + 32 * n_o])
    for k in range(n_o):
        struct.pack_into("<I", ops, 32 * k + 20, struct.unpack_from("<I", ops, 32 * k + 20)[0] + 32)
    side = int(np.sqrt(nbytes // 4))
    extra = struct.pack("<BBBB4iIfi", 3, 2, 1, 0, side, side, 1, 1, arena, 0.0, 0)
    out = bytearray(blob[:32]) + tensors + extra + ops + blob[head + 32 * n_o:]
    struct.pack_into("<I", out, 8, len(out))
    struct.pack_into("<H", out, 20, n_t + 1)
    struct.pack_into("<I", out, 16, arena + 4 * side * side)
    struct.pack_into("<I", out, 12, zlib.crc32(bytes(out[16:])))
    return bytes(out)


def test_a_tensor_no_operator_uses_is_refused(sine_int8, tmp_path):
    blob = sine_int8.to_bytes()
    # The rewriting itself is sound: a small unused tensor is what the core refuses, nothing else.
    small = with_unused_arena_tensor(blob, 64)
    with pytest.raises(tl.ModelFormatError, match=r"a tensor no operator uses \(status 15\); tensor 10 "
                                                  r"\(float32 \(4, 4\) arena\): no operator uses it"):
        tl.Int8Model(small)
    # 1 GiB claimed by a blob of about 1 KB: refused, nothing allocated.
    path = tmp_path / "huge.tlm"
    path.write_bytes(with_unused_arena_tensor(blob, 1 << 30))
    assert path.stat().st_size < 1100
    with pytest.raises(tl.ModelFormatError, match=r"huge.tlm: .*tensor 10 \(float32 \(16384, 16384\) "
                                                  r"arena\): no operator uses it"):
        tl.load_int8(path, max_arena_bytes=None)


def big_arena_blob() -> bytes:
    """A valid model whose arena is 2 x 2^27 bytes (a fully connected 1 -> 1 on 2^27 rows)."""
    from tinylearn import _core
    from tinylearn.quantize import _graph_to_core

    n = 1 << 27
    g = QGraph([q8("x", (n, 1), 0.1, 0), q8("w", (1, 1), 0.01, 0, data=np.ones((1, 1), np.int8)),
                q8("y", (n, 1), 0.1, 0)],
               [QOp("FULLY_CONNECTED", [0, 1, -1], [2], {"fused_activation": "NONE", "keep_num_dims": False})],
               [0], [2])
    return _core.lower(_graph_to_core(g))


def test_load_int8_refuses_an_arena_above_its_limit(tmp_path, sine_int8):
    assert tl.quantize.MAX_ARENA_BYTES == 256 * 1024 * 1024
    path = tmp_path / "big.tlm"
    path.write_bytes(big_arena_blob())
    with pytest.raises(ValueError, match=r"max_arena_bytes: the model needs an arena of 268,435,456 bytes, "
                                         r"above the limit of 268,435,455"):
        tl.load_int8(path, max_arena_bytes=256 * 1024 * 1024 - 1)
    # The limit applies to the caller's value, and None lifts it (here on a small model).
    sine_int8.save(tmp_path / "sine.tlm")
    with pytest.raises(ValueError, match=r"needs an arena of 32 bytes, above the limit of 31"):
        tl.load_int8(tmp_path / "sine.tlm", max_arena_bytes=31)
    assert tl.load_int8(tmp_path / "sine.tlm", max_arena_bytes=32).arena_bytes == 32
    assert tl.load_int8(tmp_path / "sine.tlm", max_arena_bytes=None).arena_bytes == 32
    with pytest.raises(TypeError, match="max_arena_bytes: expected an int or None, got str"):
        tl.load_int8(tmp_path / "sine.tlm", max_arena_bytes="1")
    # from_tflite takes the same limit.
    data = sine_int8.to_tflite()
    with pytest.raises(ValueError, match=r"needs an arena of 32 bytes, above the limit of 16"):
        tl.from_tflite(data, max_arena_bytes=16)
    assert tl.from_tflite(data).arena_bytes == 32


# ---------------------------------------------------------------------------------------------
# A model too large for the board: refused before any build

def fc_model(rows: int, inputs: int, units: int) -> tl.Int8Model:
    w = np.random.default_rng(13).integers(-127, 128, (units, inputs), dtype=np.int8)
    g = QGraph([q8("x", (rows, inputs), 0.1, 0), q8("w", (units, inputs), 0.01, 0, data=w),
                q8("y", (rows, units), 1.0, 0)],
               [QOp("FULLY_CONNECTED", [0, 1, -1], [2], {"fused_activation": "NONE", "keep_num_dims": False})],
               [0], [2])
    return tl.from_tflite(write_tflite(g))


@pytest.mark.parametrize("rows,inputs,units,what", [
    (1, 1100, 1000, r"needs about 1,\d{3},\d{3} bytes of flash \(model 1,\d{3},\d{3} \+ runtime code up to 16,384\)"),
    (35_000, 4, 1, r".*and 176,\d{3} bytes of RAM \(arena 175,\d{3} \+ stack 1,024\)"),
])
def test_build_firmware_refuses_a_model_too_large_for_the_board(rows, inputs, units, what, tmp_path,
                                                                monkeypatch):
    q = fc_model(rows, inputs, units)
    import subprocess

    def no_build(*args, **kwargs):
        raise AssertionError("build_firmware started a build")

    monkeypatch.setattr(subprocess, "run", no_build)
    with pytest.raises(ValueError, match=r"build_firmware: the model does not fit the board 'netduinoplus2': it "
                                         + what + r".*the board has 1,048,576 bytes of flash and 131,072 "
                                         r"bytes of RAM"):
        tl.deploy.build_firmware(q, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# export_c's array name

@pytest.mark.parametrize("name", ["int", "class", "_Bool", "constexpr", "char8_t", "xor", "9lives",
                                  "my-model", "", "a b"])
def test_export_c_refuses_keywords_and_non_identifiers(sine_int8, tmp_path, name):
    with pytest.raises(ValueError, match=r"export_c: name must be a C and C\+\+ identifier that is not a "
                                         rf"keyword .*got {re_escape(repr(name))}"):
        sine_int8.export_c(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def re_escape(s: str) -> str:
    import re

    return re.escape(s)
