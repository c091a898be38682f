"""fit / evaluate / predict with Keras's signatures and callbacks, against NumPy references and
Keras's documented behaviour (the expected values are derived in the comments)."""

import csv
import math

import numpy as np
import pytest

import tinylearn as tl

L = tl.layers
CB = tl.callbacks


def dense_model(units=3, features=4, seed=3):
    m = tl.Sequential([L.Dense(units, input_shape=(features,))])
    m.build(seed=seed)
    return m


def data(rng, n=10, features=4, units=3):
    return (rng.normal(size=(n, features)).astype(np.float32),
            rng.normal(size=(n, units)).astype(np.float32))


class BatchCounter(CB.Callback):
    def on_train_begin(self, logs=None):
        self.per_epoch = {}

    def on_train_batch_end(self, batch, logs=None):
        self.per_epoch[self.epoch] = batch + 1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


# -- signature ---------------------------------------------------------------------------------

def test_positional_arguments_follow_keras(rng):
    """Keras: fit(x, y, batch_size, epochs, ...); model.fit(x, y, 64, 2) is 2 epochs of batch 64."""
    x, y = data(rng, n=200)
    m = dense_model()
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=0.01), loss="mse")
    count = BatchCounter()
    h = m.fit(x, y, 64, 2, 0, [count])
    assert h.epoch == [0, 1]
    assert count.per_epoch == {0: 4, 1: 4}  # ceil(200 / 64) steps per epoch
    assert h.params["steps"] == 4 and h.params["epochs"] == 2
    assert m._core.get_optimizer_state()[0] == 8  # optimizer steps taken
    # The same as by keywords.
    m2 = dense_model()
    m2.compile(optimizer=tl.optimizers.SGD(learning_rate=0.01), loss="mse")
    m2.fit(x, y, batch_size=64, epochs=2, verbose=0)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    # batch_size None is Keras's 32: ceil(200 / 32) = 7 steps.
    count = BatchCounter()
    m.fit(x, y, None, 1, 0, [count])
    assert count.per_epoch == {0: 7}
    # Keras's 16 positional parameters; tinylearn's seed is keyword-only.
    with pytest.raises(TypeError, match="takes from 1 to 17 positional arguments but 18 were given"):
        m.fit(x, y, 4, 1, 0, None, 0.0, None, True, None, None, 0, None, None, None, 1, 7)


def test_arguments_tinylearn_cannot_honour_are_refused(rng):
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    for kwargs in ({"steps_per_epoch": 2}, {"validation_steps": 1}):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"fit: {name}=.* is not supported"):
            m.fit(x, y, verbose=0, **kwargs)
    with pytest.raises(ValueError, match="evaluate: steps=3 is not supported"):
        m.evaluate(x, y, steps=3)
    with pytest.raises(ValueError, match="predict: steps=3 is not supported"):
        m.predict(x, steps=3)
    with pytest.raises(ValueError, match="verbose must be 'auto', 0, 1 or 2, got 'loud'"):
        m.fit(x, y, verbose="loud")
    with pytest.raises(ValueError, match="shuffle must be True or False"):
        m.fit(x, y, shuffle="batch", verbose=0)


# -- sample_weight -----------------------------------------------------------------------------

def test_sample_weight_sgd_steps_match_numpy(rng):
    """Keras's reduction "sum_over_batch_size": a batch's loss is sum_i w_i l_i / batch_size,
    l_i = mean_k (p_ik - y_ik)^2; three SGD steps over batches of 4, 4 and 2 samples."""
    x, y = data(rng, n=10)
    w = rng.uniform(0, 2, size=10).astype(np.float32)
    w[3] = 0.0
    m = dense_model()
    kernel, bias = [v.astype(np.float64) for v in m.get_weights()]
    lr = 0.1
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=lr), loss="mse")
    batch_logs = []
    log = CB.LambdaCallback(on_train_batch_end=lambda b, logs: batch_logs.append(logs["loss"]))
    h = m.fit(x, y, batch_size=4, epochs=1, shuffle=False, sample_weight=w, verbose=0, callbacks=[log])

    losses, sizes = [], []
    for begin in range(0, 10, 4):
        xb, yb, wb = (a[begin:begin + 4].astype(np.float64) for a in (x, y, w))
        pred = xb @ kernel + bias
        per_sample = np.mean((pred - yb) ** 2, axis=1)
        losses.append(np.sum(wb * per_sample) / len(xb))
        sizes.append(len(xb))
        dpred = 2 * wb[:, None] * (pred - yb) / (len(xb) * pred.shape[1])
        kernel, bias = kernel - lr * xb.T @ dpred, bias - lr * dpred.sum(axis=0)
    got_kernel, got_bias = m.get_weights()
    np.testing.assert_allclose(got_kernel, kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_bias, bias, rtol=1e-5, atol=1e-6)
    # Logs: the running mean over the epoch's samples (each batch weighted by its size).
    running = np.cumsum(np.multiply(losses, sizes)) / np.cumsum(sizes)
    np.testing.assert_allclose(batch_logs, running, rtol=1e-5)
    assert h.history["loss"][0] == pytest.approx(running[-1], rel=1e-5)


