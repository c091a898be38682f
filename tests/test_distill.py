"""Knowledge distillation (tl.optimize.Distiller): the loss and its gradient against a NumPy
reference of Hinton et al.'s formula (as Keras's example computes it), training equivalences,
the frozen teacher, and bad input."""

import numpy as np
import pytest

import tinylearn as tl

EPS = 1e-7  # Keras's backend.epsilon()
K = 4       # classes


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def as_logits(out, from_logits):
    """Outputs as logits: probabilities enter as log(clip(p)), clipped as the crossentropies."""
    out = np.asarray(out, np.float64)
    return out if from_logits else np.log(np.clip(out, EPS, 1 - EPS))


def reference_terms(s, t, y, T, s_logits=True, t_logits=True, sparse=True, w=None):
    """(student loss, T^2 KL term) of the Keras example, batch means in float64: the student
    crossentropy on the labels, and KLDivergence(softmax(t / T), softmax(s / T)) * T^2 with
    Keras's clip of both distributions to [eps, 1]."""
    s = np.asarray(s, np.float64)
    onehot = np.eye(s.shape[1])[y] if sparse else np.asarray(y, np.float64)
    if s_logits:
        ce = -np.sum(onehot * log_softmax(s), axis=1)
    elif sparse:  # the TensorFlow backend: log(sum clip(p)) - log(clip(p_y))
        c = np.clip(s, EPS, 1 - EPS)
        ce = np.log(c.sum(axis=1)) - np.log(c[np.arange(len(y)), y])
    else:
        q = np.clip(s / s.sum(axis=1, keepdims=True), EPS, 1 - EPS)
        ce = -np.sum(onehot * np.log(q), axis=1)
    p = np.clip(softmax(as_logits(t, t_logits) / T), EPS, 1)
    q = np.clip(softmax(as_logits(s, s_logits) / T), EPS, 1)
    kl = np.sum(p * np.log(p / q), axis=1) * T * T
    w = np.ones(len(s)) if w is None else np.asarray(w, np.float64)
    return float(np.mean(w * ce)), float(np.mean(w * kl))


