"""The functional API, losses, metrics and fit options against NumPy references."""

import numpy as np
import pytest

import tinylearn as tl

L = tl.layers


def dense_np(x, k, b, act=None):
    z = x.astype(np.float64) @ k + b
    return np.maximum(z, 0) if act == "relu" else z


def test_functional_chain_equals_sequential(rng):
    seq = tl.Sequential([L.Dense(5, activation="relu", input_shape=(3,)), L.Dense(2)])
    seq.build(seed=4)
    inputs = tl.Input(shape=(3,))
    outputs = L.Dense(2)(L.Dense(5, activation="relu")(inputs))
    fun = tl.Model(inputs, outputs)
    fun.build(seed=0)
    fun.set_weights(seq.get_weights())
    x = rng.normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(fun.predict(x), seq.predict(x))


def residual_model():
    inputs = tl.Input(shape=(4,))
    a = L.Dense(6, activation="relu")(inputs)
    b = L.Dense(6)(a)
    s = L.ReLU()(L.Add()([a, b]))
    c = L.Concatenate()([s, a])
    return tl.Model(inputs, L.Dense(3)(c)), inputs


def test_residual_graph_forward_matches_numpy(rng):
    model, _ = residual_model()
    model.build(seed=1)
    w = model.get_weights()
    assert [a.shape for a in w] == [(4, 6), (6,), (6, 6), (6,), (12, 3), (3,)]
    x = rng.normal(size=(9, 4)).astype(np.float32)
    a = dense_np(x, w[0], w[1], "relu")
    b = dense_np(a, w[2], w[3])
    s = np.maximum(a + b, 0)
    expected = dense_np(np.concatenate([s, a], axis=1), w[4], w[5])
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_residual_graph_gradient_matches_finite_differences(rng):
    """One SGD step (lr 1, one batch) moves each weight by minus the loss gradient."""
    model, _ = residual_model()
    model.build(seed=2)
    model.compile(optimizer=tl.optimizers.SGD(learning_rate=1.0), loss="mse")
    w0 = [v.astype(np.float64) for v in model.get_weights()]
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = rng.normal(size=(6, 3)).astype(np.float32)

    def loss(w):
        a = dense_np(x, w[0], w[1], "relu")
        s = np.maximum(a + dense_np(a, w[2], w[3]), 0)
        return np.mean((dense_np(np.concatenate([s, a], axis=1), w[4], w[5]) - y) ** 2)

    model.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    w1 = model.get_weights()
    eps = 1e-6
    for k in range(len(w0)):
        for i in range(w0[k].size):
            plus = [v.copy() for v in w0]
            minus = [v.copy() for v in w0]
            plus[k].flat[i] += eps
            minus[k].flat[i] -= eps
            fd = (loss(plus) - loss(minus)) / (2 * eps)
            assert w0[k].flat[i] - w1[k].flat[i] == pytest.approx(fd, rel=1e-3, abs=1e-5)


def test_graph_errors_name_what_is_wrong():
    a, b = tl.Input(shape=(3,)), tl.Input(shape=(3,))
    with pytest.raises(ValueError, match="outputs do not depend on the given input"):
        tl.Model(a, L.Dense(2)(b))
    with pytest.raises(ValueError, match="disconnected input"):
        tl.Model(a, L.Add()([L.Dense(3)(a), L.Dense(3)(b)]))
    x = tl.Input(shape=(4,))
    bad = tl.Model(x, L.Add(name="merge")([L.Dense(3)(x), L.Dense(2)(x)]))
    with pytest.raises(ValueError, match=r"layer 'merge' \(Add\): inputs must have one shape"):
        bad.compile(optimizer="adam", loss="mse")
    with pytest.raises(TypeError, match="call it on tl.Input"):
        L.Dense(3)(np.zeros((2, 3)))


