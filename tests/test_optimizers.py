"""AdamW, learning-rate schedules, L2 regularization and initializers against NumPy."""

import numpy as np
import pytest

import tinylearn as tl

L = tl.layers


def linear_model(seed=1, **kw):
    m = tl.Sequential([L.Dense(2, input_shape=(3,), **kw)])
    m.build(seed=seed)
    return m


def mse_grads(w, b, x, y):
    d = 2 * (x @ w + b - y) / y.size
    return x.T @ d, d.sum(axis=0)


def test_adamw_matches_numpy(rng):
    x = rng.normal(size=(8, 3))
    y = rng.normal(size=(8, 2))
    m = linear_model()
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-7
    m.compile(optimizer=tl.optimizers.AdamW(learning_rate=lr, weight_decay=wd), loss="mse")
    w, b = (v.astype(np.float64) for v in m.get_weights())
    m.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    params, ms, vs = [w, b], [0, 0], [0, 0]
    for t in range(1, 4):
        grads = mse_grads(params[0], params[1], x, y)
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        for k in range(2):
            params[k] = params[k] - params[k] * wd * lr
            ms[k] = b1 * ms[k] + (1 - b1) * grads[k]
            vs[k] = b2 * vs[k] + (1 - b2) * grads[k] ** 2
            params[k] = params[k] - alpha * ms[k] / (np.sqrt(vs[k]) + eps)
    for got, want in zip(m.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("schedule", [
    tl.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5),
    tl.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=True),
    tl.optimizers.schedules.CosineDecay(0.1, decay_steps=3, alpha=0.1),
])
def test_schedules_set_the_rate_of_every_step(rng, schedule):
    x = rng.normal(size=(6, 3))
    y = rng.normal(size=(6, 2))
    m = linear_model()
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=schedule), loss="mse")
    w, b = (v.astype(np.float64) for v in m.get_weights())
    m.fit(x, y, epochs=5, batch_size=6, shuffle=False, verbose=0)
    for step in range(5):
        gw, gb = mse_grads(w, b, x, y)
        w, b = w - schedule(step) * gw, b - schedule(step) * gb
    np.testing.assert_allclose(m.get_weights()[0], w, rtol=1e-4, atol=1e-6)
    assert m.learning_rate == pytest.approx(schedule(4), rel=1e-6)


def test_l2_adds_to_loss_and_gradient(rng):
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    m = linear_model(kernel_regularizer=tl.regularizers.l2(0.3))
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=0.1), loss="mse")
    w, b = (v.astype(np.float64) for v in m.get_weights())
    expected = np.mean((x @ w + b - y) ** 2) + 0.3 * np.sum(w**2)
    assert m.evaluate(x, y) == pytest.approx(expected, rel=1e-5)
    h = m.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    assert h.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    gw, gb = mse_grads(w, b, x, y)
    np.testing.assert_allclose(m.get_weights()[0], w - 0.1 * (gw + 2 * 0.3 * w), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.get_weights()[1], b - 0.1 * gb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,fan,kind", [("glorot_uniform", "sum", "uniform"), ("he_uniform", "in", "uniform"),
                                           ("glorot_normal", "sum", "normal"), ("he_normal", "in", "normal")])
def test_initializers(name, fan, kind):
    fan_in, units = 400, 300
    m = tl.Sequential([L.Dense(units, kernel_initializer=name, input_shape=(fan_in,))])
    m.build(seed=7)
    w = m.get_weights()[0]
    variance = 2.0 / (fan_in + units) if fan == "sum" else 2.0 / fan_in
    assert w.std() == pytest.approx(np.sqrt(variance), rel=0.02)
    assert abs(w.mean()) < 0.01 * np.sqrt(variance) * 10
    if kind == "uniform":
        assert np.abs(w).max() <= np.sqrt(3 * variance)
    else:  # truncated at two standard deviations of the untruncated normal
        assert np.abs(w).max() <= 2 * np.sqrt(variance) / 0.87962566103423978 + 1e-6
    with pytest.raises(ValueError, match="unknown kernel_initializer 'ones'"):
        L.Dense(3, kernel_initializer="ones")


def test_optimizer_options_survive_save_and_load(rng, tmp_path):
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.normal(size=(16, 2)).astype(np.float32)
    opt = tl.optimizers.AdamW(learning_rate=tl.optimizers.schedules.CosineDecay(0.01, 10), weight_decay=0.05)
    m = linear_model(kernel_regularizer=tl.regularizers.l2(0.01), kernel_initializer="he_normal")
    m.compile(optimizer=opt, loss="mse")
    m.fit(x, y, epochs=2, batch_size=4, seed=1, verbose=0)
    loaded = tl.load_model(m.save(tmp_path / "m.tlmodel"))
    m.fit(x, y, epochs=2, batch_size=4, seed=2, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=4, seed=2, verbose=0)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