def test_evaluate_sample_weight_matches_numpy(rng):
    x = rng.normal(size=(12, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=12)
    w = rng.uniform(0, 3, size=12)
    m = dense_model(units=4, features=5)
    m.compile(optimizer="adam", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    z = m.predict(x).astype(np.float64)
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(12), labels]
    loss, acc = m.evaluate(x, labels, sample_weight=w)
    assert loss == pytest.approx(np.sum(w * nll) / 12, rel=1e-5)  # sum(w l) / N, not / sum(w)
    assert acc == pytest.approx(np.mean(z.argmax(axis=1) == labels))  # metrics: unweighted
    logs = m.evaluate(x, labels, sample_weight=w.reshape(-1, 1), return_dict=True)
    assert logs == {"loss": pytest.approx(loss), "accuracy": pytest.approx(acc)}
    assert m.evaluate(x, labels) == pytest.approx([np.mean(nll), acc], rel=1e-5)


def test_validation_sample_weights(rng):
    x, y = data(rng, n=20)
    w = rng.uniform(0, 2, size=20).astype(np.float32)

    def weighted_mse(m, xs, ys, ws):
        return np.sum(ws * np.mean((m.predict(xs) - ys) ** 2, axis=1)) / len(xs)

    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    h = m.fit(x[:15], y[:15], epochs=1, validation_data=(x[15:], y[15:], w[15:]), verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(weighted_mse(m, x[15:], y[15:], w[15:]), rel=1e-5)
    # validation_split holds out the last samples' weights too, as Keras.
    h = m.fit(x, y, epochs=1, validation_split=0.25, sample_weight=w, verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(weighted_mse(m, x[15:], y[15:], w[15:]), rel=1e-5)


def test_sample_weight_errors(rng):
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"fit: sample_weight: expected shape \(10,\).*got shape \(9,\)"):
        m.fit(x, y, sample_weight=np.ones(9), verbose=0)
    for bad in (-1.0, np.nan, np.inf):
        w = np.ones(10)
        w[2] = bad
        with pytest.raises(ValueError, match="fit: sample_weight: weights must be finite numbers >= 0"):
            m.fit(x, y, sample_weight=w, verbose=0)
    with pytest.raises(TypeError, match="evaluate: sample_weight: expected real numbers"):
        m.evaluate(x, y, sample_weight=["a"] * 10)
    c = dense_model(units=3)
    c.compile(optimizer="sgd", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="class_weight or sample_weight, not both"):
        c.fit(x, np.arange(10) % 3, class_weight={0: 1, 1: 1, 2: 1}, sample_weight=np.ones(10), verbose=0)


# -- initial_epoch -----------------------------------------------------------------------------

def test_initial_epoch_numbers_epochs_as_keras(rng, capsys):
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    seen = []
    log = CB.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(("begin", e)),
                            on_epoch_end=lambda e, logs: seen.append(("end", e)))
    h = m.fit(x, y, batch_size=5, epochs=5, initial_epoch=2, verbose=2, callbacks=[log])
    assert h.epoch == [2, 3, 4] and len(h.history["loss"]) == 3
    assert seen == [("begin", 2), ("end", 2), ("begin", 3), ("end", 3), ("begin", 4), ("end", 4)]
    assert "Epoch 3/5" in capsys.readouterr().out and m._core.get_optimizer_state()[0] == 3 * 2
    # initial_epoch >= epochs: nothing runs, as in Keras.
    before = m.get_weights()
    h = m.fit(x, y, epochs=2, initial_epoch=2, verbose=0)
    assert h.epoch == [] and h.history == {}
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- callbacks ---------------------------------------------------------------------------------

def test_callback_base_class_has_keras_hooks(rng):
    hooks = ["set_model", "set_params", "on_train_begin", "on_train_end", "on_epoch_begin",
             "on_epoch_end", "on_train_batch_begin", "on_train_batch_end", "on_test_begin",
             "on_test_end", "on_predict_begin", "on_predict_end", "on_batch_begin", "on_batch_end"]
    assert all(callable(getattr(CB.Callback, h)) for h in hooks)
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    calls = []

    class Probe(CB.Callback):
        def on_train_begin(self, logs=None):
            calls.append(("train_begin", self.model is m, dict(self.params)))

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

        def on_test_begin(self, logs=None):
            calls.append(("test_begin",))

        def on_test_end(self, logs=None):
            calls.append(("test_end", dict(logs)))

        def on_predict_begin(self, logs=None):
            calls.append(("predict_begin",))

        def on_predict_end(self, logs=None):
            calls.append(("predict_end",))

    h = m.fit(x, y, batch_size=4, epochs=10, verbose=0, callbacks=[Probe()])
    assert h.epoch == [0, 1]  # stop_training from a callback ends fit after that epoch
    assert calls == [("train_begin", True, {"verbose": 0, "epochs": 10, "steps": 3})]
    calls.clear()
    logs = m.evaluate(x, y, callbacks=[Probe()], return_dict=True)
    m.predict(x, callbacks=[Probe()])
    assert calls == [("test_begin",), ("test_end", logs), ("predict_begin",), ("predict_end",)]
    # fit's validation runs the test hooks too, on the epochs it validates (validation_freq).
    calls.clear()
    h = m.fit(x, y, epochs=4, validation_data=(x, y), validation_freq=2, verbose=0, callbacks=[Probe()])
    assert [c[0] for c in calls] == ["train_begin", "test_begin", "test_end"]  # epoch 1 only
    assert calls[2][1] == {"loss": pytest.approx(h.history["val_loss"][0])}
    assert len(h.history["val_loss"]) == 1 and len(h.history["loss"]) == 2


def test_lambda_callback_calls_every_hook_in_keras_order(rng):
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    calls = []
    log = CB.LambdaCallback(
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch_begin {epoch}"),
        on_train_batch_begin=lambda batch, logs: calls.append(f"batch_begin {batch}"),
        on_train_batch_end=lambda batch, logs: calls.append(f"batch_end {batch}"),
        on_epoch_end=lambda epoch, logs: calls.append(f"epoch_end {epoch}"),
        on_train_end=lambda logs: calls.append(f"train_end {sorted(logs)}"))
    m.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[log])
    epoch = lambda e: [f"epoch_begin {e}", "batch_begin 0", "batch_end 0", "batch_begin 1",
                       "batch_end 1", "batch_begin 2", "batch_end 2", f"epoch_end {e}"]
    assert calls == ["train_begin", *epoch(0), *epoch(1), "train_end ['loss']"]
    # Keras 2's names through **kwargs.
    ends = []
    m.fit(x, y, batch_size=5, epochs=1, verbose=0,
          callbacks=[CB.LambdaCallback(on_batch_end=lambda batch, logs: ends.append(batch))])
    assert ends == [0, 1]
    with pytest.raises(TypeError, match="unknown hook 'on_epoch_finish'"):
        CB.LambdaCallback(on_epoch_finish=print)


