"""from_keras: Keras models (live objects or .keras files) imported as tinylearn models.

The fixtures in tests/fixtures/keras/ were made by Keras and TensorFlow (see their README);
these tests never import TensorFlow or Keras: .keras files are read with zipfile and h5py, and a
live model is stood in for by an object with the same duck type (get_config, layers,
get_weights).
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import tinylearn as tl
from tinylearn.keras_io import from_keras

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras"
ALL_LAYERS = FIXTURES / "all_layers.keras"
FMNIST = FIXTURES / "fmnist_cnn.keras"
FMNIST_TFLITE = FIXTURES / "fmnist_cnn_int8.tflite"
RECORD = json.loads((FIXTURES / "fmnist_cnn.json").read_text())


@pytest.fixture(scope="module")
def all_layers_io():
    with np.load(FIXTURES / "all_layers_io.npz") as z:
        return z["x"], z["y"]


def read_archive(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_archive(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return path


def edited(tmp_path: Path, edit, src: Path = ALL_LAYERS) -> Path:
    """A copy of a .keras file whose config.json went through edit(config)."""
    files = read_archive(src)
    config = json.loads(files["config.json"])
    edit(config)
    files["config.json"] = json.dumps(config).encode()
    return write_archive(tmp_path / "edited.keras", files)


def layer_entry(config: dict, name: str) -> dict:
    return next(e for e in config["config"]["layers"] if e["config"]["name"] == name)


def h5_weights_by_name(data: bytes) -> dict:
    """{layer name: [arrays]} from a Keras 3 model.weights.h5 (layers/<key>/vars, name attribute)."""
    out = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        for key in f["layers"]:
            v = f["layers"][key]["vars"]
            out[v.attrs["name"]] = [v[str(i)][()] for i in range(len(v))]
    return out


class FakeLayer:
    def __init__(self, name: str, weights: list):
        self.name, self._weights = name, weights

    def get_weights(self):
        return [np.array(w) for w in self._weights]


class FakeKerasModel:
    """What from_keras uses of a live keras.Model: get_config() and layers[i].get_weights()."""

    def __init__(self, config: dict, weights: dict):
        self._config = config
        self.layers = [FakeLayer(e["config"]["name"], weights.get(e["config"]["name"], []))
                       for e in config["layers"]]

    def get_config(self):
        return json.loads(json.dumps(self._config))


# ---------------------------------------------------------------------------------------------
# Every supported layer, against Keras's outputs

def test_all_layers_predicts_what_keras_predicted(all_layers_io):
    x, y = all_layers_io
    model = from_keras(ALL_LAYERS)
    assert isinstance(model, tl.Model) and not isinstance(model, tl.Sequential)
    np.testing.assert_allclose(model.predict(x), y, rtol=1e-4, atol=1e-5)


def test_all_layers_keeps_names_and_covers_every_layer_type():
    config = json.loads(read_archive(ALL_LAYERS)["config.json"])
    entries = [e for e in config["config"]["layers"] if e["class_name"] != "InputLayer"]
    model = from_keras(ALL_LAYERS)
    assert model.name == config["config"]["name"] == "all_layers"
    assert sorted(layer.name for layer in model.layers) == sorted(e["config"]["name"] for e in entries)
    assert model.input_shape == (12, 12, 3)
    classes = {e["class_name"] for e in config["config"]["layers"]}
    assert classes == {"InputLayer", "Dense", "Conv2D", "DepthwiseConv2D", "MaxPooling2D",
                       "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape", "Dropout",
                       "BatchNormalization", "Add", "Concatenate", "Activation", "ReLU", "Softmax"}
    by_name = {layer.name: layer for layer in model.layers}
    assert by_name["relu6_dw"].activation == "relu6"
    assert by_name["dw_mult2"].depth_multiplier == 2
    assert by_name["bn_res"].center is False and by_name["bn_dw"].scale is False
    assert by_name["avgpool_same"].padding == "same" and by_name["avgpool_same"].strides == (2, 2)
    # The model trains on as any tinylearn model (weights in tinylearn's own order).
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 12, 12, 3), np.float32), np.full((4, 10), 0.1, np.float32), epochs=1, verbose=0)


def test_live_model_goes_through_the_same_walk(all_layers_io):
    """A live model (duck-typed: get_config() and each layer's get_weights()) imports the same."""
    x, y = all_layers_io
    files = read_archive(ALL_LAYERS)
    config = json.loads(files["config.json"])["config"]
    fake = FakeKerasModel(config, h5_weights_by_name(files["model.weights.h5"]))
    model = from_keras(fake)
    np.testing.assert_allclose(model.predict(x), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.predict(x), from_keras(ALL_LAYERS).predict(x))


def test_weights_matched_by_keras_key_without_name_attributes(tmp_path, all_layers_io):
    """Older Keras 3 files have no name attribute on layers/<key>/vars: the key (snake-case class
    name numbered in model order) finds the layer."""
    x, y = all_layers_io
    files = read_archive(ALL_LAYERS)
    h5_path = tmp_path / "w.h5"
    h5_path.write_bytes(files["model.weights.h5"])
    with h5py.File(h5_path, "r+") as f:
        for key in f["layers"]:
            del f["layers"][key]["vars"].attrs["name"]
    files["model.weights.h5"] = h5_path.read_bytes()
    model = from_keras(write_archive(tmp_path / "noattrs.keras", files))
    np.testing.assert_allclose(model.predict(x), y, rtol=1e-4, atol=1e-5)


def test_unzipped_folder(tmp_path, all_layers_io):
    x, y = all_layers_io
    with zipfile.ZipFile(ALL_LAYERS) as z:
        z.extractall(tmp_path / "model")
    np.testing.assert_allclose(from_keras(tmp_path / "model").predict(x), y, rtol=1e-4, atol=1e-5)


def test_sequential_file_becomes_sequential():
    model = from_keras(str(FMNIST))
    assert isinstance(model, tl.Sequential)
    assert model.name == "fmnist_cnn"
    assert [layer.name for layer in model.layers] == ["conv1", "pool1", "conv2", "pool2", "flatten",
                                                      "dense1", "logits"]
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert model.input_shape == (28, 28, 1) and model.output_shape == (10,)
    assert model.count_params() == RECORD["params"]


# ---------------------------------------------------------------------------------------------
# tf.keras 2 configurations (nested-list inbound nodes, batch_input_shape), as live models

def _keras2_dense(name, units, activation, inbound):
    return {"class_name": "Dense", "name": name, "inbound_nodes": inbound,
            "config": {"name": name, "trainable": True, "dtype": "float32", "units": units,
                       "activation": activation, "use_bias": True,
                       "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                       "bias_initializer": {"class_name": "Zeros", "config": {}},
                       "kernel_regularizer": None, "bias_regularizer": None,
                       "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}}


def test_tf_keras2_functional_config(rng):
    config = {"name": "model", "layers": [
        {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 5], "dtype": "float32", "sparse": False,
                    "ragged": False, "name": "input_1"}},
        _keras2_dense("a", 4, "relu", [[["input_1", 0, 0, {}]]]),
        _keras2_dense("b", 4, "tanh", [[["input_1", 0, 0, {}]]]),
        {"class_name": "Add", "name": "add", "inbound_nodes": [[["a", 0, 0, {}], ["b", 0, 0, {}]]],
         "config": {"name": "add", "trainable": True, "dtype": "float32"}},
        _keras2_dense("out", 3, "softmax", [[["add", 0, 0, {}]]]),
    ], "input_layers": [["input_1", 0, 0]], "output_layers": [["out", 0, 0]]}
    w = {n: [rng.normal(size=s).astype(np.float32), rng.normal(size=s[1]).astype(np.float32)]
         for n, s in (("a", (5, 4)), ("b", (5, 4)), ("out", (4, 3)))}
    model = from_keras(FakeKerasModel(config, w))
    x = rng.normal(size=(7, 5)).astype(np.float32)
    h = np.maximum(x @ w["a"][0] + w["a"][1], 0) + np.tanh(x @ w["b"][0] + w["b"][1])
    z = h @ w["out"][0] + w["out"][1]
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)


