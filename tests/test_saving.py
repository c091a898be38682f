"""Whole-model save and load: identical predictions, and training that resumes exactly."""

import collections
import contextlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile

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


# -- hostile and damaged files ------------------------------------------------------------------

def saved_arrays(path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, json.loads(bytes(arrays["__model__"]).decode())


def write_npz(path, arrays, meta=None):
    if meta is not None:
        arrays = {**arrays, "__model__": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


@contextlib.contextmanager
def address_space_limit(extra_bytes):
    """At most `extra_bytes` more virtual memory than the process maps now: a large allocation
    fails (MemoryError) instead of succeeding."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra_bytes if hard == resource.RLIM_INFINITY else min(mapped + extra_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def cnn_model():
    tl.clear_session()  # Keras's layer names, numbered from the start: conv2d, dense, ...
    inp = tl.Input((6, 6, 2))
    x = L.Conv2D(3, 3, padding="same", activation="relu")(inp)
    x = L.BatchNormalization()(x)
    x = L.DepthwiseConv2D(2, strides=2, depth_multiplier=2)(x)
    x = L.Flatten()(L.MaxPooling2D()(x))
    m = tl.Model(inp, L.Dense(2)(x))
    m.compile(optimizer="adam", loss="mse")
    m.fit(np.ones((4, 6, 6, 2), np.float32), np.ones((4, 2), np.float32), epochs=1, verbose=0)
    return m


@pytest.mark.parametrize("units", [10**8, 10**9])
def test_declared_sizes_are_checked_before_anything_is_built(tmp_path, units):
    """A 5 KB file whose record says Dense(units=10**8): refused by comparing with the stored
    kernel, within 256 MB of new address space (building it would take gigabytes)."""
    m = tl.Sequential([L.Dense(8, activation="relu", input_shape=(4,)), L.Dense(3)])
    m.build(seed=0)
    arrays, meta = saved_arrays(m.save(tmp_path / "m.tlmodel"))
    meta["nodes"][1]["config"]["units"] = units
    hostile = write_npz(tmp_path / "hostile.tlmodel", arrays, meta)
    assert hostile.stat().st_size < 8000
    with address_space_limit(256 << 20):
        with pytest.raises(tl.ModelFormatError, match=rf"layer '{m.layers[0].name}' \(Dense\): units is {units} but the "
                                                      r"stored kernel has shape \(4, 8\)"):
            tl.load_model(hostile)


def test_every_declared_size_is_compared_with_the_stored_weights(tmp_path):
    m = cnn_model()
    arrays, meta = saved_arrays(m.save(tmp_path / "cnn.tlmodel"))
    by_kind = {n["kind"]: n for n in meta["nodes"]}
    cases = [  # (edit of the record, expected message)
        (lambda: meta.__setitem__("input_shape", None) or by_kind["Input"]["config"].__setitem__("shape", [6, 6, 5000]),
         r"'conv2d' \(Conv2D\): input channels is 5000 but the stored kernel has shape \(3, 3, 2, 3\)"),
        (lambda: by_kind["Conv2D"]["config"].__setitem__("kernel_size", [3, 30000]),
         r"'conv2d' \(Conv2D\): kernel_size\[1\] is 30000 but the stored kernel"),
        (lambda: by_kind["Conv2D"]["config"].__setitem__("filters", 7),
         r"'conv2d' \(Conv2D\): filters is 7 but the stored kernel has shape \(3, 3, 2, 3\)"),
        (lambda: by_kind["DepthwiseConv2D"]["config"].__setitem__("depth_multiplier", 9),
         r"'depthwise_conv2d' \(DepthwiseConv2D\): depth_multiplier is 9 but the stored kernel"),
        (lambda: by_kind["BatchNormalization"]["config"].__setitem__("center", False),
         r"'batch_normalization' \(BatchNormalization\): the file holds 4 weight arrays, the layer has 3"),
        # a pooling window that changes the flattened size reaches the Dense kernel's input: the
        # pool sees 3x3x6; a 1x1 window at the saved strides 2 gives (3 - 1) // 2 + 1 = 2, so 2*2*6
        (lambda: by_kind["MaxPooling2D"]["config"].__setitem__("pool_size", [1, 1]),
         r"'dense' \(Dense\): input features is 24 but the stored kernel has shape \(6, 2\)"),
        (lambda: by_kind["MaxPooling2D"]["config"].__setitem__("pool_size", [9, 9]),
         r"'max_pooling2d' \(MaxPooling2D\): the window \(9, 9\) is larger than its input \(3, 3\)"),
    ]
    original = json.dumps(meta)
    for edit, message in cases:
        meta = json.loads(original)
        by_kind = {n["kind"]: n for n in meta["nodes"]}
        edit()
        with pytest.raises(tl.ModelFormatError, match=message):
            tl.load_model(write_npz(tmp_path / "edited.tlmodel", arrays, meta))
    # The unedited record loads: the rules agree with the model the core builds.
    np.testing.assert_array_equal(tl.load_model(write_npz(tmp_path / "same.tlmodel", arrays,
                                                          json.loads(original))).get_weights()[0],
                                  m.get_weights()[0])


def test_npy_header_claiming_a_huge_shape_is_refused_before_its_data_is_read(tmp_path):
    tl.clear_session()
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    with zipfile.ZipFile(m.save(tmp_path / "m.tlmodel")) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    kernel = members["weights/dense/0.npy"]
    data = kernel[kernel.index(b"\n") + 1:]  # after the header: the 4 x 2 floats
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)})
    members["weights/dense/0.npy"] = buf.getvalue() + data
    hostile = tmp_path / "hostile.tlmodel"
    with zipfile.ZipFile(hostile, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with address_space_limit(256 << 20):
        with pytest.raises(tl.ModelFormatError, match=r"'weights/dense/0.npy' declares shape \(1000000000,\) "
                                                      r"\(4000000000 bytes\), the file holds 32 bytes"):
            tl.load_model(hostile)


def test_unsupported_zip_compression_is_a_model_format_error(tmp_path):
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    blob = bytearray(m.save(tmp_path / "m.tlmodel").read_bytes())
    local, central = blob.index(b"PK\x03\x04"), blob.index(b"PK\x01\x02")
    blob[local + 8:local + 10] = blob[central + 10:central + 12] = struct.pack("<H", 99)  # AES (WinZip)
    (tmp_path / "aes.tlmodel").write_bytes(bytes(blob))
    with pytest.raises(tl.ModelFormatError, match="zip compression method 99"):
        tl.load_model(tmp_path / "aes.tlmodel")


def test_junk_files_are_model_format_errors(tmp_path):
    junk = {"zeros": bytes(100), "text": b"hello, world\n", "empty": b"",
            "png": b"\x89PNG\r\n\x1a\n" + bytes(64), "zip": zipfile_bytes({"readme.txt": b"hi"})}
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle inside .npy
    junk["npy-objects"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, x=np.array([{"a": 1}], dtype=object))
    junk["npz-objects"] = buf.getvalue()
    for name, data in junk.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        with pytest.raises(tl.ModelFormatError, match="not a tinylearn model file|numbers only") as e:
            tl.load_model(path)
        assert "pickle" not in str(e.value), name
        with pytest.raises(tl.ModelFormatError, match="empty|truncated|not a tinylearn model"):
            tl.load_int8(path)
    with pytest.raises(IsADirectoryError):
        tl.load_model(tmp_path)


def zipfile_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_damaged_model_files_only_raise_model_format_errors(tmp_path):
    """Seeded fuzzing: truncated files and flipped bits (mostly caught by the zip's CRC), then
    edits of the members rewritten with valid CRCs (the architecture record's JSON and the .npy
    headers). Each file loads or raises ModelFormatError; nothing else, no hang, no crash."""
    good = cnn_model().save(tmp_path / "good.tlmodel").read_bytes()
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    names = sorted(members)
    rng = np.random.default_rng(15)
    path = tmp_path / "fuzzed.tlmodel"
    outcomes = collections.Counter()
    for case in range(600):
        if case < 300:
            blob = bytearray(good)
            if case % 3 == 0:
                blob = blob[:int(rng.integers(0, len(blob)))]
            else:
                for _ in range(int(rng.integers(1, 4))):
                    blob[int(rng.integers(0, len(blob)))] ^= 1 << int(rng.integers(0, 8))
        else:
            edited = dict(members)
            for _ in range(int(rng.integers(1, 3))):
                name = "__model__.npy" if rng.random() < 0.6 else names[int(rng.integers(len(names)))]
                b = bytearray(edited[name])
                end = len(b) if name == "__model__.npy" else min(len(b), 128)  # JSON, or a header
                b[int(rng.integers(0, end))] = int(rng.integers(32, 127))
                edited[name] = bytes(b)
            blob = zipfile_bytes(edited)
        path.write_bytes(bytes(blob))
        try:
            tl.load_model(path)
            outcomes["loaded"] += 1
        except tl.ModelFormatError as e:
            outcomes[str(e).split(":")[1].strip()[:20]] += 1
    assert sum(outcomes.values()) == 600
    assert len(outcomes) > 5  # several different checks were reached


KILLED_WRITER = """
import os, sys, time
import numpy as np
import tinylearn as tl

m = tl.Sequential([tl.layers.Dense(64, input_shape=(256,))])
m.build(seed=1)
def blocked_fsync(fd):  # the temporary file is written; the process dies before its rename
    print("writing", flush=True)
    time.sleep(120)
os.fsync = blocked_fsync
m.save(sys.argv[1])
"""


def test_a_killed_save_leaves_the_target_and_the_next_save_removes_its_temporary(tmp_path, sine_int8):
    target = tmp_path / "m.tlmodel"
    target.write_bytes(b"earlier")
    with subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout.readline() == "writing\n"
        finally:
            child.kill()  # SIGKILL: no cleanup runs in the child
            child.wait()
    dead = child.pid
    assert target.read_bytes() == b"earlier"
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".m.tlmodel.tmp-{dead}-")]
    assert len(left) == 1 and (tmp_path / left[0]).stat().st_size > 64 * 256 * 4
    # A live writer's temporary (this process), another target's and an unrelated file stay.
    keep = [f".m.tlmodel.tmp-{os.getpid()}-live", f".other.tlmodel.tmp-{dead}-abc", f".m.tlmodel.tmp-{dead}.bak"]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    m.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["m.tlmodel"])
    np.testing.assert_array_equal(tl.load_model(target).get_weights()[0], m.get_weights()[0])
    # Every atomic writer shares this: the int8 model's save and export_c.
    stale = [f".q.tlm.tmp-{dead}-x1", f".fw.h.tmp-{dead}-x2", f".fw.cc.tmp-{dead}-x3"]
    for name in stale:
        (tmp_path / name).write_bytes(b"x")
    sine_int8.save(tmp_path / "q.tlm")
    sine_int8.export_c(tmp_path, "fw")
    assert not any((tmp_path / name).exists() for name in stale)


@pytest.mark.parametrize("name", ["m.keras", "m.h5", "M.HDF5"])
def test_keras_suffixes_are_refused_naming_tinylearns(tmp_path, name):
    """tinylearn's file is not a Keras file: writing it under Keras's suffix would make
    tl.from_keras (and Keras) fail later, so save refuses and names the suffix to use."""
    m = tl.Sequential([L.Dense(2, input_shape=(4,))])
    m.build(seed=0)
    with pytest.raises(ValueError, match=r"names a Keras file .*save to '.*[mM]\.tlmodel' \(\.tlmodel\)"):
        m.save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