def test_stop_training_in_a_batch_hook_ends_the_epoch_there(rng):
    x, y = data(rng, n=20)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    batch_logs = []

    def on_batch_end(batch, logs):
        batch_logs.append(logs["loss"])
        if batch == 2:
            m.stop_training = True

    h = m.fit(x, y, batch_size=2, epochs=3, verbose=0,
              callbacks=[CB.LambdaCallback(on_train_batch_end=on_batch_end)])
    assert len(batch_logs) == 3 and h.epoch == [0]
    assert h.history["loss"] == [pytest.approx(batch_logs[-1])]  # the epoch's logs: 3 batches
    assert m._core.get_optimizer_state()[0] == 3


def test_learning_rate_scheduler_one_and_two_argument_schedules(rng):
    x, y = data(rng)
    for schedule in (lambda epoch: 0.1 * 0.5 ** epoch, lambda epoch, lr: 0.1 * 0.5 ** epoch):
        m = dense_model()
        m.compile(optimizer="sgd", loss="mse")
        lrs = []
        h = m.fit(x, y, epochs=3, verbose=0, callbacks=[
            CB.LearningRateScheduler(schedule),
            CB.LambdaCallback(on_epoch_begin=lambda e, logs: lrs.append(m.learning_rate))])
        assert lrs == pytest.approx([0.1, 0.05, 0.025])
        assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])  # as Keras logs it
    # A TypeError inside a two-argument schedule is the schedule's, not a cue to retry.
    def broken(epoch, lr):
        raise TypeError("broken schedule")

    with pytest.raises(TypeError, match="broken schedule"):
        m.fit(x, y, verbose=0, callbacks=[CB.LearningRateScheduler(broken)])
    # An optimizer with a learning-rate schedule sets the rate itself each step: as in Keras,
    # setting it is refused rather than silently undone.
    decay = tl.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=decay), loss="mse")
    with pytest.raises(TypeError, match="compiled with a learning-rate schedule"):
        m.fit(x, y, verbose=0, callbacks=[CB.LearningRateScheduler(lambda epoch: 0.1)])