def test_tf_keras2_sequential_without_input_layer(rng):
    first = _keras2_dense("d1", 3, "sigmoid", None)["config"]
    first["batch_input_shape"] = [None, 2]
    config = {"name": "sequential", "layers": [{"class_name": "Dense", "config": first}]}
    w = {"d1": [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]}
    model = from_keras(FakeKerasModel(config, w))
    assert isinstance(model, tl.Sequential) and model.input_shape == (2,)
    x = rng.normal(size=(4, 2)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), 1 / (1 + np.exp(-(x @ w["d1"][0] + w["d1"][1]))),
                               rtol=1e-5, atol=1e-6)


def test_frozen_keras_layers_stay_frozen(rng):
    first = _keras2_dense("d1", 3, "relu", None)["config"]
    first["batch_input_shape"] = [None, 2]
    second = _keras2_dense("d2", 1, None, None)["config"]
    first["trainable"] = False  # Keras's config of a frozen layer
    config = {"name": "sequential", "layers": [{"class_name": "Dense", "config": first},
                                               {"class_name": "Dense", "config": second}]}
    w = {"d1": [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)],
         "d2": [rng.normal(size=(3, 1)).astype(np.float32), rng.normal(size=1).astype(np.float32)]}
    model = from_keras(FakeKerasModel(config, w))
    assert [layer.trainable for layer in model.layers] == [False, True]
    assert [a.shape for a in model.trainable_weights] == [(3, 1), (1,)]


