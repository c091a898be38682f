"""Sparse int8 weights (format.h, TLM_TYPE_INT8_SPARSE): a magnitude-pruned model converts to a
smaller blob whose int8 outputs equal, bit for bit, those of the same model stored dense, on the
host and on the emulated STM32 (where it also runs fewer instructions); the TFLite export stays
dense; corrupt sparse data is refused."""

import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

import tinylearn as tl
from tinylearn import layers as L

SEED = 3
opt = tl.optimize


def _data(n=256, seed=SEED):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12, 12, 2)).astype(np.float32), rng.integers(0, 4, n)


def _model():
    m = tl.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(12, 12, 2)), L.MaxPooling2D(),
                       L.Conv2D(32, 3, activation="relu", padding="same"), L.Flatten(),
                       L.Dense(32, activation="relu"), L.Dense(4)])
    m.build(seed=SEED)
    return m


@pytest.fixture(scope="module")
def pruned():
    """The model pruned to 80% sparsity per layer (ConstantSparsity), fine-tuned, stripped; and
    its int8 conversions with each weight encoding."""
    x, y = _data()
    p = opt.prune_low_magnitude(_model(), pruning_schedule=opt.ConstantSparsity(0.8, begin_step=0, frequency=1))
    p.compile("adam", tl.losses.SparseCategoricalCrossentropy(from_logits=True))
    p.fit(x, y, epochs=2, batch_size=32, seed=SEED, verbose=0)
    model = opt.strip_pruning(p)
    for layer in model.layers:
        if layer.get_weights():
            assert np.mean(layer.get_weights()[0] == 0) == pytest.approx(0.8, abs=0.01)
    return {"model": model, "x": x,
            "auto": tl.convert(model, x[:128]),
            "dense": tl.convert(model, x[:128], weight_encoding="dense"),
            "sparse": tl.convert(model, x[:128], weight_encoding="sparse")}


def _weight_bytes(q):
    return sum(e["bytes"] for e in q.weight_encodings())


def test_pruned_model_gets_a_smaller_blob(pruned):
    auto, dense = pruned["auto"], pruned["dense"]
    enc = auto.weight_encodings()
    assert [e["encoding"] for e in enc] == ["sparse"] * 4
    assert [e["encoding"] for e in dense.weight_encodings()] == ["dense"] * 4
    # The int8 weights are nonzero at most where the float kernels are (quantization may round a
    # few more to 0): about 20%.
    kernels = [pruned["model"].layers[i].get_weights()[0] for i in (0, 2, 4, 5)]
    for e, k in zip(enc, kernels):
        assert e["density"] <= np.count_nonzero(k) / k.size
        assert e["density"] > 0.15
    # Dense weights: one byte each.
    shapes = [k.size for k in kernels]
    assert [e["bytes"] for e in dense.weight_encodings()] == shapes
    ratio = _weight_bytes(auto) / _weight_bytes(dense)
    assert ratio <= 0.45, ratio
    assert auto.size_bytes < dense.size_bytes - 0.5 * _weight_bytes(dense)
    # Forced sparse is what auto chose here (every layer pays off).
    assert pruned["sparse"].to_bytes() == auto.to_bytes()


def test_sparse_blob_predicts_bit_for_bit_as_dense(pruned):
    auto, dense = pruned["auto"], pruned["dense"]
    rng = np.random.default_rng(11)
    x_q = np.concatenate([auto.quantize_input(pruned["x"][128:]),
                          rng.integers(-128, 128, (64, 12, 12, 2), dtype=np.int8)])
    y = dense.invoke(x_q)
    # The sparse kernels (host_sparse: as the firmware runs them) and the default, where the host
    # unpacks the sparse weights once for its fast dense kernels.
    kernels = tl.Int8Model(auto.to_bytes(), host_sparse=True)
    for q in (kernels, auto):
        np.testing.assert_array_equal(q.invoke(x_q), y)
        for k in (0, 5, 17):  # one sample at a time (the plain kernels) as well as batched
            np.testing.assert_array_equal(q.invoke(x_q[k:k + 1]), y[k:k + 1])
        np.testing.assert_array_equal(q.predict(pruned["x"][:32]), dense.predict(pruned["x"][:32]))
    assert auto.to_bytes() == kernels.to_bytes() != dense.to_bytes()  # the blob stays sparse
    assert len(np.unique(y)) > 20  # the outputs really vary


