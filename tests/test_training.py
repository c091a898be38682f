"""The training core against NumPy references, and the sine acceptance figures."""

import _thread
import threading

import numpy as np
import pytest

import tinylearn as tl
from conftest import SEED, sine_model


def numpy_forward(weights, x, activations):
    """Forward pass of a Dense stack in float64; returns every layer's pre- and post-activation."""
    a, cache = x.astype(np.float64), []
    for (w, b), act in zip(zip(weights[::2], weights[1::2]), activations):
        z = a @ w.astype(np.float64) + b
        out = np.maximum(z, 0) if act == "relu" else z
        cache.append((a, z))
        a = out
    return a, cache


def numpy_grads(weights, x, y, activations):
    """MSE gradients by backpropagation in float64."""
    pred, cache = numpy_forward(weights, x, activations)
    d = 2.0 * (pred - y) / pred.size
    grads = []
    for (w, _), act, (a_in, z) in reversed(list(zip(zip(weights[::2], weights[1::2]), activations, cache))):
        if act == "relu":
            d = d * (z > 0)
        grads = [a_in.T @ d, d.sum(axis=0)] + grads
        d = d @ w.T.astype(np.float64)
    return grads


def test_dense_forward_matches_numpy(rng):
    model = tl.Sequential([tl.layers.Dense(7, activation="relu", input_shape=(5,)), tl.layers.Dense(3)])
    model.build(seed=3)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    x = rng.normal(size=(11, 5)).astype(np.float32)
    expected, _ = numpy_forward(weights, x, ["relu", "linear"])
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_one_sgd_step_matches_numpy_backprop(rng):
    model = tl.Sequential([tl.layers.Dense(6, activation="relu", input_shape=(3,)),
                           tl.layers.Dense(4, activation="relu"), tl.layers.Dense(2)])
    model.build(seed=5)
    w0 = [w.copy() for w in model.get_weights()]
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.normal(size=(10, 2)).astype(np.float32)
    lr = 0.05
    model.compile(optimizer=tl.optimizers.SGD(learning_rate=lr), loss="mse")
    model.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    grads = numpy_grads(w0, x, y, ["relu", "relu", "linear"])
    for w_new, w_old, g in zip(model.get_weights(), w0, grads):
        np.testing.assert_allclose(w_new, w_old - lr * g, rtol=1e-4, atol=1e-6)


def test_adam_steps_match_numpy(rng):
    model = tl.Sequential([tl.layers.Dense(4, input_shape=(3,)), tl.layers.Dense(1)])
    model.build(seed=2)
    w = [v.astype(np.float64) for v in model.get_weights()]
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    model.compile(optimizer=tl.optimizers.Adam(learning_rate=lr), loss="mse")
    model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    m = [np.zeros_like(v) for v in w]
    v2 = [np.zeros_like(v) for v in w]
    for t in range(1, 4):
        g = numpy_grads(w, x, y, ["linear", "linear"])
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        for k in range(len(w)):
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v2[k] = b2 * v2[k] + (1 - b2) * g[k] ** 2
            w[k] = w[k] - alpha * m[k] / (np.sqrt(v2[k]) + eps)
    for got, want in zip(model.get_weights(), w):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_history_and_evaluate_agree(trained_sine, sine_split):
    model, history = trained_sine
    assert sorted(history.history) == ["loss", "mae", "val_loss", "val_mae"]
    assert all(len(v) == 500 for v in history.history.values())
    assert history.epoch == list(range(500))
    val_loss, val_mae = model.evaluate(*sine_split["val"])
    xv, yv = sine_split["val"]
    pred = model.predict(xv)
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-5)
    assert val_loss == pytest.approx(np.mean((pred - yv) ** 2), rel=1e-5)
    assert val_mae == pytest.approx(np.mean(np.abs(pred - yv)), rel=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0] / 5


def test_sine_reaches_target_mse(trained_sine, sine_split):
    model, _ = trained_sine
    x_test, y_test = sine_split["test"]
    mse = float(np.mean((model.predict(x_test) - y_test) ** 2))
    assert mse <= 0.015, f"float test MSE {mse:.4f} > 0.015"


def test_same_seed_same_weights_other_seed_differs(sine_split):
    x, y = sine_split["train"]
    runs = []
    for seed in (7, 7, 8):
        m = sine_model()
        m.compile(optimizer="adam", loss="mse")
        m.fit(x, y, epochs=3, batch_size=64, seed=seed, verbose=0)
        runs.append(m.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_summary_counts_params_and_bytes(capsys):
    sine_model().summary()
    out = capsys.readouterr().out
    assert "Total params: 321 (1,284 bytes float32)" in out
    # int8: 16 + 256 + 16 weights as int8, 33 biases as int32
    assert f"As int8: {16 + 256 + 16 + 4 * 33} bytes" in out
    assert out.count("Dense") == 3


def test_verbose_progress(sine_split, capsys):
    x, y = sine_split["train"]
    m = sine_model()
    m.compile(optimizer="adam", loss="mse")
    m.fit(x, y, epochs=3, batch_size=64, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    m.fit(x, y, epochs=3, batch_size=64, verbose=1)
    assert "3/3" in capsys.readouterr().out
    m.fit(x, y, epochs=2, batch_size=64, verbose=2)
    assert "Epoch 2/2" in capsys.readouterr().out


def test_ctrl_c_stops_training_and_leaves_model_usable(sine_split):
    x, y = sine_split["train"]
    m = sine_model()
    m.compile(optimizer="adam", loss="mse")
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.fit(x, y, epochs=300_000, batch_size=64, verbose=0)  # ~1 min if never interrupted
    finally:
        timer.cancel()
    epochs_run = len(m.history.epoch)
    assert 0 < epochs_run < 300_000
    assert np.isfinite(m.predict(x)).all()
    # It trains on from where it stopped.
    before = m.get_weights()
    m.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert not np.array_equal(before[0], m.get_weights()[0])
    assert np.isfinite(m.evaluate(x, y))