# ---------------------------------------------------------------------------------------------
# What tinylearn does not have: ValueError naming the Keras layer and what is unsupported

def _set(name, **options):
    def edit(config):
        layer_entry(config, name)["config"].update(options)
    return edit


def _retype(name, class_name):
    def edit(config):
        layer_entry(config, name)["class_name"] = class_name
    return edit


@pytest.mark.parametrize("edit, layer, cls, what", [
    (_retype("relu_stem", "LeakyReLU"), "relu_stem", "LeakyReLU", "layer type 'LeakyReLU'"),
    (_retype("flatten", "GlobalMaxPooling2D"), "flatten", "GlobalMaxPooling2D", "GlobalMaxPooling2D"),
    (_set("conv_stem", dilation_rate=[2, 2]), "conv_stem", "Conv2D", "dilation_rate"),
    (_set("conv_res", data_format="channels_first"), "conv_res", "Conv2D", "data_format"),
    (_set("conv_s2", groups=2), "conv_s2", "Conv2D", "groups"),
    (_set("conv_s2", padding="causal"), "conv_s2", "Conv2D", "padding"),
    (_set("dw_mult2", dilation_rate=[1, 2]), "dw_mult2", "DepthwiseConv2D", "dilation_rate"),
    (_set("maxpool", data_format="channels_first"), "maxpool", "MaxPooling2D", "data_format"),
    (_set("dense_g", activation="gelu"), "dense_g", "Dense", "activation 'gelu'"),
    (_set("act_tanh", activation="swish"), "act_tanh", "Activation", "activation 'swish'"),
    (_set("relu_stem", max_value=3.0), "relu_stem", "ReLU", "max_value"),
    (_set("relu_stem", negative_slope=0.1), "relu_stem", "ReLU", "negative_slope"),
    (_set("relu_stem", threshold=0.5), "relu_stem", "ReLU", "threshold"),
    (_set("bn_stem", axis=1), "bn_stem", "BatchNormalization", "axis"),
    (_set("bn_stem", renorm=True), "bn_stem", "BatchNormalization", "renorm"),
    (_set("concat", axis=1), "concat", "Concatenate", "axis"),
    (_set("softmax", axis=0), "softmax", "Softmax", "axis"),
    (_set("gap", keepdims=True), "gap", "GlobalAveragePooling2D", "keepdims"),
    (_set("logits", dtype={"module": "keras", "class_name": "DTypePolicy",
                           "config": {"name": "mixed_float16"}}), "logits", "Dense", "mixed_float16"),
    (_set("dense_hidden", quantization_config={"mode": "int8"}), "dense_hidden", "Dense",
     "quantization_config"),
])
def test_unsupported_layer_or_option_names_the_layer(tmp_path, edit, layer, cls, what):
    path = edited(tmp_path, edit)
    with pytest.raises(ValueError) as info:
        from_keras(path)
    msg = str(info.value)
    assert f"'{layer}' ({cls})" in msg, msg
    assert what in msg, msg


