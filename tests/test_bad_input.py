"""Bad input gets a clear Python exception that says what was expected, never a crash."""

import struct
import zlib

import numpy as np
import pytest

import tinylearn as tl
from conftest import sine_model


@pytest.fixture
def compiled():
    m = sine_model()
    m.compile(optimizer="adam", loss="mse")
    return m


X = np.linspace(0, 6, 32, dtype=np.float32).reshape(-1, 1)
Y = np.sin(X)


def test_wrong_input_shape(trained_sine, compiled):
    model, _ = trained_sine
    with pytest.raises(ValueError, match=r"expected shape \(N, 1\), got shape \(4, 2\)"):
        model.predict(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"expected shape \(N, 1\), got shape \(2, 3, 1\)"):
        compiled.fit(np.zeros((2, 3, 1)), np.zeros((2, 1)), verbose=0)
    with pytest.raises(ValueError, match=r"fit: y: expected shape \(N, 1\), got shape \(32, 2\)"):
        compiled.fit(X, np.zeros((32, 2)), verbose=0)
    with pytest.raises(ValueError, match="x has 32 samples but y has 31"):
        compiled.fit(X, Y[:31], verbose=0)


def test_wrong_dtype(trained_sine, compiled, sine_int8):
    model, _ = trained_sine
    with pytest.raises(TypeError, match="expected a numeric array, got dtype <U"):
        model.predict(np.array([["a"], ["b"]]))
    with pytest.raises(TypeError, match="expected a numeric array, got dtype object"):
        compiled.fit(np.array([[1.0], [None]], dtype=object), Y[:2], verbose=0)
    with pytest.raises(TypeError, match="expected an int8 array, got dtype float64"):
        sine_int8.invoke(np.zeros((3, 1)))
    # Other one-byte dtypes of the right shape are not int8 either (invoke's fast path takes
    # exactly int8), nor is a wrong width.
    for dtype in (np.uint8, np.bool_, np.int16):
        with pytest.raises(TypeError, match=f"expected an int8 array, got dtype {np.dtype(dtype)}"):
            sine_int8.invoke(np.zeros((3, 1), dtype=dtype))
    with pytest.raises(ValueError, match=r"expected shape \(N, 1\), got \(3, 2\)"):
        sine_int8.invoke(np.zeros((3, 2), dtype=np.int8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_training_data(compiled, bad):
    x = X.copy()
    x[3, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        compiled.fit(x, Y, verbose=0)
    y = Y.copy()
    y[5, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        compiled.fit(X, y, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        compiled.fit(X, Y, validation_data=(x, Y), verbose=0)


def test_empty_arrays(compiled, trained_sine, sine_int8):
    model, _ = trained_sine
    empty = np.zeros((0, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="expected at least one sample"):
        compiled.fit(empty, empty, verbose=0)
    with pytest.raises(ValueError, match="expected at least one sample"):
        model.predict(empty)
    with pytest.raises(ValueError, match="expected at least one sample"):
        tl.convert(model, representative_data=empty)
    with pytest.raises(ValueError, match="expected at least one sample"):
        sine_int8.invoke(np.zeros((0, 1), dtype=np.int8))


def test_fit_before_compile():
    with pytest.raises(RuntimeError, match=r"not compiled; call model.compile"):
        sine_model().fit(X, Y, verbose=0)


def test_bad_hyperparameters(compiled):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        compiled.fit(X, Y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="epochs must be a non-negative integer, got -1"):
        compiled.fit(X, Y, epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        tl.layers.Dense(4, activation="gelu")
    with pytest.raises(ValueError, match="units must be a positive integer"):
        tl.layers.Dense(0)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        compiled.compile(optimizer="adam", loss="hinge")
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        compiled.compile(optimizer="adagrad", loss="mse")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        compiled.fit(X, Y, seed=-3, verbose=0)


def test_convert_untrained_model():
    with pytest.raises(RuntimeError, match="no weights yet"):
        tl.convert(sine_model(), representative_data=X)


def _with_crc(blob: bytearray) -> bytes:
    blob[12:16] = struct.pack("<I", zlib.crc32(bytes(blob[16:])))
    return bytes(blob)


def test_truncated_model_file(sine_int8, tmp_path):
    blob = sine_int8.to_bytes()
    for n in (0, 5, 31, 32, len(blob) // 2, len(blob) - 1):
        path = tmp_path / f"cut{n}.tlm"
        path.write_bytes(blob[:n])
        with pytest.raises(tl.ModelFormatError, match=r"truncated|empty"):
            tl.load_int8(path)


def test_corrupted_model_file(sine_int8, tmp_path):
    blob = bytearray(sine_int8.to_bytes())
    blob[len(blob) // 2] ^= 0x40
    path = tmp_path / "corrupt.tlm"
    path.write_bytes(bytes(blob))
    with pytest.raises(tl.ModelFormatError, match="checksum mismatch"):
        tl.load_int8(path)
    path.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(tl.ModelFormatError, match="not a tinylearn model"):
        tl.load_int8(path)


def test_model_file_of_a_newer_version(sine_int8, tmp_path):
    blob = bytearray(sine_int8.to_bytes())
    blob[4:6] = struct.pack("<H", tl.FORMAT_VERSION + 1)
    path = tmp_path / "future.tlm"
    path.write_bytes(_with_crc(blob))
    with pytest.raises(tl.ModelFormatError, match=r"version 2 is newer than this tinylearn reads \(version 1\)"):
        tl.load_int8(path)


def test_structurally_hostile_blobs_are_rejected(sine_int8):
    """Valid checksum, hostile contents: the core's checks, not the CRC, must stop these."""
    good = sine_int8.to_bytes()
    cases = {
        "huge dims": (32 + 4, struct.pack("<i", 2**30)),                 # tensor 0, dims[0]
        "offset past the end": (32 + 20 + 32, struct.pack("<I", 2**31)),  # tensor 1 offset
        "offset overflowing": (32 + 20 + 32, struct.pack("<I", 0xFFFFFFFC)),
        "negative dim": (32 + 8, struct.pack("<i", -1)),
        "tensor count": (20, struct.pack("<H", 60000)),
        "arena too small": (16, struct.pack("<I", 4)),
    }
    n_tensors = struct.unpack_from("<H", good, 20)[0]
    op0 = 32 + 32 * n_tensors
    cases["unknown opcode"] = (op0, struct.pack("<H", 999))
    cases["tensor index out of range"] = (op0 + 4, struct.pack("<H", n_tensors + 7))
    for name, (at, value) in cases.items():
        blob = bytearray(good)
        blob[at:at + len(value)] = value
        with pytest.raises(tl.ModelFormatError, match="invalid tinylearn model"):
            tl.Int8Model(_with_crc(blob))


def test_thousands_of_mutated_blobs_never_crash(sine_int8):
    rng = np.random.default_rng(7)
    good = sine_int8.to_bytes()
    rejected = ran = 0
    for _ in range(3000):
        blob = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            blob[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
        try:
            q = tl.Int8Model(_with_crc(blob))  # with a valid CRC, so the structure is checked
        except tl.ModelFormatError:
            rejected += 1
            continue
        q.invoke(np.arange(-128, 128, dtype=np.int8).reshape(-1, 1))
        ran += 1
    assert rejected > 100 and ran > 100  # both paths were exercised


def test_sizes_beyond_the_core_name_the_argument(compiled, trained_sine):
    model, _ = trained_sine
    with pytest.raises(ValueError, match="fit: batch_size must be at most 9,223,372,036,854,775,807, "
                                         "got 18446744073709551616"):
        compiled.fit(X, Y, batch_size=2**64, verbose=0)
    with pytest.raises(ValueError, match="fit: epochs must be at most 2,147,483,647"):
        compiled.fit(X, Y, epochs=2**40, verbose=0)
    with pytest.raises(ValueError, match="predict: batch_size must be at most"):
        model.predict(X, batch_size=2**64)
    # Large but representable: one batch of all samples, as Keras.
    compiled.fit(X, Y, batch_size=2**62, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.predict(X, batch_size=2**62), model.predict(X))


def test_ragged_lists_name_the_argument(compiled, trained_sine):
    model, _ = trained_sine
    ragged = [[1.0], [2.0, 3.0]]
    with pytest.raises(ValueError, match="fit: x: expected a rectangular array, got a ragged sequence"):
        compiled.fit(ragged, [[0.0], [1.0]], verbose=0)
    with pytest.raises(ValueError, match="fit: y: expected a rectangular array, got a ragged sequence"):
        compiled.fit([[1.0], [2.0]], ragged, verbose=0)
    with pytest.raises(ValueError, match="predict: x: expected a rectangular array"):
        model.predict(ragged)


def test_predict_and_evaluate_refuse_batch_size_zero(trained_sine):
    model, _ = trained_sine
    with pytest.raises(ValueError, match="predict: batch_size must be a positive integer, got 0"):
        model.predict(X, batch_size=0)
    with pytest.raises(ValueError, match="evaluate: batch_size must be a positive integer, got 0"):
        model.evaluate(X, Y, batch_size=0)


def test_class_weight_values_and_coverage(rng):
    m = tl.Sequential([tl.layers.Dense(3, input_shape=(4,))])
    m.compile(optimizer="sgd", loss=tl.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"class_weight\[1\] must be a finite number >= 0"):
            m.fit(x, y, class_weight={0: 1.0, 1: bad, 2: 1.0}, verbose=0)
    with pytest.raises(TypeError, match=r"class_weight\[2\] must be a number"):
        m.fit(x, y, class_weight={0: 1.0, 1: 1.0, 2: "heavy"}, verbose=0)
    with pytest.raises(ValueError, match="no weight for class 2, which y contains"):
        m.fit(x, y, class_weight={0: 1.0, 1: 2.0}, verbose=0)
    # A class the model has but y lacks needs no weight.
    m.fit(x[:4], y[:4] % 2, class_weight={0: 1.0, 1: 2.0}, verbose=0)
    b = tl.Sequential([tl.layers.Dense(1, activation="sigmoid", input_shape=(4,))])
    b.compile(optimizer="sgd", loss="binary_crossentropy")
    with pytest.raises(ValueError, match="no weight for class 1"):
        b.fit(x, (y > 0).astype(np.float32).reshape(-1, 1), class_weight={0: 1.0}, verbose=0)
    r = tl.Sequential([tl.layers.Dense(1, input_shape=(4,))])
    r.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="class_weight needs a classification loss, not mse"):
        r.fit(x, np.zeros((6, 1)), class_weight={0: 1.0}, verbose=0)