def data(n=96, f=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = (np.digitize(x[:, 0] + 0.5 * x[:, 1], [-0.7, 0.0, 0.7])).astype(np.int64)
    return x, y


def mlp(f, hidden=None, softmax_out=False, name=None):
    layers = [tl.Input((f,))]
    if hidden:
        layers.append(tl.layers.Dense(hidden, activation="relu"))
    layers.append(tl.layers.Dense(K, activation="softmax" if softmax_out else None))
    return tl.Sequential(layers, name=name)


def trained_teacher(x, y, softmax_out=False, bn=False):
    layers = [tl.Input((x.shape[1],)), tl.layers.Dense(32, activation="relu")]
    if bn:
        layers += [tl.layers.BatchNormalization(), tl.layers.Dropout(0.3)]
    layers.append(tl.layers.Dense(K, activation="softmax" if softmax_out else None))
    teacher = tl.Sequential(layers)
    teacher.compile("adam", tl.losses.SparseCategoricalCrossentropy(from_logits=not softmax_out), ["accuracy"])
    teacher.fit(x, y, epochs=8, batch_size=32, verbose=0, seed=1)
    return teacher


@pytest.fixture(scope="module")
def xy():
    return data()


@pytest.fixture(scope="module")
def teachers(xy):
    x, y = xy
    return {False: trained_teacher(x, y), True: trained_teacher(x, y, softmax_out=True)}


def distiller(student, teacher, alpha=0.3, temperature=2.5, from_logits=None, sparse=True, optimizer="adam"):
    d = tl.optimize.Distiller(student=student, teacher=teacher)
    from_logits = (not student._output.layer.get_config().get("activation") == "softmax"
                   if from_logits is None else from_logits)
    cls = tl.losses.SparseCategoricalCrossentropy if sparse else tl.losses.CategoricalCrossentropy
    d.compile(optimizer, ["accuracy"], cls(from_logits=from_logits), tl.losses.KLDivergence(),
              alpha=alpha, temperature=temperature)
    return d


@pytest.mark.parametrize("s_soft", [False, True])
@pytest.mark.parametrize("t_soft", [False, True])
@pytest.mark.parametrize("sparse", [True, False])
def test_loss_of_a_batch_equals_the_formula(xy, teachers, s_soft, t_soft, sparse):
    x, y = xy
    student = mlp(x.shape[1], hidden=8, softmax_out=s_soft)
    student.build(seed=4)
    s0 = student.predict(x)
    t = teachers[t_soft].predict(x)
    d = distiller(student, teachers[t_soft], alpha=0.3, temperature=2.5, sparse=sparse)
    labels = y if sparse else np.eye(K, dtype=np.float32)[y]
    # One batch of every sample: the epoch's logged loss is the loss at the initial weights.
    h = d.fit(x, labels, batch_size=len(x), epochs=1, verbose=0, seed=0)
    ce, kl = reference_terms(s0, t, y if sparse else labels, 2.5, not s_soft, not t_soft, sparse)
    np.testing.assert_allclose(h.history["student_loss"][0], ce, rtol=1e-5)
    np.testing.assert_allclose(h.history["distillation_loss"][0], kl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(h.history["loss"][0], 0.3 * ce + 0.7 * kl, rtol=1e-5)
    acc = np.mean(np.argmax(s0, axis=1) == y)
    assert h.history["accuracy"][0] == pytest.approx(acc, abs=1e-7)


@pytest.mark.parametrize("s_soft,t_soft", [(False, False), (True, False), (False, True), (True, True)])
def test_gradient_wrt_student_logits_matches_finite_differences(teachers, s_soft, t_soft):
    # A student z = x W + b on one-hot inputs x = I: one SGD step with learning rate 1 changes
    # row i of W by -dL/da_i, the gradient at sample i's pre-activation a_i (logits; softmax
    # inputs when the student outputs probabilities).
    n, alpha, T = 8, 0.4, 3.0
    rng = np.random.default_rng(5)
    x = np.eye(n, dtype=np.float32)
    y = rng.integers(0, K, size=n)
    student = mlp(n, softmax_out=s_soft)
    student.build(seed=2)
    w0, b0 = student.get_weights()
    t_out = rng.normal(scale=2.0, size=(n, K)).astype(np.float32)
    t_out = softmax(t_out.astype(np.float64)).astype(np.float32) if t_soft else t_out
    teacher = mlp(n, softmax_out=t_soft)  # its outputs for x = I are its kernel rows (+ softmax)
    teacher.build(seed=0)
    teacher.set_weights([as_logits(t_out, not t_soft).astype(np.float32), np.zeros(K, np.float32)])
    np.testing.assert_allclose(teacher.predict(x), t_out, rtol=1e-5, atol=1e-7)
    d = distiller(student, teacher, alpha=alpha, temperature=T, optimizer=tl.optimizers.SGD(learning_rate=1.0))
    d.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0, seed=0)
    grad = (w0 - student.get_weights()[0]).astype(np.float64)

    a0 = w0.astype(np.float64) + b0

    def loss(a):
        s = softmax(a) if s_soft else a
        ce, kl = reference_terms(s, teacher.predict(x), y, T, not s_soft, not t_soft)
        return alpha * ce + (1 - alpha) * kl

    h = 1e-6
    fd = np.zeros_like(a0)
    for i in range(n):
        for k in range(K):
            up, down = a0.copy(), a0.copy()
            up[i, k] += h
            down[i, k] -= h
            fd[i, k] = (loss(up) - loss(down)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=2e-6)
    assert np.abs(fd).max() > 1e-3  # a gradient that is not trivially zero


def test_alpha_one_trains_exactly_as_the_student_loss_alone(xy, teachers):
    x, y = xy
    alone = mlp(x.shape[1], hidden=16)
    alone.compile("adam", tl.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    h_alone = alone.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=7)
    student = mlp(x.shape[1], hidden=16)
    h = distiller(student, teachers[False], alpha=1.0).fit(x, y, batch_size=16, epochs=3, verbose=0, seed=7)
    for a, b in zip(alone.get_weights(), student.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert h.history["loss"] == h_alone.history["loss"]
    assert h.history["student_loss"] == h_alone.history["loss"]
    assert h.history["accuracy"] == h_alone.history["accuracy"]


def test_distillation_moves_the_student_towards_the_teacher(xy, teachers):
    # alpha = 0: the student learns from the teacher only; the KL term falls over the epochs.
    x, y = xy
    student = mlp(x.shape[1], hidden=16)
    d = distiller(student, teachers[False], alpha=0.0, temperature=2.0,
                  optimizer=tl.optimizers.Adam(learning_rate=0.01))
    h = d.fit(x, y, epochs=30, verbose=0, seed=3)
    assert h.history["distillation_loss"][-1] < 0.5 * h.history["distillation_loss"][0]
    agree = np.mean(np.argmax(student.predict(x), 1) == np.argmax(teachers[False].predict(x), 1))
    assert agree > 0.8


def test_teacher_is_frozen_and_runs_in_inference_mode(xy):
    x, y = xy
    teacher = trained_teacher(x, y, bn=True)  # BatchNormalization and Dropout
    before = [w.copy() for w in teacher.get_weights()]
    t = teacher.predict(x)
    student = mlp(x.shape[1], hidden=8)
    student.build(seed=1)
    s0 = student.predict(x)
    d = distiller(student, teacher, alpha=0.5, temperature=2.0)
    h = d.fit(x, y, batch_size=len(x), epochs=2, verbose=0, seed=0)
    for a, b in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The targets are the teacher's inference outputs (no dropout, moving statistics).
    ce, kl = reference_terms(s0, t, y, 2.0)
    np.testing.assert_allclose(h.history["distillation_loss"][0], kl, rtol=1e-5)


def test_evaluate_equals_numpy_on_the_predictions(xy, teachers):
    x, y = xy
    student = mlp(x.shape[1], softmax_out=True, hidden=8)
    d = distiller(student, teachers[False])
    d.fit(x, y, epochs=2, verbose=0, seed=0)
    pred = d.predict(x)
    np.testing.assert_array_equal(pred, student.predict(x))
    ce, _ = reference_terms(pred, teachers[False].predict(x), y, 2.5, s_logits=False)
    acc = np.mean(np.argmax(pred, axis=1) == y)
    logs = d.evaluate(x, y, return_dict=True)
    assert list(logs) == ["student_loss", "accuracy"]
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-5)
    assert logs["accuracy"] == pytest.approx(acc, abs=1e-7)
    assert d.evaluate(x, y) == [logs["student_loss"], logs["accuracy"]]
    w = np.random.default_rng(0).uniform(0, 2, size=len(x))
    ce_w, _ = reference_terms(pred, teachers[False].predict(x), y, 2.5, s_logits=False, w=w)
    np.testing.assert_allclose(d.evaluate(x, y, sample_weight=w)[0], ce_w, rtol=1e-5)


def test_history_keys_and_validation(xy, teachers):
    x, y = xy
    student = mlp(x.shape[1], hidden=8)
    d = distiller(student, teachers[False])
    h = d.fit(x[:64], y[:64], epochs=2, verbose=0, seed=0, validation_data=(x[64:], y[64:]))
    assert sorted(h.history) == ["accuracy", "distillation_loss", "loss", "student_loss", "val_accuracy",
                                 "val_distillation_loss", "val_loss", "val_student_loss"]
    assert d.history is h and student.history is h
    # The last validation figures equal evaluate's (same student weights, inference mode).
    logs = d.evaluate(x[64:], y[64:], return_dict=True)
    assert h.history["val_student_loss"][-1] == pytest.approx(logs["student_loss"], rel=1e-6)
    assert h.history["val_accuracy"][-1] == pytest.approx(logs["accuracy"], abs=1e-7)
    ce, kl = reference_terms(student.predict(x[64:]), teachers[False].predict(x[64:]), y[64:], 2.5)
    assert h.history["val_distillation_loss"][-1] == pytest.approx(kl, rel=1e-5)
    assert h.history["val_loss"][-1] == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-5)