def classifier(seed=3, units=4, features=5):
    m = tl.Sequential([L.Dense(units, input_shape=(features,))])
    m.build(seed=seed)
    return m


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_categorical_crossentropy_and_accuracy(rng, from_logits):
    m = classifier()
    if not from_logits:
        m = tl.Sequential([L.Dense(4, activation="softmax", input_shape=(5,))])
        m.build(seed=3)
    m.compile(optimizer="sgd", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
              metrics=["accuracy"])
    x = rng.normal(size=(20, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=20)
    out = m.predict(x).astype(np.float64)
    p = softmax(out) if from_logits else np.clip(out, 1e-7, 1 - 1e-7)
    expected = -np.mean(np.log(p[np.arange(20), labels] / (1 if from_logits else p.sum(axis=1))))
    loss, acc = m.evaluate(x, labels)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx(np.mean(out.argmax(axis=1) == labels))


def test_categorical_and_binary_crossentropy(rng):
    x = rng.normal(size=(16, 5)).astype(np.float32)
    m = classifier()
    m.compile(optimizer="sgd", loss=tl.losses.CategoricalCrossentropy(from_logits=True), metrics=["acc"])
    onehot = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=16)]
    z = m.predict(x).astype(np.float64)
    loss, acc = m.evaluate(x, onehot)
    assert loss == pytest.approx(-np.mean(np.sum(onehot * np.log(softmax(z)), axis=1)), rel=1e-5)
    assert acc == pytest.approx(np.mean(z.argmax(1) == onehot.argmax(1)))

    b = tl.Sequential([L.Dense(1, activation="sigmoid", input_shape=(5,))])
    b.build(seed=1)
    b.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    y = rng.integers(0, 2, size=(16, 1)).astype(np.float32)
    p = np.clip(b.predict(x).astype(np.float64), 1e-7, 1 - 1e-7)
    loss, acc = b.evaluate(x, y)
    assert loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-5)
    assert acc == pytest.approx(np.mean((p > 0.5) == (y > 0.5)))


def test_labels_out_of_range_name_the_layer(rng):
    m = tl.Sequential([L.Dense(4, input_shape=(5,), name="logits")])
    m.compile(optimizer="adam", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"label 4\.0* of sample 2 is out of range.*'logits' has 4 classes"):
        m.fit(x, np.array([0, 3, 4]), verbose=0)
    with pytest.raises(ValueError, match="class labels must be integers"):
        m.fit(x, np.array([0, 1.5, 2]), verbose=0)
    with pytest.raises(ValueError, match=r"class_weight has class 7"):
        m.fit(x, np.array([0, 1, 2]), class_weight={7: 1.0}, verbose=0)


def test_class_weight_scales_the_loss_and_the_step(rng):
    x = rng.normal(size=(12, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=12)
    runs = []
    for lr, cw in ((0.1, {c: 2.0 for c in range(4)}), (0.2, None)):
        m = classifier()
        m.compile(optimizer=tl.optimizers.SGD(learning_rate=lr),
                  loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True))
        h = m.fit(x, labels, epochs=1, batch_size=12, shuffle=False, class_weight=cw, verbose=0)
        runs.append((h.history["loss"][0], m.get_weights()))
    assert runs[0][0] == pytest.approx(2 * runs[1][0], rel=1e-6)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_validation_split_holds_out_the_last_samples(rng):
    x = rng.normal(size=(50, 5)).astype(np.float32)
    y = rng.normal(size=(50, 4)).astype(np.float32)
    m = classifier()
    m.compile(optimizer="adam", loss="mse")
    h = m.fit(x, y, epochs=2, validation_split=0.2, verbose=0)
    assert h.params["samples"] == 40
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(x[40:], y[40:]), rel=1e-6)
    with pytest.raises(ValueError, match="validation_split must be in"):
        m.fit(x, y, validation_split=1.5, verbose=0)


