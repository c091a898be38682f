"""Quantization-aware training (tl.optimize.quantize_model) against NumPy references of TFLite's
int8 numerics and against the int8 model tl.convert makes of it."""

import numpy as np
import pytest

import tinylearn as tl
from tinylearn import layers as L

SEED = 3


def _params(lo, hi):
    """TFLite's asymmetric int8 parameters for [lo, hi] (widened to hold 0, zero point nudged)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(np.sign(v := -128.0 - lo / float(scale)) * np.floor(abs(v) + 0.5), -128, 127))
    return scale, zp


def _fq(x, scale, zp):
    t = x.astype(np.float64) / float(scale)
    q = np.clip(np.sign(t) * np.floor(np.abs(t) + 0.5) + zp, -128, 127)
    return ((q - zp) * float(scale)).astype(np.float32)


def _weights_fq(w, axis_last_channels: bool):
    """Symmetric int8 fake quantization: per output channel (last axis) or per tensor."""
    m = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0) if axis_last_channels else np.abs(w).max()
    s = np.where(m > 0, m / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.sign(w / s) * np.floor(np.abs(w / s) + 0.5), -127, 127)
    return (q * s).astype(np.float32)


def _data(n=256, shape=(8, 8, 1), classes=4, seed=SEED):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def _cnn(softmax=True, bn=True):
    layers = [L.Conv2D(8, 3, padding="same", use_bias=not bn, input_shape=(8, 8, 1))]
    layers += [L.BatchNormalization(), L.ReLU()] if bn else [L.ReLU()]
    layers += [L.DepthwiseConv2D(3, padding="same"), L.BatchNormalization(), L.ReLU(max_value=6),
               L.MaxPooling2D(), L.Conv2D(8, 1), L.BatchNormalization(), L.ReLU(),
               L.AveragePooling2D(), L.Flatten(), L.Dense(16, activation="relu"),
               L.Dense(4, activation="softmax" if softmax else None)]
    return tl.Sequential(layers)


def _trained(model, x, y, epochs=2, from_logits=False):
    model.compile("adam", tl.losses.SparseCategoricalCrossentropy(from_logits=from_logits), ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, seed=SEED, verbose=0)
    return model


def _qat(model, x, y, epochs=2, from_logits=False, **kw):
    qat = tl.optimize.quantize_model(model, **kw)
    qat.compile(tl.optimizers.Adam(1e-3), tl.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                ["accuracy"])
    qat.fit(x, y, epochs=epochs, batch_size=32, seed=SEED, verbose=0)
    return qat


def test_before_training_the_qat_model_computes_the_folded_float_model_with_quantized_kernels():
    x, y = _data()
    model = _trained(_cnn(softmax=False), x, y, from_logits=True)
    qat = tl.optimize.quantize_model(model)
    kinds = [la.kind for la in qat.layers]
    assert "BatchNormalization" not in kinds  # folded into the convolutions
    assert kinds[0] == "FakeQuant"            # the input's quantizer
    # Before any training step its quantizers are the identity; with float kernels (weight_bits
    # 0, the core rebuilt from the configs) it computes the float model: BN folding is exact.
    unq = tl.optimize.quantize_model(model)
    weights = unq.get_weights()
    for la in unq.layers:
        if getattr(la, "weight_bits", 0):
            la.weight_bits = 0
    unq.build()
    unq.set_weights(weights)
    np.testing.assert_allclose(unq.predict(x), model.predict(x), rtol=1e-4, atol=1e-5)


def test_kernels_are_fake_quantized_as_the_converter_quantizes_them():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    model = tl.Sequential([L.Dense(3, input_shape=(5,))])
    model.build()
    model.layers[0].set_weights([rng.normal(size=(5, 3)).astype(np.float32),
                                 rng.normal(size=3).astype(np.float32)])
    qat = tl.optimize.quantize_model(model)
    qat.layers[1].trainable = False  # the step changes no weight: ranges only
    qat.compile("sgd", "mse")
    qat.fit(x, np.zeros((64, 3), np.float32), epochs=1, batch_size=64, shuffle=False, seed=SEED, verbose=0)
    k, b = qat.layers[1].get_weights()
    in_fq = _fq(x, *_params(x.min(), x.max()))
    z = in_fq @ _weights_fq(k, axis_last_channels=False) + b
    out_fq = qat.layers[2].get_weights()
    np.testing.assert_allclose(qat.predict(x), _fq(z, *_params(out_fq[0][0], out_fq[1][0])), atol=1e-5)
    # The int8 model's kernel is the same grid: per-tensor scale max|w| / 127.
    q = tl.convert(qat)
    kernel = [t for t in q.graph.tensors if t.name.endswith("/kernel")][0]
    np.testing.assert_allclose(kernel.scale, [np.abs(k).max() / 127], rtol=1e-6)


def test_moving_average_ranges_follow_tfmot_and_are_saved_as_weights():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(96, 4)).astype(np.float32) * np.arange(1, 97)[:, None].astype(np.float32) / 20
    model = tl.Sequential([L.Dense(2, input_shape=(4,))])
    model.build()
    qat = tl.optimize.quantize_model(model, ema_decay=0.9)
    qat.compile("sgd", "mse")
    qat.fit(x, np.zeros((96, 2), np.float32), epochs=1, batch_size=32, shuffle=False, seed=SEED, verbose=0)
    lo = hi = None
    for s in range(0, 96, 32):
        b = x[s:s + 32]
        lo = b.min() if lo is None else 0.9 * lo + 0.1 * b.min()
        hi = b.max() if hi is None else 0.9 * hi + 0.1 * b.max()
    mn, mx, steps = qat.layers[0].get_weights()
    np.testing.assert_allclose([mn[0], mx[0]], [lo, hi], rtol=1e-5)
    assert steps[0] == 3
    assert len(qat.layers[0].non_trainable_weights) == 3 and not qat.layers[0].trainable_weights


def test_quant_delay_keeps_activations_float_until_the_step():
    x, y = _data(64, (6,), 3)
    model = tl.Sequential([L.Dense(3, input_shape=(6,))])
    model.build()
    qat = _qat(model, x, y, epochs=1, from_logits=True, quant_delay=100)  # 2 steps < 100
    k, b = qat.layers[1].get_weights()
    np.testing.assert_allclose(qat.predict(x), x @ _weights_fq(k, False) + b, rtol=1e-5, atol=1e-6)
    qat.fit(x, y, epochs=60, batch_size=32, seed=SEED, verbose=0)  # 120 steps: past the delay
    k, b = qat.layers[1].get_weights()
    assert not np.allclose(qat.predict(x), x @ _weights_fq(k, False) + b, atol=1e-6)


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_convert_needs_no_data_and_the_int8_model_computes_what_qat_simulated(softmax):
    x, y = _data(512)
    model = _trained(_cnn(softmax), x, y, from_logits=not softmax)
    qat = _qat(model, x, y, from_logits=not softmax)
    q = tl.convert(qat)
    sim, i8 = qat.predict(x), q.predict(x)
    lsb = np.abs(sim - i8) / q.output_scale
    # Logits: the int8 kernels' fixed-point rounding and float accumulation order leave an LSB
    # here and there. Softmax: a logit one LSB off moves every probability of its sample, by up to
    # scale_logits * 256 / 4 LSBs of 1/256.
    assert np.mean(lsb <= 1 + 1e-4) >= (0.999 if not softmax else 0.98)
    assert np.mean(sim.argmax(1) == i8.argmax(1)) >= 0.99
    assert np.mean(q.predict(x).argmax(1) == y) >= np.mean(model.predict(x).argmax(1) == y) - 0.05


@pytest.mark.parametrize("app", ["ds_cnn", "resnet8", "mobilenet_v1", "fc_autoencoder"])
def test_applications_train_convert_save_and_load(app, tmp_path):
    rng = np.random.default_rng(SEED)
    kw = {"input_shape": (32, 32, 3)} if app == "mobilenet_v1" else {}
    model = getattr(tl.applications, app)(**kw)
    model.build()
    shape = model.input_shape
    x = rng.normal(size=(48, *shape)).astype(np.float32)
    out = model.predict(x[:1]).shape[1]
    y, loss = (x, "mse") if app == "fc_autoencoder" else (rng.integers(0, out, 48), "sparse_categorical_crossentropy")
    model.compile("adam", loss)  # QAT fine-tunes a trained model: BN statistics are frozen in it
    model.fit(x, y, epochs=2, batch_size=16, seed=SEED, verbose=0)
    qat = tl.optimize.quantize_model(model)
    qat.compile(tl.optimizers.Adam(1e-3), loss)
    qat.fit(x, y, epochs=2, batch_size=16, seed=SEED, verbose=0)
    q = tl.convert(qat)
    sim, i8 = qat.predict(x), q.predict(x)
    # A one-LSB difference (fixed-point requantization vs float) in an early layer can grow
    # through the later ones: the autoencoder's ten dense layers reach 99.8% here.
    assert np.mean(np.abs(sim - i8) / q.output_scale <= 1 + 1e-4) >= (0.995 if app == "fc_autoencoder" else 0.999)
    path = qat.save(tmp_path / "qat.tlm")
    back = tl.load_model(path)
    np.testing.assert_array_equal(back.predict(x), sim)
    assert tl.convert(back).to_bytes() == q.to_bytes()


def test_training_resumes_from_a_saved_qat_model_as_if_never_stopped(tmp_path):
    x, y = _data(128)
    model = _trained(_cnn(), x, y, epochs=1)
    a = _qat(model, x, y, epochs=1)
    b = tl.load_model(a.save(tmp_path / "a.tlm"))
    a.fit(x, y, epochs=2, initial_epoch=1, batch_size=32, seed=SEED, verbose=0)
    b.fit(x, y, epochs=2, initial_epoch=1, batch_size=32, seed=SEED, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_functional_nested_and_frozen_layers():
    x, y = _data(64, (6,), 3)
    inner = tl.Sequential([L.Dense(8, activation="relu", input_shape=(6,)), L.Dense(8)])
    inp = tl.Input((6,))
    h = inner(inp)
    h = L.ReLU()(L.Add()([h, L.Dense(8)(inp)]))
    model = tl.Model(inp, L.Dense(3, activation="softmax")(h))
    model.build()
    inner.layers[0].trainable = False
    qat = tl.optimize.quantize_model(model)
    frozen = qat.get_layer("quant_" + inner.layers[0].name)
    assert not frozen.trainable
    before = frozen.get_weights()
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=2, batch_size=16, seed=SEED, verbose=0)
    for w0, w1 in zip(before, frozen.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    q = tl.convert(qat)
    ops = [op.op for op in q.graph.ops]
    assert ops.count("ADD") == 1 and ops[-1] == "SOFTMAX"
    assert np.mean(np.abs(qat.predict(x) - q.predict(x)) * 256 <= 1 + 1e-4) >= 0.99
    assert not any(la.kind == "FakeQuant" for la in model._leaves())  # the original is intact


def test_unsupported_layers_and_misuse_raise_clear_errors():
    x, y = _data(32, (4,), 2)
    sig = tl.Sequential([L.Dense(4, activation="sigmoid", input_shape=(4,), name="gate"), L.Dense(2)])
    sig.build()
    with pytest.raises(tl.UnsupportedModelError, match="'gate'.*sigmoid"):
        tl.optimize.quantize_model(sig)
    bn_alone = tl.Sequential([L.Dense(4, activation="relu", input_shape=(4,)), L.BatchNormalization(name="bn")])
    bn_alone.build()
    with pytest.raises(tl.UnsupportedModelError, match="'bn'.*cannot be folded"):
        tl.optimize.quantize_model(bn_alone)
    ok = tl.Sequential([L.Dense(2, input_shape=(4,))])
    ok.build()
    qat = tl.optimize.quantize_model(ok)
    with pytest.raises(ValueError, match="already quantization-aware"):
        tl.optimize.quantize_model(qat)
    with pytest.raises(ValueError, match="no activation range yet.*fit"):
        tl.convert(qat)
    with pytest.raises(TypeError, match="representative_data is required"):
        tl.convert(ok)
    with pytest.raises(TypeError, match="tinylearn model"):
        tl.optimize.quantize_model("model.tlm")
    with pytest.raises(ValueError, match="ema_decay"):
        tl.optimize.quantize_model(ok, ema_decay=1.0)
    with pytest.raises(ValueError, match="quant_delay"):
        tl.optimize.quantize_model(ok, quant_delay=-1)


def test_report_counts_a_qat_model_like_its_int8_conversion():
    from tinylearn.report import model_macs

    x, y = _data(128)
    model = _trained(_cnn(), x, y, epochs=1)
    qat = _qat(model, x, y, epochs=1)
    q = tl.convert(qat)
    r = tl.report({"float": model, "qat": qat, "qat int8": q}, x, y)
    rows = {row["variant"]: row for row in r.rows}
    assert model_macs(qat) == model_macs(model) == rows["qat int8"]["macs"] == rows["qat"]["macs"]
    assert rows["qat"]["accuracy"] == pytest.approx(float(np.mean(qat.predict(x).argmax(1) == y)))
    assert rows["qat int8"]["accuracy"] == pytest.approx(float(np.mean(q.predict(x).argmax(1) == y)))