def test_learning_rate_scheduler_keras_docstring_example():
    """keras.callbacks.LearningRateScheduler's example: SGD (lr 0.01), the rate kept for 10
    epochs then multiplied by exp(-0.1) per epoch; after 15 epochs round(lr, 5) == 0.00607."""
    m = tl.Sequential([L.Dense(10, input_shape=(20,))])
    m.compile(tl.optimizers.SGD(), loss="mse")
    assert round(m.learning_rate, 5) == 0.01
    sched = CB.LearningRateScheduler(lambda epoch, lr: lr if epoch < 10 else lr * math.exp(-0.1))
    m.fit(np.arange(100).reshape(5, 20), np.zeros((5, 10)), epochs=15, callbacks=[sched], verbose=0)
    assert round(m.learning_rate, 5) == 0.00607


def scripted(metric, values):
    """A callback that puts values[epoch] into the epoch's logs as `metric` (callbacks share
    one logs dict, in list order, as in Keras)."""
    return CB.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update({metric: values[epoch]}))


def test_reduce_lr_on_plateau_follows_keras(rng):
    """Keras's rule, mode min: an epoch improves when score < best - min_delta; otherwise, out
    of cooldown, wait += 1 and at wait >= patience lr = max(lr * factor, min_lr), cooldown
    starts, wait = 0; in cooldown the counter counts down and wait stays 0. With patience 2,
    cooldown 1, factor 0.5, min_lr 0.02:
      epoch 0 1.0 best; 1 0.9 best; 2 0.95 wait 1; 3 0.93 wait 2 -> 0.05 (cooldown 1);
      4 0.91 cooldown ends, wait 1; 5 0.92 wait 2 -> 0.025; 6 0.5 best;
      7 0.6 wait 1; 8 0.7 wait 2 -> max(0.0125, 0.02) = 0.02; 9 0.8 wait 1.
    The logs' learning_rate is the epoch's (set before any reduction)."""
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=0.1), loss="mse")
    scores = [1.0, 0.9, 0.95, 0.93, 0.91, 0.92, 0.5, 0.6, 0.7, 0.8]
    plateau = CB.ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, min_delta=0.0,
                                   cooldown=1, min_lr=0.02)
    h = m.fit(x, y, epochs=10, verbose=0, callbacks=[scripted("score", scores), plateau])
    expected = [0.1] * 4 + [0.05] * 2 + [0.025] * 3 + [0.02]
    assert h.history["learning_rate"] == pytest.approx(expected)
    assert m.learning_rate == pytest.approx(0.02)
    with pytest.warns(UserWarning, match="conditioned on metric `val_loss` which is not available. "
                                         "Available metrics are: loss,learning_rate"):
        m.fit(x, y, epochs=1, verbose=0, callbacks=[CB.ReduceLROnPlateau()])
    with pytest.raises(ValueError, match="factor must be in"):
        CB.ReduceLROnPlateau(factor=1.0)


def test_early_stopping_keras_docstring_example():
    """keras.callbacks.EarlyStopping's example: monitor loss, patience 3, SGD on
    np.arange(100).reshape(5, 20) (the loss diverges, so epoch 0 stays the best): "Only 4
    epochs are run"."""
    m = tl.Sequential([L.Dense(10, input_shape=(20,))])
    m.compile(tl.optimizers.SGD(), loss="mse")
    stop = CB.EarlyStopping(monitor="loss", patience=3)
    h = m.fit(np.arange(100).reshape(5, 20), np.zeros((5, 10)), epochs=10, batch_size=1,
              callbacks=[stop], verbose=0)
    assert len(h.history["loss"]) == 4 and stop.stopped_epoch == 3


