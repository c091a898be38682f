"""Keras habits: trainable flags, models as layers, names, losses and metrics by name or callable,
Huber, RMSprop, summary counts. Expected values come from NumPy references of Keras's documented
behaviour (Keras itself is not installed)."""

import warnings

import numpy as np
import pytest

import tinylearn as tl

L = tl.layers


def dense_np(x, k, b, act=None):
    z = x.astype(np.float64) @ k + b
    return np.maximum(z, 0) if act == "relu" else z


def mlp(seed=1):
    m = tl.Sequential([L.Dense(8, activation="relu", input_shape=(3,)), L.Dense(6, activation="relu"),
                       L.Dense(2)])
    m.build(seed=seed)
    return m


def data(rng, n=32, features=3, outputs=2):
    return (rng.normal(size=(n, features)).astype(np.float32),
            rng.normal(size=(n, outputs)).astype(np.float32))


# -- trainable ---------------------------------------------------------------------------------

def test_fine_tune_last_layer_frozen_weights_bit_identical(rng):
    x, y = data(rng)
    model = mlp()
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)  # a trained model
    for layer in model.layers[:-1]:
        layer.trainable = False
    lr = 0.1
    model.compile(optimizer=tl.optimizers.SGD(learning_rate=lr), loss="mse")
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    after = model.get_weights()
    for b, a in zip(before[:4], after[:4]):
        assert np.array_equal(a, b)
    # The last layer took exactly one SGD step on the frozen features (NumPy backprop).
    h = dense_np(dense_np(x, before[0], before[1], "relu"), before[2], before[3], "relu")
    d = 2 * (dense_np(h, before[4], before[5]) - y) / y.size
    np.testing.assert_allclose(after[4], before[4] - lr * (h.T @ d), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after[5], before[5] - lr * d.sum(axis=0), rtol=1e-4, atol=1e-6)


def test_frozen_kernel_regularizer_counts_in_the_loss_but_changes_nothing(rng):
    x, y = data(rng)
    model = tl.Sequential([L.Dense(4, input_shape=(3,), kernel_regularizer=tl.regularizers.l2(0.5)),
                           L.Dense(2)])
    model.build(seed=3)
    model.layers[0].trainable = False
    model.compile(optimizer=tl.optimizers.SGD(0.1), loss="mse")
    w = model.get_weights()
    h = model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    assert np.array_equal(model.get_weights()[0], w[0]) and np.array_equal(model.get_weights()[1], w[1])
    pred = dense_np(dense_np(x, w[0], w[1]), w[2], w[3])
    expected = np.mean((pred - y) ** 2) + 0.5 * np.sum(w[0].astype(np.float64) ** 2)  # Keras adds it
    np.testing.assert_allclose(h.history["loss"][0], expected, rtol=1e-5)


def bn_model(seed=2):
    m = tl.Sequential([L.Dense(4, input_shape=(3,)), L.BatchNormalization(), L.Dense(2)])
    m.build(seed=seed)
    bn = m.layers[1]
    bn.set_weights([np.array([1.5, 0.5, 2.0, 1.0], np.float32), np.array([0.1, -0.2, 0.3, 0.0], np.float32),
                    np.array([0.4, -0.3, 0.2, 1.0], np.float32), np.array([2.0, 0.5, 1.5, 3.0], np.float32)])
    return m


def test_frozen_batch_norm_runs_in_inference_mode_in_fit(rng):
    x, y = data(rng)
    model = bn_model()
    bn = model.layers[1]
    bn.trainable = False
    model.compile(optimizer=tl.optimizers.SGD(0.05), loss="mse")
    w = model.get_weights()
    h = model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    after = model.get_weights()
    for k in range(2, 6):  # gamma, beta, moving mean and variance: untouched
        assert np.array_equal(after[k], w[k])
    assert not np.array_equal(after[0], w[0]) and not np.array_equal(after[6], w[6])
    # The logged loss (before the step) is the forward with the moving statistics.
    z = dense_np(x, w[0], w[1])
    z = w[2] * (z - w[4]) / np.sqrt(w[5].astype(np.float64) + 1e-3) + w[3]
    np.testing.assert_allclose(h.history["loss"][0], np.mean((dense_np(z, w[6], w[7]) - y) ** 2), rtol=1e-5)