@pytest.mark.parametrize("compiled_before", [False, True])
def test_two_fits_continue_as_one(xy, teachers, compiled_before):
    # The optimizer's state carries over between fits (shuffle off: the same batches), also
    # when the student has a compile of its own, which it gets back after each fit.
    x, y = xy
    one, two = mlp(x.shape[1], hidden=8), mlp(x.shape[1], hidden=8)
    if compiled_before:
        two.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    d1, d2 = distiller(one, teachers[False]), distiller(two, teachers[False])
    d1.fit(x, y, epochs=2, shuffle=False, verbose=0, seed=0)
    d2.fit(x, y, epochs=1, shuffle=False, verbose=0, seed=0)
    d2.fit(x, y, epochs=1, shuffle=False, verbose=0, seed=0)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_array_equal(a, b)
    if compiled_before:  # the student's own compile: labels only
        loss, acc = two.evaluate(x, y)
        assert np.isfinite(loss) and acc == pytest.approx(np.mean(np.argmax(two.predict(x), 1) == y))
    else:
        with pytest.raises(RuntimeError, match="not compiled"):
            two.evaluate(x, y)


def test_the_student_is_a_normal_model(xy, teachers, tmp_path):
    x, y = xy
    student = mlp(x.shape[1], hidden=8)
    distiller(student, teachers[False]).fit(x, y, epochs=1, verbose=0, seed=0)
    path = student.save(tmp_path / "student.tlm")
    loaded = tl.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), student.predict(x))
    q = tl.convert(student, representative_data=x)
    assert q.predict(x).shape == (len(x), K)