def test_unsupported_layer_lists_what_is_supported(tmp_path):
    with pytest.raises(ValueError, match=r"'relu_stem' \(PReLU\).*tinylearn imports .*DepthwiseConv2D"):
        from_keras(edited(tmp_path, _retype("relu_stem", "PReLU")))


def test_several_inputs_or_outputs_are_refused(tmp_path):
    def two_outputs(config):
        config["config"]["output_layers"] = [["softmax", 0, 0], ["logits", 0, 0]]
    with pytest.raises(ValueError, match="1 inputs and 2 outputs"):
        from_keras(edited(tmp_path, two_outputs))


def test_weights_that_do_not_fit_name_the_layer(tmp_path):
    with pytest.raises(ValueError, match=r"layer 'logits': weight 0 has shape \(16, 10\) in Keras, "
                                         r"tinylearn expects \(16, 9\)"):
        from_keras(edited(tmp_path, _set("logits", units=9)))


def test_missing_weights_name_the_layer(tmp_path):
    files = read_archive(ALL_LAYERS)
    h5_path = tmp_path / "w.h5"
    h5_path.write_bytes(files["model.weights.h5"])
    with h5py.File(h5_path, "r+") as f:
        for key in list(f["layers"]):
            if f["layers"][key]["vars"].attrs["name"] == "dense_g":
                del f["layers"][key]
    files["model.weights.h5"] = h5_path.read_bytes()
    with pytest.raises(ValueError, match="layer 'dense_g': no weights for it"):
        from_keras(write_archive(tmp_path / "m.keras", files))


def test_dangling_input_reference(tmp_path):
    def dangle(config):
        layer_entry(config, "residual")["inbound_nodes"][0]["args"][0][1]["config"]["keras_history"] = \
            ["nowhere", 0, 0]
    with pytest.raises(ValueError, match=r"'residual' \(Add\): its input 'nowhere'"):
        from_keras(edited(tmp_path, dangle))


# ---------------------------------------------------------------------------------------------
# Files that are not .keras models: clear errors, never a crash

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        from_keras(tmp_path / "nothing.keras")


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable .keras file"),
    (b"this is not a zip archive at all" * 10, "not a readable .keras file"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "legacy HDF5"),
])
def test_not_a_keras_file(tmp_path, content, match):
    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        from_keras(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
    data = ALL_LAYERS.read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ValueError, match="from_keras"):
        from_keras(path)


def test_corrupted_bytes(tmp_path, rng):
    """Flipped bytes anywhere: a ValueError (a CRC, JSON, HDF5 or shape error), or, where the
    damage misses everything read, a model (never a crash or another exception)."""
    data = bytearray(ALL_LAYERS.read_bytes())
    for i, pos in enumerate(rng.integers(0, len(data), 12)):
        bad = bytearray(data)
        bad[pos:pos + 8] = rng.integers(0, 256, len(bad[pos:pos + 8]), dtype=np.uint8).tobytes()
        path = tmp_path / f"flip{i}.keras"
        path.write_bytes(bytes(bad))
        try:
            from_keras(path)
        except ValueError as e:
            assert "from_keras" in str(e)


@pytest.mark.parametrize("drop, match", [("config.json", "no config.json"),
                                         ("model.weights.h5", "no model.weights.h5")])
