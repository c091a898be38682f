"""One model called from several Python threads at once (the binding releases the GIL while the
C++ core runs): every call returns what the same call returns alone, and a fit that another
thread's predictions interleave with trains exactly as it trains alone. And the thread pool
that training splits its batches on: runs are bit-identical for a thread count, and a forked
child trains on a pool of its own."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tinylearn as tl

SEED = 1
THREADS = 4


SHAPE = (12, 12, 2)


def cnn(seed=SEED):
    """A convolution (whose im2col scratch the layer keeps between calls), then dense layers."""
    L = tl.layers
    m = tl.Sequential([L.Conv2D(8, 3, activation="relu", input_shape=SHAPE), L.Flatten(),
                       L.Dense(32, activation="relu"), L.Dense(10)])
    m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    m.build(seed=seed)
    return m


def numpy_forward(model, x):
    """The CNN's forward pass in NumPy (float64), from the model's weights."""
    k, b, w1, b1, w2, b2 = (w.astype(np.float64) for w in model.get_weights())
    win = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2))
    h = np.maximum(np.einsum("nhwcij,ijco->nhwo", win, k) + b, 0).reshape(len(x), -1)
    return np.maximum(h @ w1 + b1, 0) @ w2 + b2


def run_threads(fn, n=THREADS):
    """fn(i) on n threads started together; re-raises the first exception."""
    errors = []
    start = threading.Barrier(n)

    def body(i):
        try:
            start.wait()
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_predict_and_evaluate_from_threads_match_single_threaded_results():
    m = cnn()
    rng = np.random.default_rng(SEED)
    # Each thread its own inputs (the same batch size: one shape of buffers), so that a call
    # that reads another thread's activations returns other numbers.
    xs = [rng.normal(size=(96,) + SHAPE).astype(np.float32) for _ in range(THREADS)]
    ys = [rng.normal(size=(96, 10)).astype(np.float32) for _ in range(THREADS)]
    expected = [m.predict(x) for x in xs]
    expected_eval = [m.evaluate(x, y) for x, y in zip(xs, ys)]
    for x, e in zip(xs, expected):  # the single-threaded results themselves, against NumPy
        np.testing.assert_allclose(e, numpy_forward(m, x), rtol=1e-4, atol=1e-4)
    wrong = [0] * THREADS

    def calls(i):
        for k in range(400):
            if k % 4 == 3:
                wrong[i] += m.evaluate(xs[i], ys[i]) != expected_eval[i]
            else:
                wrong[i] += not np.array_equal(m.predict(xs[i]), expected[i])

    run_threads(calls)
    assert wrong == [0] * THREADS


@pytest.mark.slow
def test_fit_while_other_threads_predict():
    rng = np.random.default_rng(SEED + 1)
    x = rng.normal(size=(512,) + SHAPE).astype(np.float32)
    y = rng.normal(size=(512, 10)).astype(np.float32)
    xp = rng.normal(size=(32,) + SHAPE).astype(np.float32)  # fit's batch size: the same buffers
    alone = cnn()
    alone.fit(x, y, epochs=30, batch_size=32, seed=SEED, verbose=0)
    # A few rounds: on a model whose calls do not take turns, about one fit in five came out
    # undisturbed by the predictions.
    for _ in range(3):
        m = cnn()
        outputs = []
        fitted = threading.Event()

        def work(i):
            if i == 0:
                m.fit(x, y, epochs=30, batch_size=32, seed=SEED, verbose=0)
                fitted.set()
            else:
                while not fitted.is_set():  # predictions all along the fit
                    outputs.append(m.predict(xp))

        run_threads(work, 3)
        # Predictions made during the fit saw the weights of some completed step; the fit
        # itself was not disturbed by them: its weights are those of the same fit run alone.
        assert all(o.shape == (32, 10) and np.isfinite(o).all() for o in outputs)
        for a, b in zip(m.get_weights(), alone.get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(m.predict(xp), numpy_forward(m, xp), rtol=1e-4, atol=1e-4)


def test_int8_invoke_and_predict_from_threads():
    m = cnn()
    rng = np.random.default_rng(SEED + 2)
    q = tl.convert(m, rng.normal(size=(64,) + SHAPE).astype(np.float32))
    xs = [rng.normal(size=(n,) + SHAPE).astype(np.float32) for n in (1, 3, 64, 200)]
    xq = [rng.integers(-128, 128, size=(n,) + SHAPE, dtype=np.int8) for n in (1, 5, 64, 200)]
    expected = [q.predict(x) for x in xs]
    expected_q = [q.invoke(x) for x in xq]
    # Batches against sample-by-sample calls (the batch path splits samples over the cores).
    np.testing.assert_array_equal(expected_q[3], np.concatenate([q.invoke(r[None]) for r in xq[3]]))
    wrong = [0] * THREADS

    def calls(i):
        for k in range(300):
            j = (i + k) % 4
            wrong[i] += not np.array_equal(q.predict(xs[j]), expected[j])
            wrong[i] += not np.array_equal(q.invoke(xq[j]), expected_q[j])

    run_threads(calls)
    assert wrong == [0] * THREADS


TRAIN_SCRIPT = """
import hashlib, numpy as np, tinylearn as tl  # noqa: E401
L = tl.layers
rng = np.random.default_rng(1)
x = rng.normal(size=(256, 12, 12, 2)).astype(np.float32)
y = rng.integers(0, 10, 256)
for _ in range(2):  # the same model trained twice in one process
    m = tl.Sequential([L.Conv2D(8, 3, activation="relu", input_shape=(12, 12, 2)), L.MaxPooling2D(),
                       L.Flatten(), L.Dense(32, activation="relu"), L.Dense(10)])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=2, batch_size=64, seed=1, verbose=0)
    print(hashlib.sha256(b"".join(w.tobytes() for w in m.get_weights())).hexdigest())
"""


@pytest.mark.slow
def test_training_is_bit_identical_run_to_run_for_a_thread_count():
    """Parts go to whichever thread claims them first, but they are fixed by the batch and the
    thread count, and their partial sums are added in part order."""
    for threads in (2, 3):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        first, second = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT], env=env, capture_output=True,
                                       text=True, check=True).stdout.split()
        assert first == second


def test_training_in_a_forked_child():
    """A forked child does not have its parent's pool threads: it trains on a new pool."""
    m = cnn()
    rng = np.random.default_rng(SEED + 3)
    x = rng.normal(size=(128,) + SHAPE).astype(np.float32)
    y = rng.normal(size=(128, 10)).astype(np.float32)
    m.fit(x, y, epochs=1, batch_size=64, seed=SEED, verbose=0)  # the pool exists now
    pid = os.fork()
    if pid == 0:  # the child: train, check, and leave without running pytest's teardown
        ok = False
        try:
            m.fit(x, y, epochs=2, batch_size=64, seed=SEED, verbose=0)
            ok = bool(np.allclose(m.predict(x), numpy_forward(m, x), rtol=1e-4, atol=1e-4))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