def test_trainable_batch_norm_updates_its_statistics(rng):
    """The counterpart of the frozen case: in training mode the moving statistics move."""
    x, y = data(rng)
    model = bn_model()
    model.compile(optimizer=tl.optimizers.SGD(0.05), loss="mse")
    w = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    assert not np.array_equal(model.get_weights()[4], w[4])


def test_trainable_weight_lists_and_summary_counts_match_a_hand_count(capsys):
    model = bn_model()
    dense0, bn, dense1 = model.layers
    dense0.trainable = False
    # By hand: Dense 3*4 + 4 = 16 (frozen), BN 4 * 4 = 16 (gamma, beta trainable; moving
    # statistics never), Dense 4*2 + 2 = 10. Total 42, trainable 8 + 10 = 18, non-trainable 24.
    assert model.count_params() == 42
    assert [w.shape for w in bn.trainable_weights] == [(4,), (4,)]
    assert [w.shape for w in bn.non_trainable_weights] == [(4,), (4,)]
    assert dense0.trainable_weights == [] and [w.shape for w in dense0.non_trainable_weights] == [(3, 4), (4,)]
    assert [w.shape for w in model.trainable_weights] == [(4,), (4,), (4, 2), (2,)]
    assert [w.shape for w in model.non_trainable_weights] == [(3, 4), (4,), (4,), (4,)]
    assert [w.shape for w in model.weights] == [w.shape for w in model.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(bn.weights, bn.get_weights()))
    assert model.summary() is None
    out = capsys.readouterr().out
    assert "Total params: 42 " in out and "Trainable params: 18\n" in out and "Non-trainable params: 24\n" in out
    lines = []
    model.summary(print_fn=lines.append)
    assert "Trainable params: 18" in lines


def test_model_trainable_sets_every_layer_flag():
    model = bn_model()
    model.layers[0].trainable = False
    model.trainable = False
    assert [layer.trainable for layer in model.layers] == [False, False, False]
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 8
    model.trainable = True  # Keras sets every sublayer's flag: the frozen first layer trains again
    assert [layer.trainable for layer in model.layers] == [True, True, True]


def test_model_trainable_false_freezes_all_in_fit(rng):
    x, y = data(rng)
    model = bn_model()
    model.trainable = False
    model.compile(optimizer="adam", loss="mse")
    w = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), w))


def test_trainable_takes_effect_at_compile_as_in_keras(rng):
    x, y = data(rng)
    model = mlp()
    model.compile(optimizer="adam", loss="mse")
    model.layers[0].trainable = False
    w = model.get_weights()
    with pytest.warns(UserWarning, match="next model.compile"):
        model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(model.get_weights()[0], w[0])  # not compiled since: still trains
    model.compile(optimizer="adam", loss="mse")
    w = model.get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, verbose=0)
    assert np.array_equal(model.get_weights()[0], w[0])


def test_frozen_layers_and_optimizer_state_survive_save_and_load(rng, tmp_path):
    x, y = data(rng)
    model = mlp()
    model.layers[1].trainable = False
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    loaded = tl.load_model(model.save(tmp_path / "m.tlmodel"))
    assert [layer.trainable for layer in loaded.layers] == [True, False, True]
    model.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- models as layers --------------------------------------------------------------------------

def test_calling_a_model_on_an_array_predicts(rng):
    model = mlp()
    x = rng.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), model.predict(x))
    np.testing.assert_array_equal(model(x, training=False), model.predict(x))
    with pytest.raises(ValueError, match="training=True"):
        model(x, training=True)


def test_sequential_with_an_input_first():
    model = tl.Sequential([tl.Input((3,)), L.Dense(2)])
    assert model.input_shape == (3,) and model.output_shape is None
    assert len(model.layers) == 1 and isinstance(model.layers[0], L.Dense)  # Keras 3 lists no InputLayer
    model.build(seed=0)
    assert [w.shape for w in model.get_weights()] == [(3, 2), (2,)]
    with pytest.raises(ValueError, match="only come first"):
        tl.Sequential([L.Dense(2), tl.Input((3,))])


