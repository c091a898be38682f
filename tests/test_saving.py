"""Whole-model save and load: identical predictions, and training that resumes exactly."""

import io
import json
import os

import numpy as np
import pytest

import tinylearn as tl
from test_models import residual_model

L = tl.layers


def data(rng, n=64):
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, :3] * 2 - 1).astype(np.float32)


@pytest.mark.parametrize("optimizer", ["adam", tl.optimizers.SGD(learning_rate=0.05, momentum=0.9)])
def test_sequential_round_trip_and_resume(rng, tmp_path, optimizer):
    x, y = data(rng)
    m = tl.Sequential([L.Dense(8, activation="relu", input_shape=(4,)), L.Dense(3)])
    m.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    m.fit(x, y, epochs=3, batch_size=16, seed=5, verbose=0)
    path = m.save(tmp_path / "model.tlmodel")
    loaded = tl.load_model(path)
    assert type(loaded) is tl.Sequential
    np.testing.assert_array_equal(loaded.predict(x), m.predict(x))
    # Training on from the file equals training on in memory (optimizer state restored).
    m.fit(x, y, epochs=2, batch_size=16, seed=9, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=16, seed=9, verbose=0)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_functional_round_trip(rng, tmp_path):
    model, _ = residual_model()
    model.compile(optimizer="adam", loss="mse")
    x = rng.normal(size=(10, 4)).astype(np.float32)
    model.fit(x, rng.normal(size=(10, 3)).astype(np.float32), epochs=2, verbose=0)
    loaded = tl.load_model(model.save(tmp_path / "res.tlmodel"))
    assert type(loaded) is tl.Model
    assert [(la.kind, la.get_config()) for la in loaded.layers] == [(la.kind, la.get_config()) for la in model.layers]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_save_is_atomic(rng, tmp_path, monkeypatch):
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    path = tmp_path / "m.tlmodel"
    path.write_bytes(b"earlier")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tlmodel"]


def test_bad_files(rng, tmp_path):
    bad = tmp_path / "bad.tlmodel"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a tinylearn model file"):
        tl.load_model(bad)
    with pytest.raises(FileNotFoundError):
        tl.load_model(tmp_path / "missing.tlmodel")
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    good = m.save(tmp_path / "good.tlmodel")
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(bytes(arrays["__model__"]).decode())
    meta["version"] = 99
    arrays["__model__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    newer = tmp_path / "newer.tlmodel"
    newer.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"version 99 is newer than this tinylearn reads \(version 1\)"):
        tl.load_model(newer)
    with pytest.raises(RuntimeError, match="no weights yet"):
        tl.Sequential([L.Dense(2, input_shape=(4,))]).save(tmp_path / "x.tlmodel")


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "M.HDF5"])
def test_keras_suffixes_are_refused_naming_tinylearns(tmp_path, name):
    """tinylearn's file is not a Keras file: writing it under Keras's suffix would make
    tl.from_keras (and Keras) fail later, so save refuses and names the suffix to use."""
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    with pytest.raises(ValueError, match=r"names a Keras file .*save to '.*[mM]\.tlmodel' \(\.tlmodel\)"):
        m.save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
