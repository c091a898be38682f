"""TFLite interop: read_tflite/write_tflite against TensorFlow-made int8 models, run by LiteRT.

The fixtures in tests/fixtures/tflite/ were made by TensorFlow's converter (see their README);
these tests need only ai_edge_litert, tflite and flatbuffers, never TensorFlow.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tflite

from tflite_oracle import run_litert
from tinylearn import tflite_io
from tinylearn.qgraph import OPS, QGraph, QOp, QTensor
from tinylearn.tflite_io import read_tflite, write_tflite

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tflite"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
MODELS = MANIFEST["models"]
NAMES = sorted(MODELS)
SMALL = [n for n in NAMES if not n.startswith("mlperf")]

# The op kind each category of random model exists to cover.
CATEGORY_OP = {"dense": "FULLY_CONNECTED", "conv2d": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D",
               "maxpool": "MAX_POOL_2D", "avgpool_valid": "AVERAGE_POOL_2D",
               "avgpool_same": "AVERAGE_POOL_2D", "gap": "MEAN", "add": "ADD",
               "concat": "CONCATENATION", "softmax": "SOFTMAX", "reshape": "RESHAPE",
               "mixed": "FULLY_CONNECTED"}
MLPERF_MACS = {"mlperf_kws_dscnn": 2_656_768, "mlperf_vww_mobilenetv1": 7_489_664,
               "mlperf_ic_resnet8": 12_501_632, "mlperf_ad_autoencoder": 264_192}


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def graphs_equal(a: QGraph, b: QGraph) -> None:
    """Everything that defines the int8 computation is the same (names and shapes included)."""
    assert (a.inputs, a.outputs) == (b.inputs, b.outputs)
    assert len(a.tensors) == len(b.tensors)
    for ta, tb in zip(a.tensors, b.tensors):
        assert (ta.name, ta.shape, ta.dtype) == (tb.name, tb.shape, tb.dtype)
        np.testing.assert_array_equal(ta.scale, tb.scale)
        np.testing.assert_array_equal(ta.zero_point, tb.zero_point)
        if ta.per_channel:
            assert ta.quantized_dimension == tb.quantized_dimension
        assert (ta.data is None) == (tb.data is None)
        if ta.data is not None:
            assert ta.data.dtype == tb.data.dtype
            np.testing.assert_array_equal(ta.data, tb.data)
    assert [(o.op, o.inputs, o.outputs, o.options) for o in a.ops] == \
           [(o.op, o.inputs, o.outputs, o.options) for o in b.ops]


# ---------------------------------------------------------------------------------------------
# The fixtures

def test_fixture_set_covers_every_op_and_the_mlperf_models():
    assert len(MODELS) >= 220 + 4
    counts = {}
    for info in MODELS.values():
        for op in set(info["ops"]):
            counts[op] = counts.get(op, 0) + 1
    for op in set(OPS) - {"QUANTIZE", "DEQUANTIZE"}:      # TF emits none for int8-in/int8-out
        assert counts.get(op, 0) >= 10, (op, counts)
    for name, macs in MLPERF_MACS.items():
        assert MODELS[name]["macs"] == macs
    size = sum(f.stat().st_size for f in FIXTURES.iterdir())
    assert size < 5_000_000


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads_writes_and_runs_bit_exact(name, expected):
    info = MODELS[name]
    original = (FIXTURES / f"{name}.tflite").read_bytes()
    graph = read_tflite(original)
    assert [op.op for op in graph.ops] == info["ops"]
    if info["category"] in CATEGORY_OP:
        assert CATEGORY_OP[info["category"]] in info["ops"]
    assert graph.tensors[graph.inputs[0]].shape == tuple(info["input_shape"])
    assert graph.tensors[graph.outputs[0]].shape == tuple(info["output_shape"])

    x, y = expected[f"{name}/x"], expected[f"{name}/y"]
    assert len(x) >= 8 and x.dtype == y.dtype == np.int8
    # The oracle still gives what it gave when the fixtures were made ...
    np.testing.assert_array_equal(run_litert(original, x), y)
    # ... and our rewrite of the model gives exactly the same, every element.
    written = write_tflite(graph)
    np.testing.assert_array_equal(run_litert(written, x), y)
    # Nothing is lost or changed on the way through.
    again = read_tflite(written)
    graphs_equal(again, graph)
    assert again == graph
    assert write_tflite(again) == written


def test_writer_gives_the_operator_versions_tflite_gives():
    for name in NAMES:
        original = (FIXTURES / f"{name}.tflite").read_bytes()
        for data in (original, write_tflite(read_tflite(original))):
            m = tflite.Model.GetRootAs(data, 0)
            versions = {}
            for i in range(m.OperatorCodesLength()):
                oc = m.OperatorCodes(i)
                versions[tflite_io.builtin_code(oc)] = oc.Version()
            if data is original:
                want = versions
            else:
                assert versions == want, name


def test_layouts_and_quantization_follow_tflite():
    g = read_tflite(FIXTURES / "mlperf_kws_dscnn.tflite")
    conv = next(op for op in g.ops if op.op == "CONV_2D")
    w = g.tensors[conv.inputs[1]]
    assert w.shape == (64, 10, 4, 1) and w.per_channel and w.quantized_dimension == 0
    assert conv.options == {"fused_activation": "RELU", "padding": "SAME", "stride_h": 2,
                            "stride_w": 2}
    dw = next(op for op in g.ops if op.op == "DEPTHWISE_CONV_2D")
    w = g.tensors[dw.inputs[1]]
    assert w.shape == (1, 3, 3, 64) and w.quantized_dimension == 3 and w.scale.size == 64
    assert dw.options["depth_multiplier"] == 1
    bias = g.tensors[dw.inputs[2]]
    assert bias.dtype == "int32" and not np.any(bias.zero_point)
    x = g.tensors[dw.inputs[0]]
    np.testing.assert_allclose(bias.scale, x.scale[0] * w.scale, rtol=1e-6)
    pool = next(op for op in g.ops if op.op == "AVERAGE_POOL_2D")
    assert (pool.options["filter_h"], pool.options["filter_w"]) == (25, 5)
    fc = next(op for op in g.ops if op.op == "FULLY_CONNECTED")
    assert g.tensors[fc.inputs[1]].shape == (12, 64)
    mean = next(op for name in NAMES if name.startswith("gap")
                for op in read_tflite(FIXTURES / f"{name}.tflite").ops if op.op == "MEAN")
    assert mean.options["axes"] == (1, 2)


# ---------------------------------------------------------------------------------------------
# Hand-built graphs

def q(name, shape, scale, zp, data=None, dtype="int8", qdim=0):
    return QTensor(name, tuple(shape), dtype, np.atleast_1d(np.float32(scale)),
                   np.atleast_1d(np.int64(zp)), qdim, data)


def tiny_graph() -> QGraph:
    """float [1,4] -> QUANTIZE -> FC(3) + RELU -> QUANTIZE (requantize) -> DEQUANTIZE -> float."""
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (3, 4), dtype=np.int8)
    tensors = [
        QTensor("x", (1, 4), "float32"),
        q("xq", (1, 4), 0.05, -3),
        q("w", (3, 4), [0.01, 0.02, 0.015], [0, 0, 0], w),
        q("b", (3,), np.float32(0.05) * np.float32([0.01, 0.02, 0.015]), [0, 0, 0],
          np.array([100, -50, 7], np.int32), dtype="int32"),
        q("h", (1, 3), 0.04, -128),
        q("h2", (1, 3), 0.1, -100),
        QTensor("y", (1, 3), "float32"),
    ]
    ops = [QOp("QUANTIZE", [0], [1]),
           QOp("FULLY_CONNECTED", [1, 2, 3], [4], {"fused_activation": "RELU",
                                                    "keep_num_dims": False}),
           QOp("QUANTIZE", [4], [5]),
           QOp("DEQUANTIZE", [5], [6])]
    return QGraph(tensors, ops, [0], [6])


def test_quantize_and_dequantize_at_the_boundaries_run_in_litert():
    g = tiny_graph().validate()
    data = write_tflite(g)
    graphs_equal(read_tflite(data), g)
    # QUANTIZE alone: float -> int8 with round-half-away-from-zero and clamping.
    only_q = QGraph(g.tensors[:2], g.ops[:1], [0], [1])
    x = np.array([[-10.0, -0.1374, 0.0, 0.2]], np.float32)
    got = run_litert(write_tflite(only_q), x)
    want = np.clip(np.round(x / np.float32(0.05)) - 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, want)
    # The whole chain gives float outputs that are multiples of the last scale.
    y = run_litert(data, np.array([[0.5, -0.25, 1.0, 0.0]], np.float32))
    assert y.dtype == np.float32
    k = y / np.float32(0.1) - 100
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_write_to_a_path_is_the_same_bytes(tmp_path):
    g = tiny_graph()
    data = write_tflite(g, tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == data
    graphs_equal(read_tflite(tmp_path / "m.tflite"), g)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


# ---------------------------------------------------------------------------------------------
# What the reader refuses

def with_op(op_name: str, index: int) -> bytes:
    """A model whose operator ``index`` is the builtin ``op_name`` (written without checks)."""
    g = QGraph([q("a", (1, 8), 0.1, 0), q("b", (1, 8), 0.1, 0), q("c", (1, 8), 0.1, 0),
                q("d", (1, 8), 0.1, 0), q("e", (1, 8), 0.1, 0)],
               [QOp("RELU", [k], [k + 1]) for k in range(4)], [0], [4])
    g.ops[index] = QOp(op_name, [index], [index + 1])
    return tflite_io._serialize(g, check=False)


@pytest.mark.parametrize("op_name,index", [("TANH", 3), ("LOGISTIC", 0), ("PAD", 2),
                                           ("GELU", 1)])     # GELU's code is > 127
def test_unsupported_op_is_named_with_its_index(op_name, index):
    with pytest.raises(ValueError, match=rf"operator {index}: {op_name} is not supported"):
        read_tflite(with_op(op_name, index))


def test_unsupported_op_in_a_qgraph_is_refused():
    g = QGraph([q("a", (1, 8), 0.1, 0), q("b", (1, 8), 0.1, 0)], [QOp("TANH", [0], [1])], [0], [1])
    with pytest.raises(ValueError, match=r"operator 0: unsupported op 'TANH'"):
        g.validate()
    with pytest.raises(ValueError, match="TANH"):
        write_tflite(g)


def test_deprecated_builtin_code_is_honoured(monkeypatch, expected):
    """Older files carry the op only in deprecated_builtin_code (builtin_code is 0 = ADD)."""
    original = (FIXTURES / "conv2d_000.tflite").read_bytes()
    monkeypatch.setattr(tflite, "OperatorCodeAddBuiltinCode", lambda b, code: None)
    data = write_tflite(read_tflite(original))
    m = tflite.Model.GetRootAs(data, 0)
    assert all(m.OperatorCodes(i)._tab.Offset(10) == 0 for i in range(m.OperatorCodesLength()))
    assert [op.op for op in read_tflite(data).ops] == MODELS["conv2d_000"]["ops"]
    x = expected["conv2d_000/x"]
    np.testing.assert_array_equal(run_litert(data, x), expected["conv2d_000/y"])


def test_float_model_is_refused():
    w = np.ones((3, 4), np.float32)
    g = QGraph([QTensor("x", (1, 4), "float32"), QTensor("w", (3, 4), "float32", data=w),
                QTensor("y", (1, 3), "float32")],
               [QOp("FULLY_CONNECTED", [0, 1, -1], [2], {"fused_activation": "NONE",
                                                         "keep_num_dims": False})], [0], [2])
    data = tflite_io._serialize(g, check=False)
    assert run_litert(data, np.ones((1, 4), np.float32)).tolist() == [[4.0, 4.0, 4.0]]
    with pytest.raises(ValueError, match=r"operator 0 \(FULLY_CONNECTED\) computes in float32.*float"):
        read_tflite(data)


def test_unsupported_fused_activation_is_refused(monkeypatch):
    code = tflite.ActivationFunctionType.RELU_N1_TO_1
    add = tflite.FullyConnectedOptionsAddFusedActivationFunction
    monkeypatch.setattr(tflite, "FullyConnectedOptionsAddFusedActivationFunction",
                        lambda b, act: add(b, code))
    data = write_tflite(tiny_graph())
    with pytest.raises(ValueError, match=r"operator 1 \(FULLY_CONNECTED\): fused activation "
                                         r"RELU_N1_TO_1 is not supported"):
        read_tflite(data)


@pytest.mark.parametrize("kind", ["CONV_2D", "DEPTHWISE_CONV_2D"])
def test_dilation_is_refused(monkeypatch, kind):
    name = next(n for n in SMALL if kind in MODELS[n]["ops"])
    g = read_tflite(FIXTURES / f"{name}.tflite")
    prefix = "Conv2D" if kind == "CONV_2D" else "DepthwiseConv2D"
    add = getattr(tflite, f"{prefix}OptionsAddDilationHFactor")
    monkeypatch.setattr(tflite, f"{prefix}OptionsAddDilationHFactor", lambda b, v: add(b, 2))
    index = [op.op for op in g.ops].index(kind)
    with pytest.raises(ValueError, match=rf"operator {index} \({kind}\): dilation 2x1"):
        read_tflite(write_tflite(g))


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\0" * 7, b"hello world, not a model",
                                  b"\x10\0\0\0TFL3" + b"\xff" * 8])
def test_not_a_model_is_a_value_error(data):
    with pytest.raises(ValueError):
        read_tflite(data)


def test_read_takes_paths_and_bytes_only():
    with pytest.raises(TypeError):
        read_tflite(12)


@pytest.mark.parametrize("name", ["dense_000", "concat_000", "gap_000", "mlperf_kws_dscnn"])
def test_truncated_models_raise_value_error(name):
    data = (FIXTURES / f"{name}.tflite").read_bytes()
    cuts = sorted(set(np.linspace(0, len(data) - 1, 60).astype(int)) | {8, 12, 16, 24, 32})
    for n in cuts:
        with pytest.raises(ValueError):
            read_tflite(data[:n])


@pytest.mark.slow
def test_corrupted_models_raise_value_error_or_read(rng):
    """Random byte and word overwrites: a ValueError, or a graph that validates; never a crash."""
    names = ["dense_000", "conv2d_000", "depthwise_000", "add_000", "concat_000", "gap_000",
             "reshape_000", "softmax_000", "mixed_000"]
    refused = 0
    for trial in range(600):
        data = bytearray((FIXTURES / f"{names[trial % len(names)]}.tflite").read_bytes())
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(8, len(data) - 4))
            if rng.random() < 0.5:
                data[pos] = int(rng.integers(256))
            else:
                data[pos:pos + 4] = rng.integers(256, size=4, dtype=np.uint8).tobytes()
        try:
            read_tflite(bytes(data)).validate()
        except ValueError:
            refused += 1
    assert refused > 100


# ---------------------------------------------------------------------------------------------
# QGraph.validate

def _mutations():
    def op_opts(g, **kw):
        g.ops[1].options.update(kw)

    return {
        "tensor index 9 out of range": lambda g: g.ops[1].inputs.__setitem__(1, 9),
        "unsupported op 'TANH'": lambda g: setattr(g.ops[2], "op", "TANH"),
        "int8 tensor without quantization": lambda g: setattr(g.tensors[4], "scale", np.zeros(0, np.float32))
        or setattr(g.tensors[4], "zero_point", np.zeros(0, np.int64)),
        "3 per-channel scales but dimension 1": lambda g: setattr(g.tensors[2], "quantized_dimension", 1),
        "2 scales but 3 zero points": lambda g: setattr(g.tensors[2], "scale", np.ones(2, np.float32)),
        "unsupported fused_activation 'TANH'": lambda g: op_opts(g, fused_activation="TANH"),
        "missing option": lambda g: g.ops[1].options.pop("keep_num_dims"),
        "unknown option": lambda g: op_opts(g, stride_h=1),
        "before any operator writes it": lambda g: g.ops.reverse(),
        "already operator": lambda g: setattr(g.ops[2], "outputs", [4]),
        "constant data must be a int8 array": lambda g: setattr(g.tensors[2], "data",
                                                                g.tensors[2].data.astype(np.int32)),
        "data has shape": lambda g: setattr(g.tensors[2], "data", g.tensors[2].data.T.copy()),
        "must be symmetric": lambda g: setattr(g.tensors[2], "zero_point", np.ones(3, np.int64)),
        "bias ('b') must be a constant int32 tensor of shape (3,)": lambda g: g.tensors.__setitem__(
            3, q("b", (2,), 0.001, 0, np.zeros(2, np.int32), dtype="int32")),
        "unsupported dtype 'uint8'": lambda g: setattr(g.tensors[1], "dtype", "uint8"),
        "scales must be finite and positive": lambda g: setattr(g.tensors[4], "scale",
                                                                np.float32([-1.0])),
        "zero point outside": lambda g: setattr(g.tensors[4], "zero_point", np.int64([200])),
        "never written": lambda g: g.ops.pop(),
        "DEQUANTIZE maps int8 to float32": lambda g: setattr(g.tensors[6], "dtype", "int32"),
    }


@pytest.mark.parametrize("message,mutate", list(_mutations().items()), ids=list(_mutations()))
def test_validate_says_what_is_wrong(message, mutate):
    g = tiny_graph()
    mutate(g)
    with pytest.raises(ValueError, match=re.escape(message)):
        g.validate()
    with pytest.raises(ValueError):
        write_tflite(g)