def test_transfer_learning_with_a_frozen_base(rng, tmp_path):
    x, y = data(rng)
    base = tl.Sequential([L.Dense(8, activation="relu", input_shape=(3,)), L.Dense(4, activation="relu")])
    base.compile(optimizer="adam", loss="mse")
    base.fit(x, y[:, :1].repeat(4, axis=1), epochs=2, verbose=0)
    base_w, base_pred = base.get_weights(), base.predict(x)
    base.trainable = False
    model = tl.Sequential([base, L.Dense(2)])
    assert model.layers[0] is base and model.input_shape == (3,)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    w = model.get_weights()
    for a, b in zip(w[:4], base_w):  # the same weights, shared and untouched
        assert np.array_equal(a, b)
    np.testing.assert_array_equal(base.predict(x), base_pred)
    # The head is a Dense on the base's features.
    np.testing.assert_allclose(model.predict(x), dense_np(base_pred, w[4], w[5]), rtol=1e-5, atol=1e-5)
    assert [w.shape for w in model.trainable_weights] == [(4, 2), (2,)]
    lines = []
    model.summary(print_fn=lines.append)
    assert any(line.startswith(f"{base.name} (Sequential)") and line.endswith(" 68") for line in lines)  # 3*8+8 + 8*4+4
    assert "Trainable params: 10" in lines and "Non-trainable params: 68" in lines
    loaded = tl.load_model(model.save(tmp_path / "t.tlmodel"))  # saved flat, as a functional model
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [layer.trainable for layer in loaded.layers] == [False, False, True]


def test_functional_call_of_a_model_shares_its_weights(rng):
    x, y = data(rng)
    base = mlp()
    inputs = tl.Input((3,))
    outputs = L.Dense(1)(base(inputs))
    model = tl.Model(inputs, outputs)
    assert model.layers == [base, model.layers[1]]
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y[:, :1], epochs=2, verbose=0)
    w = model.get_weights()
    for a, b in zip(w[:6], base.get_weights()):  # training the outer model trained base
        assert np.array_equal(a, b)
    np.testing.assert_allclose(model.predict(x), dense_np(base.predict(x), w[6], w[7]), rtol=1e-5, atol=1e-5)


# -- names and shapes --------------------------------------------------------------------------

def test_default_names_follow_keras():
    L.clear_session()
    layers = [L.Dense(2), L.Dense(2), L.Conv2D(1, 1), L.MaxPooling2D(), L.BatchNormalization(),
              L.GlobalAveragePooling2D(), L.DepthwiseConv2D(3), L.AveragePooling2D(), L.ReLU(),
              L.Dropout(0.1), L.Dense(2, name="head"), L.Dense(2)]
    # Keras: the snake_case class name, numbered per name in the session (ReLU -> re_lu).
    assert [layer.name for layer in layers] == [
        "dense", "dense_1", "conv2d", "max_pooling2d", "batch_normalization", "global_average_pooling2d",
        "depthwise_conv2d", "average_pooling2d", "re_lu", "dropout", "head", "dense_2"]
    assert [tl.Sequential().name, tl.Sequential().name] == ["sequential", "sequential_1"]
    inputs = tl.Input((2,))
    assert tl.Model(inputs, L.Dense(1)(inputs)).name == "functional"


def test_layer_shapes_and_weights():
    model = tl.Sequential([L.Conv2D(4, 3, input_shape=(8, 8, 1)), L.MaxPooling2D(), L.Flatten(), L.Dense(2)])
    conv, pool, flat, dense = model.layers
    assert conv.input_shape == (None, 8, 8, 1) and conv.output_shape is None and conv.weights == []
    model.build(seed=0)
    # valid 3x3: 8 - 3 + 1 = 6; pooling 2: 3; flatten 3 * 3 * 4 = 36
    assert conv.output_shape == (None, 6, 6, 4) and pool.output_shape == (None, 3, 3, 4)
    assert dense.input_shape == (None, 36) and dense.output_shape == (None, 2)
    assert [w.shape for w in conv.weights] == [(3, 3, 1, 4), (4,)]
    inputs = tl.Input((3,))
    add = L.Add()
    model = tl.Model(inputs, add([L.Dense(2)(inputs), L.Dense(2)(inputs)]))
    model.build(seed=0)
    assert add.input_shape == [(None, 2), (None, 2)]


# -- losses and metrics ------------------------------------------------------------------------

def keras_huber(y, p, delta=1.0):
    e = np.abs(p.astype(np.float64) - y)
    return np.mean(np.where(e <= delta, 0.5 * e**2, delta * e - 0.5 * delta**2), axis=-1)