def test_early_stopping_patience_and_missing_monitor(rng):
    """Patience 2 = stop after 2 epochs without improvement: 1.0, 0.9 (best), 0.95, 0.96 ->
    stops at epoch 3; start_from_epoch=3 ignores the first 3 epochs, so it stops at epoch 5."""
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    scores = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]
    h = m.fit(x, y, epochs=8, verbose=0,
              callbacks=[scripted("score", scores), CB.EarlyStopping(monitor="score", patience=2)])
    assert h.epoch == [0, 1, 2, 3]
    h = m.fit(x, y, epochs=8, verbose=0, callbacks=[
        scripted("score", scores), CB.EarlyStopping(monitor="score", patience=2, start_from_epoch=3)])
    assert h.epoch == [0, 1, 2, 3, 4, 5]
    # A monitor missing from the logs warns, naming the available ones, and training goes on.
    with pytest.warns(UserWarning, match="Early stopping conditioned on metric `val_loss` which is "
                                         "not available. Available metrics are: loss"):
        h = m.fit(x, y, epochs=3, verbose=0, callbacks=[CB.EarlyStopping()])
    assert h.epoch == [0, 1, 2]


def test_model_checkpoint_on_a_missing_monitor_warns_and_skips(rng, tmp_path):
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse")
    ckpt = CB.ModelCheckpoint(tmp_path / "best.tlmodel", save_best_only=True)  # val_loss, no validation
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available, skipping"):
        m.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    assert list(tmp_path.iterdir()) == []


def test_terminate_on_nan_stops_at_the_first_bad_batch(rng, capsys):
    x, y = data(rng, n=50)
    x *= 100
    m = dense_model()
    m.compile(optimizer=tl.optimizers.SGD(learning_rate=10.0), loss="mse")  # diverges
    losses = []
    log = CB.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(logs["loss"]))
    h = m.fit(x, y, batch_size=1, epochs=5, verbose=0, callbacks=[log, CB.TerminateOnNaN()])
    assert not math.isfinite(losses[-1]) and all(math.isfinite(v) for v in losses[:-1])
    assert len(losses) < 250 and len(h.epoch) == 1 + (len(losses) - 1) // 50
    assert f"Batch {(len(losses) - 1) % 50}: Invalid loss, terminating training" in capsys.readouterr().out
    m2 = dense_model()
    m2.compile(optimizer=tl.optimizers.SGD(learning_rate=10.0), loss="mse")
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch"):
        m2.fit(x, y, batch_size=1, epochs=5, verbose=0, callbacks=[CB.TerminateOnNaN(raise_error=True)])


def test_csv_logger_writes_keras_rows_and_appends(rng, tmp_path):
    x, y = data(rng)
    m = dense_model()
    m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    path = tmp_path / "log.csv"
    rows_seen = []
    h = m.fit(x, y, epochs=3, validation_split=0.2, verbose=0, callbacks=[
        CB.CSVLogger(path), CB.LambdaCallback(on_epoch_end=lambda e, logs: rows_seen.append(
            path.read_bytes().count(b"\r\n")))])
    assert rows_seen == [2, 3, 4]  # header + one row per epoch, written after each epoch
    text = path.read_bytes().decode()
    assert text.startswith("epoch,loss,mae,val_loss,val_mae\r\n")  # Keras: sorted keys, \r\n
    rows = list(csv.DictReader(text.splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in ("loss", "mae", "val_loss", "val_mae"):
        assert [float(r[key]) for r in rows] == h.history[key]
    # append=True continues the file without a second header (resuming with initial_epoch).
    m.fit(x, y, epochs=5, initial_epoch=3, validation_split=0.2, verbose=0,
          callbacks=[CB.CSVLogger(path, append=True)])
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    # append=False starts over; another separator; validation every 2nd epoch leaves "NA".
    m.fit(x, y, epochs=2, validation_split=0.2, validation_freq=2, verbose=0,
          callbacks=[CB.CSVLogger(path, separator=";")])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch;loss;mae;val_loss;val_mae" and len(lines) == 3
    assert lines[1].endswith(";NA;NA") and "NA" not in lines[2]