def test_kl_divergence_loss_object():
    rng = np.random.default_rng(0)
    p, q = softmax(rng.normal(size=(5, 3))), softmax(rng.normal(size=(5, 3)))
    q[0, 1] = 0.0  # clipped to 1e-7
    want = np.mean([sum(a * np.log(a / max(b, EPS)) for a, b in zip(pr, qr)) for pr, qr in zip(p, q)])
    assert tl.losses.KLDivergence()(p, q) == pytest.approx(want, rel=1e-12)
    assert isinstance(tl.losses.get("kld"), tl.losses.KLDivergence)
    assert isinstance(tl.losses.get("kl_divergence"), tl.losses.KLDivergence)
    with pytest.raises(ValueError, match="Distiller"):
        tl.Sequential([tl.Input((3,)), tl.layers.Dense(3)]).compile("adam", "kld")


def test_bad_input_raises_clear_errors(xy, teachers):
    x, y = xy
    teacher = teachers[False]
    student = mlp(x.shape[1])
    d = tl.optimize.Distiller(student=student, teacher=teacher)
    scce = tl.losses.SparseCategoricalCrossentropy(from_logits=True)
    for alpha in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            d.compile("adam", ["accuracy"], scce, alpha=alpha)
    for temperature in (0, -1.0, float("inf"), None):
        with pytest.raises(ValueError, match="temperature"):
            d.compile("adam", ["accuracy"], scce, temperature=temperature)
    with pytest.raises(ValueError, match="KL divergence"):
        d.compile("adam", ["accuracy"], scce, distillation_loss_fn="mse")
    with pytest.raises(TypeError, match="KL divergence"):
        d.compile("adam", ["accuracy"], scce, distillation_loss_fn=lambda a, b: 0.0)
    with pytest.raises(ValueError, match="student_loss_fn"):
        d.compile("adam", ["accuracy"], "mse")
    with pytest.raises(TypeError, match="student_loss_fn"):
        d.compile("adam", ["accuracy"])
    with pytest.raises(ValueError, match="not an accuracy"):
        d.compile("adam", ["mae"], scce)
    with pytest.raises(RuntimeError, match="compile"):
        d.fit(x, y)
    d.compile("adam", ["accuracy"], scce)
    with pytest.raises(ValueError, match="class_weight"):
        d.fit(x, y, class_weight={0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})
    with pytest.raises(ValueError, match="out of range|label"):
        d.fit(x, np.full(len(x), K), verbose=0)
    with pytest.raises(ValueError, match="samples"):
        d.fit(x, y[:-1], verbose=0)
    # Shapes: outputs, inputs, rank; a teacher without weights; not models.
    wide = tl.Sequential([tl.Input((x.shape[1],)), tl.layers.Dense(K + 1)])
    wide.build(seed=0)
    with pytest.raises(ValueError, match="output shape"):
        tl.optimize.Distiller(student=wide, teacher=teacher)
    other_in = tl.Sequential([tl.Input((x.shape[1] + 1,)), tl.layers.Dense(K)])
    with pytest.raises(ValueError, match="input shape"):
        tl.optimize.Distiller(student=other_in, teacher=teacher)
    unbuilt_wide = tl.Sequential([tl.Input((x.shape[1],)), tl.layers.Dense(K + 1)])
    dw = tl.optimize.Distiller(student=unbuilt_wide, teacher=teacher)
    dw.compile("adam", ["accuracy"], scce)
    with pytest.raises(ValueError, match="output shape"):
        dw.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="no weights"):
        tl.optimize.Distiller(student=mlp(x.shape[1]), teacher=mlp(x.shape[1]))
    with pytest.raises(TypeError, match="tl.Model"):
        tl.optimize.Distiller(student=student, teacher="teacher")
    with pytest.raises(ValueError, match="same model"):
        tl.optimize.Distiller(student=teacher, teacher=teacher)
    with pytest.raises(ValueError, match="shape"):
        d.fit(x[:, :3], y, verbose=0)