@pytest.mark.parametrize("loss, reference", [
    ("MeanSquaredError", lambda y, p: np.mean((p - y) ** 2)),
    ("MeanAbsoluteError", lambda y, p: np.mean(np.abs(p - y))),
    (tl.losses.mean_squared_error, lambda y, p: np.mean((p - y) ** 2)),
    (tl.losses.MeanAbsoluteError(), lambda y, p: np.mean(np.abs(p - y))),
    ("huber", lambda y, p: np.mean(keras_huber(y, p))),
    ("Huber", lambda y, p: np.mean(keras_huber(y, p))),
    (tl.losses.huber, lambda y, p: np.mean(keras_huber(y, p))),
    (tl.losses.Huber(delta=0.3), lambda y, p: np.mean(keras_huber(y, p, 0.3))),
])
def test_losses_by_class_name_and_callable(rng, loss, reference):
    x, y = data(rng)
    y = y * 3  # errors on both sides of delta
    model = mlp()
    model.compile(optimizer="sgd", loss=loss)
    np.testing.assert_allclose(model.evaluate(x, y), reference(y, model.predict(x).astype(np.float64)),
                               rtol=1e-5)


def test_classification_losses_by_class_name(rng):
    x = rng.normal(size=(20, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 20)
    model = tl.Sequential([L.Dense(3, activation="softmax", input_shape=(3,))])
    model.build(seed=1)
    p = model.predict(x).astype(np.float64)
    model.compile(loss="SparseCategoricalCrossentropy")
    np.testing.assert_allclose(model.evaluate(x, labels), -np.mean(np.log(p[np.arange(20), labels])), rtol=1e-5)
    model.compile(loss="CategoricalCrossentropy")
    np.testing.assert_allclose(model.evaluate(x, np.eye(3)[labels]), -np.mean(np.log(p[np.arange(20), labels])),
                               rtol=1e-5)
    assert tl.losses.SparseCategoricalCrossentropy()(labels, p) == pytest.approx(
        -np.mean(np.log(p[np.arange(20), labels])), rel=1e-6)


def test_an_arbitrary_callable_loss_is_refused():
    model = mlp()
    with pytest.raises(TypeError, match="cannot differentiate"):
        model.compile(loss=lambda y_true, y_pred: (y_true - y_pred) ** 2)


def test_huber_step_matches_numpy_gradient(rng):
    x, y = data(rng)
    y = y * 3
    model = tl.Sequential([L.Dense(2, input_shape=(3,))])
    model.build(seed=1)
    k, b = model.get_weights()
    model.compile(optimizer=tl.optimizers.SGD(0.5), loss="huber")
    model.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    e = dense_np(x, k, b) - y
    d = np.clip(e, -1.0, 1.0) / e.size  # d/de of the mean Huber loss
    np.testing.assert_allclose(model.get_weights()[0], k - 0.5 * (x.T @ d), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], b - 0.5 * d.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_metrics_by_name_string_class_name_and_callable(rng):
    x = rng.normal(size=(40, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 40)
    model = tl.Sequential([L.Dense(3, activation="softmax", input_shape=(3,))])
    model.build(seed=2)

    def top_prob(y_true, y_pred):
        return np.max(y_pred, axis=-1)

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", "sparse_categorical_accuracy", "SparseCategoricalAccuracy", top_prob])
    h = model.fit(x, labels, epochs=2, batch_size=40, validation_data=(x, labels), verbose=0)
    assert set(h.history) == {"loss", "accuracy", "sparse_categorical_accuracy", "SparseCategoricalAccuracy",
                              "top_prob", "val_loss", "val_accuracy", "val_sparse_categorical_accuracy",
                              "val_SparseCategoricalAccuracy", "val_top_prob"}
    p = model.predict(x)
    acc = np.mean(p.argmax(axis=1) == labels)
    loss, a1, a2, a3, tp = model.evaluate(x, labels)
    assert a1 == pytest.approx(acc) and a2 == pytest.approx(acc) and a3 == pytest.approx(acc)
    assert tp == pytest.approx(np.mean(p.max(axis=1)), rel=1e-6)
    assert h.history["top_prob"][-1] == pytest.approx(tp, rel=1e-6)  # end-of-epoch predictions
    with pytest.raises(ValueError, match="sparse_categorical_accuracy"):
        model.compile(loss="sparse_categorical_crossentropy", metrics=["categorical_accuracy"])


def test_bare_metric_string_and_other_accuracies(rng):
    x, y = data(rng)
    model = mlp()
    model.compile(loss="mse", metrics="mae")
    h = model.fit(x, y, epochs=1, verbose=0)
    assert set(h.history) == {"loss", "mae"}
    p = model.predict(x).astype(np.float64)
    assert model.evaluate(x, y)[1] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    # tinylearn's loss functions and objects as metrics, named as Keras names them
    model.compile(loss="mse", metrics=[tl.losses.mean_absolute_error, tl.losses.MeanSquaredError()])
    h = model.fit(x, y, epochs=1, verbose=0)
    assert set(h.history) == {"loss", "mean_absolute_error", "mean_squared_error"}
    p = model.predict(x).astype(np.float64)
    _, mae, mse = model.evaluate(x, y)
    assert mae == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    assert mse == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)
    onehot = np.eye(2, dtype=np.float32)[(y[:, 0] > 0).astype(int)]
    model2 = tl.Sequential([L.Dense(2, activation="softmax", input_shape=(3,))])
    model2.build(seed=0)
    model2.compile(loss="categorical_crossentropy", metrics=["categorical_accuracy"])
    assert model2.evaluate(x, onehot)[1] == pytest.approx(
        np.mean(model2.predict(x).argmax(1) == onehot.argmax(1)))
    model3 = tl.Sequential([L.Dense(1, activation="sigmoid", input_shape=(3,))])
    model3.build(seed=0)
    model3.compile(loss="binary_crossentropy", metrics=["binary_accuracy"])
    yb = (y[:, :1] > 0).astype(np.float32)
    assert model3.evaluate(x, yb)[1] == pytest.approx(np.mean((model3.predict(x) > 0.5) == yb))


# -- RMSprop -----------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum, centered", [(0.0, False), (0.5, False), (0.0, True), (0.9, True)])
def test_rmsprop_matches_numpy_over_several_steps(rng, momentum, centered):
    x, y = data(rng, n=16, outputs=2)
    model = tl.Sequential([L.Dense(2, input_shape=(3,))])
    model.build(seed=4)
    w = [v.astype(np.float64) for v in model.get_weights()]
    lr, rho, eps = 0.01, 0.9, 1e-7  # Keras's defaults but the learning rate
    opt = tl.optimizers.RMSprop(learning_rate=lr, momentum=momentum, centered=centered)
    assert (opt.rho, opt.epsilon) == (rho, eps)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    v = [np.zeros_like(a) for a in w]
    m = [np.zeros_like(a) for a in w]
    avg = [np.zeros_like(a) for a in w]
    for _ in range(4):
        d = 2 * (x @ w[0] + w[1] - y) / y.size
        for k, g in enumerate([x.T @ d, d.sum(axis=0)]):
            v[k] = rho * v[k] + (1 - rho) * g * g
            den = v[k]
            if centered:
                avg[k] = rho * avg[k] + (1 - rho) * g
                den = v[k] - avg[k] ** 2
            step = lr * g / np.sqrt(den + eps)
            m[k] = momentum * m[k] + step if momentum else step
            w[k] = w[k] - m[k]
    for got, want in zip(model.get_weights(), w):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_rmsprop_by_name_and_its_state_survives_save(rng, tmp_path):
    x, y = data(rng)
    model = mlp()
    model.compile(optimizer="RMSprop", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    loaded = tl.load_model(model.save(tmp_path / "r.tlmodel"))
    model.fit(x, y, epochs=2, seed=5, verbose=0)
    loaded.fit(x, y, epochs=2, seed=5, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- crossentropy targets ----------------------------------------------------------------------

def test_categorical_crossentropy_refuses_targets_that_are_not_distributions(rng):
    x = rng.normal(size=(4, 3)).astype(np.float32)
    model = tl.Sequential([L.Dense(3, activation="softmax", input_shape=(3,))])
    model.compile(loss="categorical_crossentropy")
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    y[2] = [1.5, -0.5, 0.0]  # sums to 1, but a negative entry drives the loss below zero
    with pytest.raises(ValueError, match="fit: y.*row 2"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="evaluate: y.*distributions"):
        model.evaluate(x, y * 2)


def test_binary_crossentropy_refuses_labels_outside_0_1(rng):
    x = rng.normal(size=(4, 3)).astype(np.float32)
    model = tl.Sequential([L.Dense(1, activation="sigmoid", input_shape=(3,))])
    model.compile(loss="binary_crossentropy")
    with pytest.raises(ValueError, match=r"fit: y.*\[0, 1\].*from 0 to 2"):
        model.fit(x, np.array([0, 1, 2, 1], np.float32), verbose=0)
    with pytest.raises(ValueError, match="validation y"):
        model.fit(x, np.array([0, 1, 1, 1], np.float32), validation_data=(x, -np.ones(4)), verbose=0)