def test_archive_without_a_member(tmp_path, drop, match):
    files = {n: d for n, d in read_archive(ALL_LAYERS).items() if n != drop}
    with pytest.raises(ValueError, match=match):
        from_keras(write_archive(tmp_path / "m.keras", files))


@pytest.mark.parametrize("member, content, match", [
    ("config.json", b"{not json", "not valid JSON"),
    ("config.json", b"[1, 2, 3]", "does not describe a Keras model"),
    ("config.json", json.dumps({"class_name": "MyModel", "config": {"units": 3}}).encode(), "lists no layers"),
    ("model.weights.h5", b"garbage" * 100, "cannot be read as HDF5"),
])
def test_archive_with_a_bad_member(tmp_path, member, content, match):
    files = read_archive(ALL_LAYERS)
    files[member] = content
    with pytest.raises(ValueError, match=match):
        from_keras(write_archive(tmp_path / "m.keras", files))


@pytest.mark.parametrize("edit", [
    lambda c: layer_entry(c, "residual").update(inbound_nodes=1.5),
    lambda c: layer_entry(c, "conv_stem")["config"].update(kernel_size=[[3], 3]),
    lambda c: layer_entry(c, "dropout")["config"].update(rate=[0.5]),
    lambda c: c["config"].update(output_layers=[["softmax", [0], 0]]),
    lambda c: c["config"]["layers"][3].update(config="Conv2D"),
])
def test_malformed_configuration(tmp_path, edit):
    with pytest.raises(ValueError, match="from_keras"):
        from_keras(edited(tmp_path, edit))


def test_importing_needs_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, tinylearn.keras_io as k; k.from_keras(sys.argv[1]); "
            "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(ALL_LAYERS)], check=True)


def test_not_a_model_object():
    with pytest.raises(TypeError, match="expected a keras.Model or the path of a .keras file"):
        from_keras(42)


# ---------------------------------------------------------------------------------------------
# The Fashion-MNIST CNN trained in Keras: float, TFLite int8 and tinylearn int8 accuracies

@pytest.fixture(scope="module")
def fmnist():
    (x_train, _), (x_test, y_test) = tl.datasets.fashion_mnist.load_data()
    x_train = (x_train[:500].astype(np.float32) / 255.0)[..., None]
    x_test = (x_test.astype(np.float32) / 255.0)[..., None]
    return x_train, x_test, y_test


def litert_reference_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """As the fixture script measured it: LiteRT BUILTIN_REF, sample by sample, argmax of int8."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=model_bytes, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    scale, zero = inp["quantization"]
    xq = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    hits = 0
    for i in range(len(x)):
        interp.set_tensor(inp["index"], xq[i:i + 1])
        interp.invoke()
        hits += int(np.argmax(interp.get_tensor(out["index"])[0]) == y[i])
    return hits / len(x)


@pytest.mark.slow
def test_fmnist_cnn_float_accuracy_matches_keras(fmnist):
    _, x_test, y_test = fmnist
    model = from_keras(FMNIST)
    acc = float(np.mean(np.argmax(model.predict(x_test), axis=1) == y_test))
    assert abs(acc - RECORD["keras_float_test_accuracy"]) <= 0.0005, (acc, RECORD["keras_float_test_accuracy"])


@pytest.mark.slow
def test_fmnist_cnn_tflite_int8_accuracy_as_recorded(fmnist):
    _, x_test, y_test = fmnist
    acc = litert_reference_accuracy(FMNIST_TFLITE.read_bytes(), x_test, y_test)
    assert acc == RECORD["tflite_int8_test_accuracy"]


@pytest.mark.slow
def test_fmnist_cnn_tinylearn_int8_close_to_tflite(fmnist):
    x_train, x_test, y_test = fmnist
    q = tl.convert(from_keras(FMNIST), x_train)
    acc = float(np.mean(np.argmax(q.predict(x_test), axis=1) == y_test))
    assert abs(acc - RECORD["tflite_int8_test_accuracy"]) <= 0.002, (acc, RECORD["tflite_int8_test_accuracy"])