def test_callbacks(rng):
    x = rng.normal(size=(30, 5)).astype(np.float32)
    y = rng.normal(size=(30, 4)).astype(np.float32)
    m = classifier()
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=0.1), loss="mse")
    seen = []
    h = m.fit(x, y, epochs=10, verbose=0, callbacks=[lambda epoch, logs: seen.append(logs["loss"]) or epoch < 3])
    assert len(h.epoch) == 4 and len(seen) == 4 and seen == h.history["loss"]

    lrs = []
    sched = tl.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    m.fit(x, y, epochs=3, verbose=0, callbacks=[sched, lambda e, logs: lrs.append(m.learning_rate)])
    assert lrs == pytest.approx([0.1, 0.05, 0.1 / 3])

    # A learning rate that makes the loss grow: early stopping after `patience` epochs without
    # improvement, and the weights of the best epoch restored.
    m2 = classifier()
    m2.compile(optimizer=tl.optimizers.SGD(learning_rate=50.0), loss="mse")
    snapshots = []
    stop = tl.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    h = m2.fit(x, y, epochs=20, verbose=0,
               callbacks=[lambda e, logs: snapshots.append(m2.get_weights()), stop])
    assert stop.stopped_epoch > 0 and len(h.epoch) == stop.stopped_epoch + 1 < 20
    best = int(np.argmin(h.history["loss"]))
    for got, want in zip(m2.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_fashion_mnist_mlp_reaches_87_percent():
    """TensorFlow's "basic classification" model: Flatten-Dense(128, relu)-Dense(10)."""
    (x_train, y_train), (x_test, y_test) = tl.datasets.fashion_mnist.load_data()
    x_train = x_train.astype(np.float32) / 255
    x_test = x_test.astype(np.float32) / 255
    model = tl.Sequential([L.Flatten(input_shape=(28, 28)), L.Dense(128, activation="relu"), L.Dense(10)])
    model.compile(optimizer="adam", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=32, seed=1, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test)
    assert accuracy >= 0.87


def test_model_checkpoint_saves_the_best_epoch(rng, tmp_path):
    x = rng.normal(size=(30, 5)).astype(np.float32)
    y = rng.normal(size=(30, 4)).astype(np.float32)
    m = classifier()
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=0.05), loss="mse")
    snapshots = []
    ckpt = tl.callbacks.ModelCheckpoint(tmp_path / "best.tlmodel", monitor="val_loss", save_best_only=True)
    h = m.fit(x, y, epochs=6, validation_split=0.3, verbose=0,
              callbacks=[ckpt, lambda e, logs: snapshots.append(m.predict(x))])
    best = int(np.argmin(h.history["val_loss"]))
    np.testing.assert_array_equal(tl.load_model(tmp_path / "best.tlmodel").predict(x), snapshots[best])
    every = tl.callbacks.ModelCheckpoint(tmp_path / "epoch{epoch:02d}.tlmodel")
    m.fit(x, y, epochs=2, verbose=0, callbacks=[every])
    assert sorted(p.name for p in tmp_path.glob("epoch*")) == ["epoch01.tlmodel", "epoch02.tlmodel"]


def test_layer_get_and_set_weights_like_keras():
    inputs = tl.Input(shape=(3,))
    hidden = L.Dense(4, activation="relu", name="hidden")
    outputs = L.Dense(2, name="out")(hidden(inputs))
    model = tl.Model(inputs, outputs)
    assert hidden.get_weights() == []  # not built yet, as in Keras
    with pytest.raises(ValueError, match="no weights yet"):
        hidden.set_weights([np.zeros((3, 4)), np.zeros(4)])
    model.build(seed=3)
    assert model.get_layer("hidden") is hidden
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        model.get_layer("nope")
    kernel, bias = hidden.get_weights()
    assert kernel.shape == (3, 4) and bias.shape == (4,)
    np.testing.assert_array_equal(kernel, model.get_weights()[0])
    new_kernel = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    hidden.set_weights([new_kernel, np.ones(4, np.float32)])
    np.testing.assert_array_equal(model.get_weights()[0], new_kernel)
    # The forward pass uses them: relu(x W + 1) then the output layer, by NumPy.
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    w2, b2 = model.get_layer("out").get_weights()
    expected = np.maximum(x @ new_kernel + 1, 0) @ w2 + b2
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected an array of shape"):
        hidden.set_weights([np.zeros((4, 3)), np.zeros(4)])
    with pytest.raises(ValueError, match="has 2 weight arrays, got 1"):
        hidden.set_weights([new_kernel])