def test_unpruned_model_stays_dense_and_forced_sparse_still_equals_dense():
    model = _model()
    x, _ = _data(64)
    auto = tl.convert(model, x)
    dense = tl.convert(model, x, weight_encoding="dense")
    sparse = tl.convert(model, x, weight_encoding="sparse")
    assert auto.to_bytes() == dense.to_bytes()
    assert [e["encoding"] for e in sparse.weight_encodings()] == ["sparse"] * 4
    assert sparse.size_bytes > dense.size_bytes  # 2 bytes per nonzero weight
    x_q = np.random.default_rng(2).integers(-128, 128, (40, 12, 12, 2), dtype=np.int8)
    np.testing.assert_array_equal(sparse.invoke(x_q), dense.invoke(x_q))
    np.testing.assert_array_equal(tl.Int8Model(sparse.to_bytes(), host_sparse=True).invoke(x_q),
                                  dense.invoke(x_q))


def test_summary_shows_each_layers_encoding_density_and_bytes(pruned):
    q = pruned["auto"]
    lines = []
    q.summary(print_fn=lines.append)
    text = lines[0].splitlines()
    assert text[0].split()[:5] == ["#", "op", "output", "shape", "encoding"]
    enc = {e["op"]: e for e in q.weight_encodings()}
    g = q.graph
    for i, op in enumerate(g.ops):
        row = text[2 + i].split()
        assert row[1] == op.op
        if i in enc:
            e = enc[i]
            bias = g.tensors[op.inputs[2]].data.nbytes
            assert row[-5:-3] == ["sparse", f"{100 * e['density']:.1f}%"]
            assert int(row[-2].replace(",", "")) == e["bytes"] + bias
        else:
            assert "sparse" not in row and "dense" not in row


def test_tflite_export_is_dense_and_round_trips(pruned):
    auto, dense = pruned["auto"], pruned["dense"]
    flat = auto.to_tflite()
    assert flat == dense.to_tflite()  # the graph, not the blob, is exported: dense weights
    back = tl.from_tflite(flat)
    assert back.to_bytes() == auto.to_bytes()  # from_tflite picks the sparse encoding again


def test_bad_weight_encoding_and_corrupt_sparse_data_are_refused(pruned, tmp_path):
    with pytest.raises(ValueError, match="weight_encoding must be 'auto', 'dense' or 'sparse', got 'csr'"):
        tl.convert(pruned["model"], pruned["x"][:8], weight_encoding="csr")
    blob = bytearray(pruned["auto"].to_bytes())
    n_tensors = struct.unpack_from("<H", blob, 20)[0]
    sparse = [k for k in range(n_tensors) if blob[32 + 32 * k] == 4]
    assert len(sparse) == 4
    offset = struct.unpack_from("<I", blob, 32 + 32 * sparse[1] + 20)[0]
    struct.pack_into("<I", blob, offset, 10 ** 6)  # more entries than the blob holds
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[16:])))
    with pytest.raises(tl.ModelFormatError, match=rf"tensor {sparse[1]} \(sparse int8 \(32, 3, 3, 16\) constant\)"):
        tl.Int8Model(bytes(blob))


@pytest.mark.slow
def test_firmware_runs_the_sparse_model_exactly_with_fewer_instructions(pruned, tmp_path):
    auto, dense = pruned["auto"], pruned["dense"]
    x_q = np.random.default_rng(5).integers(-128, 128, (4, 12, 12, 2), dtype=np.int8)
    fw_sparse = tl.deploy.build_firmware(auto, out_dir=tmp_path / "sparse")
    fw_dense = tl.deploy.build_firmware(dense, out_dir=tmp_path / "dense")
    y_s, ic_s = fw_sparse.run(x_q)
    y_d, ic_d = fw_dense.run(x_q)
    np.testing.assert_array_equal(y_s, auto.invoke(x_q))
    np.testing.assert_array_equal(y_d, y_s)
    # Deterministic under -icount: the sparse kernels skip 80% of the multiply-accumulates.
    ratio = float(np.mean(ic_s) / np.mean(ic_d))
    print(f"instructions per inference: sparse {int(np.mean(ic_s))}, dense {int(np.mean(ic_d))}, "
          f"ratio {ratio:.3f}; flash {fw_sparse.flash_bytes} vs {fw_dense.flash_bytes} bytes")
    assert (ic_s < ic_d).all()
    assert fw_sparse.flash_bytes < fw_dense.flash_bytes
    # The firmware links the sparse check and kernels only for the model that has sparse weights.
    nm = shutil.which("arm-none-eabi-nm")  # binutils, beside the compiler that built them
    assert nm is not None

    def symbols(fw):
        return subprocess.run([nm, "-C", str(fw.elf)], check=True, capture_output=True, text=True).stdout

    for name in ("tlm_sparse_s8_check", "tlm_conv2d_s8_sparse", "tlm_fully_connected_ref_s8_sparse"):
        assert name in symbols(fw_sparse)
        assert name not in symbols(fw_dense)
