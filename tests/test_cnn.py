"""Convolutional layers from Python against NumPy references; a ResNet-8-shaped graph."""

import numpy as np
import pytest

import tinylearn as tl

L = tl.layers


def pad_same(x, k, s):
    h = x.shape[1]
    out = -(-h // s)
    total = max((out - 1) * s + k - h, 0)
    return np.pad(x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2), (0, 0))), out


def conv_np(x, w, b, stride, padding):
    k = w.shape[0]
    if padding == "same":
        x, out = pad_same(x, k, stride)
    else:
        out = (x.shape[1] - k) // stride + 1
    y = np.zeros((x.shape[0], out, out, w.shape[3]))
    for i in range(out):
        for j in range(out):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            y[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return y + b


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, "same"), (1, "same")])
def test_conv2d_matches_numpy(rng, stride, padding):
    m = tl.Sequential([L.Conv2D(4, 3, strides=stride, padding=padding, input_shape=(7, 7, 2))])
    m.build(seed=1)
    w, b = m.get_weights()
    assert w.shape == (3, 3, 2, 4) and b.shape == (4,)
    b = rng.normal(size=4).astype(np.float32)
    m.set_weights([w, b])
    x = rng.normal(size=(3, 7, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(m.predict(x), conv_np(x.astype(np.float64), w, b, stride, padding),
                               rtol=1e-4, atol=1e-5)


def test_depthwise_and_pooling_match_numpy(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    m = tl.Sequential([L.DepthwiseConv2D(3, depth_multiplier=2, input_shape=(6, 6, 3))])
    m.build(seed=2)
    w, b = m.get_weights()
    assert w.shape == (3, 3, 3, 2)
    expected = np.concatenate(
        [conv_np(x[..., c:c + 1].astype(np.float64), w[:, :, c:c + 1, :], 0, 1, "valid") for c in range(3)],
        axis=-1) + b
    np.testing.assert_allclose(m.predict(x), expected, rtol=1e-4, atol=1e-5)

    mp = tl.Sequential([L.MaxPooling2D(2, input_shape=(6, 6, 3))])
    ap = tl.Sequential([L.AveragePooling2D(2, input_shape=(6, 6, 3))])
    gp = tl.Sequential([L.GlobalAveragePooling2D(input_shape=(6, 6, 3))])
    blocks = x.reshape(2, 3, 2, 3, 2, 3)
    np.testing.assert_allclose(mp.predict(x), blocks.max(axis=(2, 4)), rtol=1e-6)
    np.testing.assert_allclose(ap.predict(x), blocks.mean(axis=(2, 4)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp.predict(x), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_batch_normalization_statistics(rng):
    x = (rng.normal(size=(40, 5)) * 3 + 2).astype(np.float32)
    m = tl.Sequential([L.BatchNormalization(momentum=0.5, input_shape=(5,))])
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=1e-9), loss="mse")
    m.fit(x, np.zeros_like(x), epochs=1, batch_size=40, shuffle=False, verbose=0)
    gamma, beta, mean, var = m.get_weights()
    np.testing.assert_allclose(mean, 0.5 * x.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(var, 0.5 + 0.5 * x.var(axis=0), rtol=1e-4)
    # Inference uses the moving statistics.
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(m.predict(x), expected, rtol=1e-4, atol=1e-5)


def resnet8(input_shape=(32, 32, 3), classes=10):
    """MLPerf Tiny's image-classification ResNet-8 (three stages of 16, 32, 64 filters)."""
    inputs = tl.Input(shape=input_shape)
    x = L.Conv2D(16, 3, padding="same")(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.Conv2D(filters, 3, strides=stride, padding="same")(x)
        y = L.ReLU()(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = L.Conv2D(filters, 1, strides=stride)(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return tl.Model(inputs, L.Dense(classes, activation="softmax")(x), name="resnet8")


def test_resnet8_trains_saves_and_loads(rng, tmp_path, capsys):
    model = resnet8()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    assert "Total params: 78,666" in capsys.readouterr().out  # as Keras counts ResNet-8
    x = rng.random((64, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=64)
    h = model.fit(x, y, epochs=3, batch_size=32, seed=1, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    loaded = tl.load_model(model.save(tmp_path / "resnet8.tlmodel"))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == pytest.approx(model.evaluate(x, y))


def test_shapes_that_do_not_connect_name_the_layer():
    m = tl.Sequential([L.Conv2D(4, 5, input_shape=(3, 3, 1), name="too_big")])
    with pytest.raises(ValueError, match=r"layer 'too_big' \(Conv2D\).*kernel is larger than the input"):
        m.compile(optimizer="adam", loss="mse")
    m = tl.Sequential([L.Dense(4, input_shape=(6,)), L.Conv2D(2, 3, name="conv")])
    with pytest.raises(ValueError, match=r"layer 'conv' \(Conv2D\)"):
        m.compile(optimizer="adam", loss="mse")


@pytest.fixture(scope="module")
def fashion_mnist_cnn():
    """The benchmark's CNN trained on all of Fashion-MNIST: 8 epochs, batch 64, Adam with a cosine
    decay of the learning rate from 2e-3 (the last epochs settle instead of jumping around)."""
    (x_train, y_train), (x_test, y_test) = tl.datasets.fashion_mnist.load_data()
    x_train = (x_train.astype(np.float32) / 255)[..., None]
    x_test = (x_test.astype(np.float32) / 255)[..., None]
    model = tl.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(),
                           L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(),
                           L.Dense(64, activation="relu"), L.Dense(10)])
    epochs, batch = 8, 64
    steps = epochs * -(-len(x_train) // batch)
    model.compile(optimizer=tl.optimizers.Adam(tl.optimizers.schedules.CosineDecay(2e-3, steps)),
                  loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch, seed=1, verbose=0)
    return model, (x_train, y_train), (x_test, y_test)


@pytest.mark.slow
def test_fashion_mnist_cnn_reaches_90_percent(fashion_mnist_cnn):
    """Acceptance: the benchmark's CNN, trained from Python, reaches >= 90% test accuracy."""
    model, _, (x_test, y_test) = fashion_mnist_cnn
    _, accuracy = model.evaluate(x_test, y_test)
    assert accuracy >= 0.90
    # evaluate's accuracy is the fraction of argmax hits (checked independently).
    assert np.mean(model.predict(x_test).argmax(axis=1) == y_test) == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.slow
def test_fashion_mnist_cnn_int8_keeps_accuracy(fashion_mnist_cnn):
    """Issue 4 acceptance: tl.convert keeps the CNN's test accuracy within 1 point of float."""
    model, (x_train, _), (x_test, y_test) = fashion_mnist_cnn
    q = tl.convert(model, x_train[:500])
    float_acc = np.mean(model.predict(x_test).argmax(axis=1) == y_test)
    int8_acc = np.mean(q.predict(x_test).argmax(axis=1) == y_test)
    assert abs(float_acc - int8_acc) <= 0.01, (float_acc, int8_acc)
    # The batch runs in C++ exactly as sample-by-sample invokes do.
    xq = q.quantize_input(x_test[:64])
    np.testing.assert_array_equal(q.invoke(xq), np.concatenate([q.invoke(xq[i:i + 1]) for i in range(64)]))
